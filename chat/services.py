"""Writes. Keyword-only, typed, one transaction each; live events go out after commit.

Callable from consumers (through database_sync_to_async), REST views, admin actions
and management commands alike.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import token_revoke
from chat import events, message_store, presence, protocol, selectors
from chat.models import Ban, Message, ModerationAction, Mute, Report, Room, RoomMember, slug_validator
from chat.protocol import ChatError
from chat.ratelimit import rate_limit_hits
from core import metrics
from core.db_thread import in_db_thread
from core.http import ApiError
from notifications.mentions import PostedMessage, mentions_notify
from notifications.services import notification_create


class RoomExistsError(Exception):
    pass


class BannedError(ApiError):
    """A user banned site-wide tried to act on others (docs/protocol.md, "Authentication and the handshake"): 403 ``banned``."""

    def __init__(self) -> None:
        super().__init__(403, "banned", "you are banned site-wide: you can read, but not post, create rooms or add people")


def _refuse_if_banned_site_wide(user: User | None) -> None:
    if user is not None and selectors.user_is_banned_site_wide(user_id=user.pk):
        raise BannedError


def room_create(*, slug: str, title: str, created_by: User | None, private: bool = False) -> Room:
    """Create a room; ValidationError for a bad slug or title, RoomExistsError if taken,
    BannedError if the creator is banned site-wide.

    The creator of a private room is its owner and first member."""
    _refuse_if_banned_site_wide(created_by)
    slug_validator(slug)
    title = title.strip()
    if not title or len(title) > 200:
        raise ValidationError("title must be 1 to 200 characters")
    if private and created_by is None:
        raise ValidationError("a private room needs an owner")
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, title=title, created_by=created_by, private=private)
            if private and created_by is not None:
                RoomMember.objects.create(room=room, user=created_by, role=RoomMember.Role.OWNER)
            return room
    except IntegrityError:
        raise RoomExistsError(slug) from None


# ---- private rooms and direct messages (docs/protocol.md, "Other endpoints") -------------------------------------
class MembershipError(Exception):
    """A membership change that is not allowed: ``status`` and ``code`` say how to answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def member_add(*, room: Room, user: User, added_by: User) -> RoomMember:
    """Add someone to a private room; members and staff may (not while banned site-wide).
    Adding a member again is a no-op."""
    _refuse_if_banned_site_wide(added_by)
    if not room.private or room.direct_key is not None:
        raise MembershipError(400, "invalid", "members can be added to private rooms only (not to direct messages)")
    if not (added_by.is_staff or RoomMember.objects.filter(room=room, user=added_by).exists()):
        raise MembershipError(403, "forbidden", "only members and staff may add members")
    member, _ = RoomMember.objects.get_or_create(room=room, user=user)
    return member


def member_remove(*, room: Room, user: User, removed_by: User) -> None:
    """Remove a member (themselves, or anyone by the owner or staff); their sockets in the
    room close with 4003 on every worker, and new handshakes get 4004."""
    membership = RoomMember.objects.filter(room=room, user=user).first()
    if membership is None:
        raise MembershipError(404, "not_found", f"{user.get_username()} is not a member")
    allowed = removed_by.pk == user.pk or removed_by.is_staff
    allowed = allowed or RoomMember.objects.filter(room=room, user=removed_by, role=RoomMember.Role.OWNER).exists()
    if not allowed:
        raise MembershipError(403, "forbidden", "only the owner, staff, or the member themselves may remove a member")
    with transaction.atomic():
        membership.delete()
        events.user_close_on_commit(user_id=user.pk, code=protocol.CLOSE_BANNED, room_id=room.pk)


