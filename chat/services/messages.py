"""Writes about messages: creating them (one or a batch), editing and deleting them,
typing, the room's notices (reactions: chat.services.reactions). Keyword-only, typed, one transaction each; live
events go out after commit. Every change to a message takes the room's next seq in its
transaction (docs/protocol.md, "Room changes").

Callable from consumers (through database_sync_to_async), REST views, admin actions
and management commands alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chat import events, message_store, presence, protocol, selectors
from chat.mentions import PostedMessage, mentions_notify
from chat.models import Message, MessageEdit, ModerationAction, Mute, Room, RoomChange, RoomMember
from chat.protocol import ChatError
from chat.ratelimit import rate_limit_hits
from chat.services.changes import change_record, room_next_seq
from chat.services.moderation import audit_record, message_remove
from core import metrics
from core.db_thread import in_db_thread
from notifications.services import notification_create


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
    reply_to: int | None = None  # the id of the message this one answers


def message_create(*, room: Room, user: User, content: object, nonce: str | None = None, reply_to: int | None = None) -> Message:
    """Store a message and broadcast it after commit; raise ChatError if it is refused.

    See message_create_batch for the checks and their codes.
    """
    draft = MessageDraft(
        room_id=room.pk,
        room_slug=room.slug,
        user_id=user.pk,
        username=user.get_username(),
        content=content,
        nonce=nonce,
        reply_to=reply_to,
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
        reply_to_id=reply_to,
    )


def message_create_batch(*, drafts: list[MessageDraft]) -> list[protocol.MessageFrame | ChatError]:
    """Store several messages in one transaction and broadcast them after commit.

    Each draft gets its message (as the frame that was broadcast), or the ChatError that refused it: ``empty``,
    ``too_long`` or ``bad_frame`` for bad content, ``not_found`` for a ``reply_to`` that
    names no visible message of the room, ``muted``, ``rate_limited`` (with
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
    _refuse_bad_replies(drafts, texts, results)
    now = timezone.now()
    muted = message_store.sanctioned_pairs(sanction=Mute, user_ids=sorted({drafts[i].user_id for i in texts}), now=now)
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
        rows = [(drafts[i].room_id, drafts[i].user_id, texts[i], drafts[i].nonce or "", drafts[i].reply_to) for i in accepted]
        message_ids = message_store.messages_insert(rows=rows, created_at=now)
        # Each room's seqs, in id order within the room: the rooms' rows are locked (above,
        # in room-id order), so nobody else numbers this room's changes until commit.
        seqs = {room_id: room.seq for room_id, room in rooms.items()}
        last_ids: dict[int, int] = {}
        created: list[events.CreatedMessage] = []
        for index, message_id in zip(accepted, message_ids, strict=True):
            draft = drafts[index]
            room_id = draft.room_id
            seqs[room_id] += 1
            frame = protocol.message_frame(
                id=message_id,
                room=draft.room_slug,
                user=draft.username,
                content=texts[index],
                created_at=now,
                nonce=draft.nonce,
                seq=seqs[room_id],
                reply_to=draft.reply_to,
            )
            created.append(events.CreatedMessage(room_id=room_id, room_slug=draft.room_slug, message_id=message_id, frame=frame))
            last_ids[room_id] = message_id
            results[index] = frame
        message_store.changes_insert(
            rows=[(m.room_id, m.frame["seq"], m.message_id) for m in created], kind=RoomChange.Kind.CREATED, created_at=now
        )
        message_store.rooms_advance(last_ids=last_ids, seqs={room_id: seqs[room_id] for room_id in last_ids})
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


def _refuse_bad_replies(
    drafts: list[MessageDraft], texts: dict[int, str], results: list[protocol.MessageFrame | ChatError | None]
) -> None:
    """``not_found`` for a reply to no visible message of the draft's room (one query, only
    when some draft replies)."""
    replying = {index: reply_to for index in texts if (reply_to := drafts[index].reply_to) is not None}
    if not replying:
        return
    rooms = dict(Message.objects.filter(pk__in=set(replying.values()), removed_at__isnull=True).values_list("pk", "room_id"))
    for index, reply_to in replying.items():
        draft = drafts[index]
        if rooms.get(reply_to) != draft.room_id:
            results[index] = ChatError("not_found", f"no message {reply_to} to reply to in this room", nonce=draft.nonce)
            del texts[index]


# ---- changes to existing messages (docs/protocol.md, "Room changes") ---------------------------------
def _visible_message(room: Room, message_id: int) -> Message:
    message = selectors.message_get(room_id=room.pk, message_id=message_id)
    if message is None or message.removed_at is not None:
        raise ChatError("not_found", f"no message {message_id} in this room")
    return message


def _refuse_if_sanctioned(user: User, room: Room) -> None:
    """A user banned from the room or muted in it changes nothing in it."""
    if selectors.user_is_banned(user_id=user.pk, room_id=room.pk):
        raise ChatError("banned", "you are banned from this room")
    if selectors.user_is_muted(user_id=user.pk, room_id=room.pk):
        raise ChatError("muted", "you are muted")


def _spend_rate(user: User) -> None:
    """Edits and reactions count against the same limit as messages (chat.ratelimit)."""
    [wait] = rate_limit_hits(user_ids=[user.pk])
    if wait:
        raise ChatError("rate_limited", "too many changes", retry_after=round(wait, 3))


def message_edit(*, room: Room, user: User, message_id: int, content: object) -> bool:
    """Change a message's text; the room gets ``message_edited`` after commit. False if the
    text was the same already.

    The author may, within CHAT_EDIT_WINDOW_SECONDS of posting; staff may at any time. The
    content before is kept (MessageEdit). ChatError: bad content as for messages,
    ``not_found`` (unknown, another room's, removed), ``forbidden`` (not the author),
    ``edit_window_passed``, ``banned``, ``muted``, ``rate_limited``, ``room_locked``. The
    same text again changes nothing (and takes no seq).
    """
    text = protocol.clean_content(content)
    message = _visible_message(room, message_id)
    if message.user_id != user.pk and not user.is_staff:
        raise ChatError("forbidden", "only the author (or staff) may edit a message")
    window = float(settings.CHAT_EDIT_WINDOW_SECONDS)
    now = timezone.now()
    if not user.is_staff and (now - message.created_at).total_seconds() > window:
        raise ChatError("edit_window_passed", f"messages can be edited for {window:g} seconds after they are sent")
    _refuse_if_sanctioned(user, room)
    if text == message.content:
        return False
    _spend_rate(user)
    with transaction.atomic():
        turn = room_next_seq(room_id=room.pk)
        if turn.locked:
            raise ChatError("room_locked", "the room is locked")
        before = Message.objects.filter(pk=message.pk, removed_at__isnull=True).values_list("content", flat=True).first()
        if before is None:
            raise ChatError("not_found", f"no message {message_id} in this room")
        MessageEdit.objects.create(message_id=message.pk, content_before=before, edited_by=user, edited_at=now)
        Message.objects.filter(pk=message.pk).update(content=text, edited_at=now)
        change_record(room_id=room.pk, seq=turn.seq, message_id=message.pk, kind=RoomChange.Kind.EDITED)
        frame: protocol.MessageEditedFrame = {
            "type": "message_edited",
            "id": message.pk,
            "content": text,
            "edited_at": protocol.iso(now),
            "seq": turn.seq,
        }
        events.change_on_commit(room_slug=room.slug, frame=frame)
    return True


def message_delete(*, room: Room, user: User, message_id: int) -> None:
    """Remove a message as its author or as staff (chat.services.moderation.message_remove:
    every client, online or not, gets ``message_deleted``). ChatError ``not_found`` (unknown,
    another room's, removed already), ``forbidden``, ``room_locked`` (the author, in a locked room)."""
    message = _visible_message(room, message_id)
    if message.user_id != user.pk and not user.is_staff:
        raise ChatError("forbidden", "only the author (or staff) may remove a message")
    if not message_remove(message=message, removed_by=user):
        raise ChatError("not_found", f"no message {message_id} in this room")


def room_notice(*, room: Room, content: str, sent_by: User | None = None) -> None:
    """Announce ``content`` to everyone in the room now, as a ``notice`` frame after commit.

    A notice is not stored for replay: clients that join later do not get it.
    """
    text = content.strip()
    if not text or len(text) > protocol.MAX_CONTENT_CHARS:
        raise ValidationError(f"a notice must be 1 to {protocol.MAX_CONTENT_CHARS} characters")
    with transaction.atomic():
        audit_record(actor=sent_by, action=ModerationAction.Kind.NOTICE, room_id=room.pk, detail={"content": text})
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
