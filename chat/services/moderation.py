"""Moderation: bans, mutes, locks, reports, removals and the audit log. Keyword-only,
typed, one transaction each; live events go out after commit.

Callable from REST views, admin actions and management commands alike.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.connections import credentials_changed_on_commit
from accounts.models import ApiToken
from accounts.services import token_revoke
from chat import events, protocol, selectors
from chat.models import Ban, Message, ModerationAction, Mute, Report, Room, RoomChange
from chat.protocol import ChatError
from chat.services.changes import change_record, room_next_seq
from chat.services.replies import reply_stop_on_commit
from core.errors import DomainError
from notifications.services import notification_create

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


class ReportExistsError(DomainError):
    """The user has reported this message already (one report per user and message): ``exists``."""

    kind = "conflict"

    def __init__(self) -> None:
        super().__init__("exists", "you have already reported this message")


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


def audit_record(
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
    audit_record(
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
        if room is None:  # every worker forgets that the user was not banned (chat.ban_cache)
            credentials_changed_on_commit(user_id=user.pk)
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
            audit_record(
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
            audit_record(actor=locked_by, action=action, room_id=room.pk, reason=reason)
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
            audit_record(actor=changed_by, action=ModerationAction.Kind.ROOM_PUBLIC, room_id=room.pk, reason=reason)
    room.refresh_from_db(fields=["private"])
    return bool(changed)


def apitoken_revoke(*, token: ApiToken, revoked_by: User | None, reason: str = "") -> bool:
    """Revoke someone's API token as a moderator (accounts.services.token_revoke: every
    connection it opened ends) and log it; False if it was revoked already."""
    reason = _clean_reason(reason)
    with transaction.atomic():
        revoked = token_revoke(token=token)
        if revoked:
            audit_record(
                actor=revoked_by,
                action=ModerationAction.Kind.TOKEN_REVOKE,
                target_user_id=token.user_id,
                reason=reason,
                detail={"id": token.pk, "prefix": token.prefix},
            )
    return revoked


def message_remove(*, message: Message, removed_by: User | None, reason: str = "") -> bool:
    """Redact a message; False if it was already removed.

    The row stays (with who removed it and when) but its content is never replayed:
    backlogs, REST and resumes read visible messages only. The removal is a change of the
    room (docs/protocol.md, "Room changes"): after commit the room gets ``message_deleted``,
    and a client that was away gets it when it resumes with ``last_seq``. Open reports on
    it are resolved as removed. Removal by anyone but the author is a moderation action:
    logged, and the author is notified. In a locked room only staff (and the system,
    ``removed_by`` None) remove: ChatError ``room_locked`` for the author.
    """
    now = timezone.now()
    with transaction.atomic():
        turn = room_next_seq(room_id=message.room_id)  # the room's row first, as every change takes it
        if turn.locked and removed_by is not None and not removed_by.is_staff:
            raise ChatError("room_locked", "the room is locked")
        updated = Message.objects.filter(pk=message.pk, removed_at__isnull=True).update(removed_at=now, removed_by=removed_by)
        if not updated:
            transaction.set_rollback(True)  # removed meanwhile: give the seq back
            return False
        change_record(room_id=message.room_id, seq=turn.seq, message_id=message.pk, kind=RoomChange.Kind.REMOVED)
        room_slug = Room.objects.values_list("slug", flat=True).get(pk=message.room_id)
        events.change_on_commit(room_slug=room_slug, frame={"type": "message_deleted", "id": message.pk, "seq": turn.seq})
        reply_stop_on_commit(message=message)  # removing a streaming reply stops it
        Report.objects.filter(message_id=message.pk, resolved_at__isnull=True).update(
            resolved_at=now, resolved_by=removed_by, resolution=Report.Resolution.REMOVED
        )
        if removed_by is None or removed_by.pk != message.user_id:
            audit_record(
                actor=removed_by,
                action=ModerationAction.Kind.MESSAGE_REMOVE,
                target_user_id=message.user_id,
                room_id=message.room_id,
                message_id=message.pk,
                reason=reason,
            )
            _notify(user_id=message.user_id, data={"action": "message_removed", "room": room_slug, "message_id": message.pk})
    message.removed_at, message.removed_by = now, removed_by
    return True


def message_restore(*, message: Message, restored_by: User | None) -> bool:
    """Undo a removal; False if the message was not removed.

    A change of the room like the removal: after commit the room gets
    ``message_restored`` (the whole message), and clients that were away get it when they
    resume with ``last_seq``; from then on it is replayed like any message (backlogs, REST).
    It is not sent as a ``message`` frame: those are for new messages, once each.
    """
    with transaction.atomic():
        turn = room_next_seq(room_id=message.room_id)
        updated = Message.objects.filter(pk=message.pk, removed_at__isnull=False).update(removed_at=None, removed_by=None)
        if not updated:
            transaction.set_rollback(True)  # give the seq back
        else:
            change_record(room_id=message.room_id, seq=turn.seq, message_id=message.pk, kind=RoomChange.Kind.RESTORED)
            row = Message.objects.select_related("user", "room").get(pk=message.pk)
            [frame] = selectors.message_frames(messages=[row], room_slug=row.room.slug)
            events.change_on_commit(room_slug=row.room.slug, frame=protocol.restored_frame(frame, seq=turn.seq))
            audit_record(
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
        raise ReportExistsError from None


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
            audit_record(
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