def dm_open(*, user: User, other: User) -> tuple[Room, bool]:
    """The one private room of exactly these two users, created on first use: (room, created).

    The room's unique ``direct_key`` makes two first requests at once create one room:
    the loser of the race gets an IntegrityError and reads the winner's room. BannedError
    if ``user`` is banned site-wide (an existing DM too: opening one is reaching out)."""
    _refuse_if_banned_site_wide(user)
    if user.pk == other.pk:
        raise ValidationError("a direct message needs another user")
    low, high = sorted((user.pk, other.pk))
    key = f"{low}:{high}"
    existing = Room.objects.filter(direct_key=key).first()
    if existing is not None:
        return existing, False
    names = sorted((user.get_username(), other.get_username()))
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=f"dm-{uuid.uuid4().hex[:20]}",
                title=f"{names[0]} and {names[1]}",
                private=True,
                direct_key=key,
                created_by=user,
            )
            RoomMember.objects.bulk_create(
                [
                    RoomMember(room=room, user_id=low, role=RoomMember.Role.MEMBER),
                    RoomMember(room=room, user_id=high, role=RoomMember.Role.MEMBER),
                ]
            )
        return room, True
    except IntegrityError:
        return Room.objects.get(direct_key=key), False


def room_mark_read(*, room_id: int, user_id: int, last_id: int) -> None:
    """Record how far a member has read (never backwards)."""
    RoomMember.objects.filter(room_id=room_id, user_id=user_id, last_read_id__lt=last_id).update(last_read_id=last_id)


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A message to be written: who says what where (content not yet checked).

    Plain ids and names rather than model instances: a socket keeps these for its
    whole life, and an idle connection should cost as little memory as possible."""

    room_id: int
    room_slug: str
    user_id: int
    username: str
    content: object
    nonce: str | None = None


def message_create(*, room: Room, user: User, content: object, nonce: str | None = None) -> Message:
    """Store a message and broadcast it after commit; raise ChatError if it is refused.

    See message_create_batch for the checks and their codes.
    """
    draft = MessageDraft(
        room_id=room.pk, room_slug=room.slug, user_id=user.pk, username=user.get_username(), content=content, nonce=nonce
    )
    [result] = message_create_batch(drafts=[draft])
    if isinstance(result, ChatError):
        raise result
    return Message(
        pk=result["id"],
        room=room,
        user=user,
        content=result["content"],
        nonce=nonce or "",
        created_at=datetime.fromisoformat(result["ts"]),
    )


def message_create_batch(*, drafts: list[MessageDraft]) -> list[protocol.MessageFrame | ChatError]:
    """Store several messages in one transaction and broadcast them after commit.

    Each draft gets its message (as the frame that was broadcast), or the ChatError that refused it: ``empty``,
    ``too_long`` or ``bad_frame`` for bad content, ``muted``, ``rate_limited`` (with
    ``retry_after``), ``room_locked``. Checks that cost nothing come first, so a badly
    formed or muted message does not use up the sender's rate. A worker batches the
    messages of all its sockets through here (chat.writer): one transaction, one query
    per check and one Redis round trip per batch instead of per message.
    """
    results: list[protocol.MessageFrame | ChatError | None] = [None] * len(drafts)
    texts: dict[int, str] = {}
    for index, draft in enumerate(drafts):
        try:
            texts[index] = protocol.clean_content(draft.content, nonce=draft.nonce)
        except ChatError as error:
            results[index] = error
    now = timezone.now()
    muted = message_store.muted_pairs(user_ids=sorted({drafts[i].user_id for i in texts}), now=now)
    for index in list(texts):
        draft = drafts[index]
        if (draft.user_id, None) in muted or (draft.user_id, draft.room_id) in muted:
            results[index] = ChatError("muted", "you are muted", nonce=draft.nonce)
            del texts[index]
    # Counted before taking the rooms' write locks, to keep the Redis round trip out of
    # the serialised section; a message refused because its room is locked still counts.
    waits = rate_limit_hits(user_ids=[drafts[i].user_id for i in texts])
    for index, wait in zip(list(texts), waits, strict=True):
        if wait:
            results[index] = ChatError("rate_limited", "too many messages", nonce=drafts[index].nonce, retry_after=round(wait, 3))
            del texts[index]
    if texts:
        _write_messages(drafts, texts, results, now)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _write_messages(
    drafts: list[MessageDraft], texts: dict[int, str], results: list[protocol.MessageFrame | ChatError | None], now: datetime
) -> None:
    with transaction.atomic():
        # The row locks serialise writers per room (PostgreSQL; SQLite serialises all
        # writers), so ids grow in commit order within a room and the previous-id chain
        # that lets workers detect lost broadcasts is exact.
        rooms = message_store.rooms_lock(room_ids=sorted({drafts[i].room_id for i in texts}))
        accepted: list[int] = []
        for index in texts:
            if rooms[drafts[index].room_id].locked:
                results[index] = ChatError("room_locked", "the room is locked", nonce=drafts[index].nonce)
            else:
                accepted.append(index)
        if not accepted:
            return
        rows = [(drafts[i].room_id, drafts[i].user_id, texts[i], drafts[i].nonce or "") for i in accepted]
        message_ids = message_store.messages_insert(rows=rows, created_at=now)
        last_ids = {room_id: room.last_message_id for room_id, room in rooms.items()}
        created: list[events.CreatedMessage] = []
        for index, message_id in zip(accepted, message_ids, strict=True):
            draft = drafts[index]
            room_id = draft.room_id
            frame = protocol.message_frame(
                id=message_id,
                room=draft.room_slug,
                user=draft.username,
                content=texts[index],
                created_at=now,
                nonce=draft.nonce,
            )
            created.append(
                events.CreatedMessage(
                    room_id=room_id, room_slug=draft.room_slug, message_id=message_id, previous_id=last_ids[room_id], frame=frame
                )
            )
            last_ids[room_id] = message_id
            results[index] = frame
        message_store.rooms_set_last_message(last_ids={drafts[i].room_id: last_ids[drafts[i].room_id] for i in accepted})
        events.messages_created_on_commit(messages=created)
        # In the same transaction, so a mention is notified exactly when its message exists.
        # Costs nothing for messages without an "@" (no query at all).
        posted = [
            PostedMessage(
                message_id=m.message_id,
                room_slug=m.frame["room"],
                author_id=drafts[index].user_id,
                author=m.frame["user"],
                content=m.frame["content"],
            )
            for index, m in zip(accepted, created, strict=True)
        ]
        mentions_notify(messages=posted)
        direct = [(p, m.room_id, key) for p, m in zip(posted, created, strict=True) if (key := rooms[m.room_id].direct_key)]
        if direct:
            _notify_direct_messages(direct)
    metrics.MESSAGES_CREATED.inc(len(accepted))


# ---- moderation ---------------------------------------------------------------------
# Each action below is one transaction that writes the change, its line in the audit log
# (ModerationAction) and, when a user is affected, their ``moderation`` notification;
# live frames and closes go out after commit, through chat.events. The admin's actions
# and the staff API (chat.admin, chat.api) both call these, nothing else.

MODERATORS_GROUP = "Moderators"
# What a moderator may do in the admin. chat/migrations/0003_moderators_group.py creates
# the group with this same list (frozen there, as migrations must be; a test compares).
# No delete permissions: bans and mutes are lifted, messages redacted, so the history stays.
MODERATOR_PERMISSIONS = (
    "chat.view_room",
    "chat.change_room",
    "chat.view_message",
    "chat.change_message",
    "chat.view_report",
    "chat.change_report",
    "chat.view_ban",
    "chat.add_ban",
    "chat.change_ban",
    "chat.view_mute",
    "chat.add_mute",
    "chat.change_mute",
    "chat.view_moderationaction",
    "auth.view_user",
    # Revoking is an action with its own permission: with change_apitoken a moderator
    # could edit a token's row (chat/migrations/0006 moved the existing group).
    "accounts.view_apitoken",
    "accounts.revoke_apitoken",
)

# A sanction with an end lasts at most a century: longer is what "until lifted" is for,
# and far enough past that, the end date would overflow the year 9999.
MAX_SANCTION_MINUTES = 100 * 365 * 24 * 60
MAX_REASON_CHARS = 500


class ReportExistsError(Exception):
    pass


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def _clean_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise ValidationError(f"reason must be at most {MAX_REASON_CHARS} characters")
    return reason


def _ends_at(minutes: float | None, now: datetime) -> datetime | None:
    if minutes is None:
        return None
    # bool is an int to Python, and JSON lets NaN and Infinity through: refuse them all.
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not math.isfinite(minutes):
        raise ValidationError("minutes must be a number")
    if not 0 < minutes <= MAX_SANCTION_MINUTES:
        raise ValidationError(f"minutes must be above 0 and at most {MAX_SANCTION_MINUTES}")
    return now + timedelta(minutes=minutes)


def _audit(
    *,
    actor: User | None,
    action: ModerationAction.Kind,
    target_user_id: int | None = None,
    room_id: int | None = None,
    message_id: int | None = None,
    reason: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    ModerationAction.objects.create(
        actor=actor,
        action=action,
        target_user_id=target_user_id,
        room_id=room_id,
        message_id=message_id,
        reason=reason[:MAX_REASON_CHARS],
        detail=detail or {},
    )


def _notify(*, user_id: int, data: dict[str, Any]) -> None:
    """The affected user's ``moderation`` notification (docs/protocol.md, "Other endpoints"), in the caller's transaction."""
    notification_create(user_id=user_id, kind="moderation", data=data)


def _sanction_recorded(*, sanction: Ban | Mute, action: ModerationAction.Kind, actor: User | None) -> None:
    room_slug = sanction.room.slug if sanction.room else None
    until = _iso(sanction.ends_at)
    _audit(
        actor=actor,
        action=action,
        target_user_id=sanction.user_id,
        room_id=sanction.room_id,
        reason=sanction.reason,
        detail={"id": sanction.pk, "until": until},
    )
    _notify(user_id=sanction.user_id, data={"action": action.value, "room": room_slug, "reason": sanction.reason, "until": until})


def ban_create(
    *,
    user: User,
    room: Room | None = None,
    minutes: float | None = None,
    reason: str = "",
    created_by: User | None = None,
) -> Ban:
    """Ban a user from one room, or everywhere when ``room`` is None, until lifted or for ``minutes``.

    After commit every open connection of the user (to that room, or all) closes with
    4003, on every worker. Handshakes read the active bans, so new ones are refused
    until the ban ends, and it ends on time with nobody acting. ValidationError for a
    bad duration or reason.
    """
    reason = _clean_reason(reason)
    now = timezone.now()
    ends_at = _ends_at(minutes, now)
    with transaction.atomic():
        ban = Ban.objects.create(user=user, room=room, reason=reason, created_by=created_by, created_at=now, ends_at=ends_at)
        _sanction_recorded(sanction=ban, action=ModerationAction.Kind.BAN, actor=created_by)
        events.user_close_on_commit(user_id=user.pk, code=protocol.CLOSE_BANNED, room_id=room.pk if room else None)
    return ban


def mute_create(
    *,
    user: User,
    room: Room | None = None,
    minutes: float | None = None,
    reason: str = "",
    created_by: User | None = None,
) -> Mute:
    """Mute a user in one room, or everywhere when ``room`` is None, until lifted or for ``minutes``.

    Nothing needs to be sent: every worker's write path reads the active mutes for each
    batch, so the user's next message anywhere gets the ``muted`` error (403 over REST).
    """
    reason = _clean_reason(reason)
    now = timezone.now()
    ends_at = _ends_at(minutes, now)
    with transaction.atomic():
        mute = Mute.objects.create(user=user, room=room, reason=reason, created_by=created_by, created_at=now, ends_at=ends_at)
        _sanction_recorded(sanction=mute, action=ModerationAction.Kind.MUTE, actor=created_by)
    return mute


def _sanction_lift(*, sanction: Ban | Mute, action: ModerationAction.Kind, lifted_by: User | None) -> bool:
    now = timezone.now()
    with transaction.atomic():
        lifted = type(sanction)._default_manager.filter(pk=sanction.pk, lifted_at__isnull=True).update(lifted_at=now)
        if lifted:
            _audit(
                actor=lifted_by,
                action=action,
                target_user_id=sanction.user_id,
                room_id=sanction.room_id,
                detail={"id": sanction.pk},
            )
    if lifted:
        sanction.lifted_at = now
    return bool(lifted)


def ban_lift(*, ban: Ban, lifted_by: User | None) -> bool:
    """End a ban now; False if it was already lifted. Nothing is sent: the user may connect again."""
    return _sanction_lift(sanction=ban, action=ModerationAction.Kind.BAN_LIFT, lifted_by=lifted_by)


def mute_lift(*, mute: Mute, lifted_by: User | None) -> bool:
    """End a mute now; False if it was already lifted. The user's next message goes through."""
    return _sanction_lift(sanction=mute, action=ModerationAction.Kind.MUTE_LIFT, lifted_by=lifted_by)


def room_lock(*, room: Room, locked: bool, locked_by: User | None, reason: str = "") -> Room:
    """Lock (or unlock) a room; returns it, refreshed.

    The write path reads ``locked`` under the room's row lock, so from the commit on every
    worker answers messages with ``room_locked``; after commit the room gets the live
    ``room_locked`` frame. Locking a locked room changes and sends nothing.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        changed = Room.objects.filter(pk=room.pk).exclude(locked=locked).update(locked=locked)
        if changed:
            action = ModerationAction.Kind.LOCK if locked else ModerationAction.Kind.UNLOCK
            _audit(actor=locked_by, action=action, room_id=room.pk, reason=reason)
            events.room_frame_on_commit(room_slug=room.slug, frame={"type": "room_locked", "locked": locked})
    room.refresh_from_db(fields=["locked"])
    return room


def room_make_public(*, room: Room, changed_by: User | None, reason: str = "") -> bool:
    """Make a private room public; False if it was public already. Logged.

    From the commit on the room is listed for everyone and anyone may read and join it;
    its members keep their membership (and unread counts). A direct message is always
    private: ValidationError. There is no way back to private here: sockets opened
    while the room was public would stay in it, and nothing tells the workers to close
    the non-members' ones.
    """
    if room.direct_key is not None:
        raise ValidationError("a direct message is always private")
    reason = _clean_reason(reason)
    with transaction.atomic():
        changed = Room.objects.filter(pk=room.pk, private=True, direct_key__isnull=True).update(private=False)
        if changed:
            _audit(actor=changed_by, action=ModerationAction.Kind.ROOM_PUBLIC, room_id=room.pk, reason=reason)
    room.refresh_from_db(fields=["private"])
    return bool(changed)


def apitoken_revoke(*, token: ApiToken, revoked_by: User | None, reason: str = "") -> bool:
    """Revoke someone's API token as a moderator (accounts.services.token_revoke: every
    connection it opened ends) and log it; False if it was revoked already."""
    reason = _clean_reason(reason)
    with transaction.atomic():
        revoked = token_revoke(token=token)
        if revoked:
            _audit(
                actor=revoked_by,
                action=ModerationAction.Kind.TOKEN_REVOKE,
                target_user_id=token.user_id,
                reason=reason,
                detail={"id": token.pk, "prefix": token.prefix},
            )
    return revoked


def room_notice(*, room: Room, content: str, sent_by: User | None = None) -> None:
    """Announce ``content`` to everyone in the room now, as a ``notice`` frame after commit.

    A notice is not stored for replay: clients that join later do not get it.
    """
    text = content.strip()
    if not text or len(text) > protocol.MAX_CONTENT_CHARS:
        raise ValidationError(f"a notice must be 1 to {protocol.MAX_CONTENT_CHARS} characters")
    with transaction.atomic():
        _audit(actor=sent_by, action=ModerationAction.Kind.NOTICE, room_id=room.pk, detail={"content": text})
        events.room_frame_on_commit(room_slug=room.slug, frame={"type": "notice", "content": text})


def _notify_direct_messages(messages: list[tuple[PostedMessage, int, str]]) -> None:
    """A ``dm`` notification for the other person of a direct message, when none of
    their connections is in the room (so they did not see it live). Inside the write.

    The key names who the room was opened for, not who may read it now: someone removed
    from the room gets nothing (the notification carries the message), so the recipient
    must still be a member, read in the same transaction as the message."""
    pairs = []
    for message, room_id, key in messages:
        low, high = (int(part) for part in key.split(":"))
        pairs.append((message, room_id, high if message.author_id == low else low))
    members = set(
        RoomMember.objects.filter(
            room_id__in={room_id for _, room_id, _ in pairs}, user_id__in={other for _, _, other in pairs}
        ).values_list("room_id", "user_id")
    )
    pairs = [(message, room_id, other) for message, room_id, other in pairs if (room_id, other) in members]
    if not pairs:
        return
    usernames = dict(User.objects.filter(pk__in={other for _, _, other in pairs}).values_list("pk", "username"))
    online = presence.room_online_usernames(sorted({room_id for _, room_id, _ in pairs}))
    for message, room_id, other in pairs:
        if usernames.get(other) in online.get(room_id, set()):
            continue
        data = {"room": message.room_slug, "from": message.author, "message_id": message.message_id, "content": message.content}
        notification_create(user_id=other, kind="dm", data=data)


def message_remove(*, message: Message, removed_by: User | None, reason: str = "") -> bool:
    """Redact a message; False if it was already removed.

    The row stays (with who removed it and when) but is never replayed: backlogs, REST
    and the hubs' backfills read visible messages only. After commit the room gets
    ``message_deleted``. Open reports on it are resolved as removed. Removal by anyone
    but the author is a moderation action: logged, and the author is notified.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, removed_at__isnull=True).update(removed_at=now, removed_by=removed_by)
        if not updated:
            return False
        events.room_frame_on_commit(room_slug=message.room.slug, frame={"type": "message_deleted", "id": message.pk})
        Report.objects.filter(message_id=message.pk, resolved_at__isnull=True).update(
            resolved_at=now, resolved_by=removed_by, resolution=Report.Resolution.REMOVED
        )
        if removed_by is None or removed_by.pk != message.user_id:
            _audit(
                actor=removed_by,
                action=ModerationAction.Kind.MESSAGE_REMOVE,
                target_user_id=message.user_id,
                room_id=message.room_id,
                message_id=message.pk,
                reason=reason,
            )
            room_slug = Room.objects.values_list("slug", flat=True).get(pk=message.room_id)
            _notify(user_id=message.user_id, data={"action": "message_removed", "room": room_slug, "message_id": message.pk})
    message.removed_at, message.removed_by = now, removed_by
    return True


def message_restore(*, message: Message, restored_by: User | None) -> bool:
    """Undo a removal; False if the message was not removed.

    From the commit on it is replayed like any message (backlogs, REST, resumes below its
    id). Nothing is sent live: connected clients are past its id, and sending it again
    would break the promise of every message once, in id order.
    """
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, removed_at__isnull=False).update(removed_at=None, removed_by=None)
        if updated:
            _audit(
                actor=restored_by,
                action=ModerationAction.Kind.MESSAGE_RESTORE,
                target_user_id=message.user_id,
                room_id=message.room_id,
                message_id=message.pk,
            )
    if updated:
        message.removed_at, message.removed_by = None, None
    return bool(updated)


def report_create(*, message: Message, reporter: User, reason: str = "") -> Report:
    """Put a message in the moderators' queue; ReportExistsError if this user already reported it."""
    reason = _clean_reason(reason)
    try:
        with transaction.atomic():
            return Report.objects.create(message=message, reporter=reporter, reason=reason)
    except IntegrityError:
        raise ReportExistsError(f"message {message.pk} already reported by {reporter.get_username()}") from None


def report_resolve(*, report: Report, resolution: Report.Resolution, resolved_by: User | None) -> bool:
    """Close a report; False if it was already closed.

    ``removed`` removes the message (even if this report was closed before; see
    message_remove: every open report on the message closes with it). ``dismissed``
    keeps the message and closes this report only.
    """
    with transaction.atomic():
        closed = Report.objects.filter(pk=report.pk, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolved_by=resolved_by, resolution=resolution
        )
        if resolution == Report.Resolution.REMOVED:
            message_remove(message=report.message, removed_by=resolved_by, reason=report.reason)
        elif closed:
            _audit(
                actor=resolved_by,
                action=ModerationAction.Kind.REPORT_DISMISS,
                target_user_id=report.message.user_id,
                room_id=report.message.room_id,
                message_id=report.message_id,
                reason=report.reason,
                detail={"report_id": report.pk},
            )
    report.refresh_from_db()
    return bool(closed)


def moderator_make(*, user: User) -> None:
    """Make a user a moderator: staff, so the admin lets them in, and in the Moderators
    group, for what they may do there (created with MODERATOR_PERMISSIONS if missing)."""
    with transaction.atomic():
        group, created = Group.objects.get_or_create(name=MODERATORS_GROUP)
        if created:
            group.permissions.set(_permissions(MODERATOR_PERMISSIONS))
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(group)


def _permissions(names: tuple[str, ...]) -> list[Permission]:
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = [
        p
        for p in Permission.objects.filter(codename__in=[codename for _, codename in wanted]).select_related("content_type")
        if (p.content_type.app_label, p.codename) in wanted
    ]
    if len(found) != len(wanted):
        raise LookupError(f"missing permissions: {sorted(wanted - {(p.content_type.app_label, p.codename) for p in found})}")
    return found


@dataclass(slots=True)
class TypingGate:
    """What one connection has announced of its user's typing. A flood of typing frames
    reaches the room as at most two frames a second; the rest are dropped silently
    (docs/protocol.md, "Typing")."""

    shown: bool = False
    last_typing_at: float = -math.inf  # when "typing" was last let through (monotonic)

    def admit(self, *, is_typing: bool, now: float) -> bool:
        if not is_typing:
            # "Stopped" ends something announced; a repeated or stray one says nothing.
            was_shown, self.shown = self.shown, False
            return was_shown
        if now - self.last_typing_at < protocol.TYPING_INTERVAL:
            return False  # the others' indicator is on already (or was, a moment ago)
        self.shown, self.last_typing_at = True, now
        return True


async def typing_set(*, room_id: int, room_slug: str, user_id: int, username: str, is_typing: bool, gate: TypingGate) -> None:
    """Tell the others in the room, unless the gate drops it; nothing is stored.
    Raises ChatError ``muted``: a muted user cannot show that they are typing either."""
    shown_before = gate.shown
    if not gate.admit(is_typing=is_typing, now=time.monotonic()):
        return
    if is_typing and await in_db_thread(selectors.user_is_muted, user_id=user_id, room_id=room_id):
        # Nothing new is shown (a "typing" from before the mute may still end with its
        # "stopped"), but the attempt used up the interval: a muted user's flood costs
        # one query and gets one error a second.
        gate.shown = shown_before
        raise ChatError("muted", "you are muted")
    await events.typing_publish(
        room_slug=room_slug, user_id=user_id, frame={"type": "typing", "user": username, "is_typing": is_typing}
    )
