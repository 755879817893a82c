"""Writes. Keyword-only, typed, one transaction each; live events go out after commit.

Callable from consumers (through database_sync_to_async), REST views, admin actions
and management commands alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import events, message_store, protocol
from chat.models import Ban, Message, Mute, Room, slug_validator
from chat.protocol import ChatError
from chat.ratelimit import rate_limit_hits
from project import metrics


class RoomExistsError(Exception):
    pass


def room_create(*, slug: str, title: str, created_by: User | None) -> Room:
    """Create a room; ValidationError for a bad slug or title, RoomExistsError if taken."""
    slug_validator(slug)
    title = title.strip()
    if not title or len(title) > 200:
        raise ValidationError("title must be 1 to 200 characters")
    try:
        with transaction.atomic():
            return Room.objects.create(slug=slug, title=title, created_by=created_by)
    except IntegrityError:
        raise RoomExistsError(slug) from None


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
            if rooms[drafts[index].room_id][0]:
                results[index] = ChatError("room_locked", "the room is locked", nonce=drafts[index].nonce)
            else:
                accepted.append(index)
        if not accepted:
            return
        rows = [(drafts[i].room_id, drafts[i].user_id, texts[i], drafts[i].nonce or "") for i in accepted]
        message_ids = message_store.messages_insert(rows=rows, created_at=now)
        last_ids = {room_id: last_id for room_id, (_, last_id) in rooms.items()}
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
                events.CreatedMessage(room_id=room_id, message_id=message_id, previous_id=last_ids[room_id], frame=frame)
            )
            last_ids[room_id] = message_id
            results[index] = frame
        message_store.rooms_set_last_message(last_ids={drafts[i].room_id: last_ids[drafts[i].room_id] for i in accepted})
        events.messages_created_on_commit(messages=created)
    metrics.MESSAGES_CREATED.inc(len(accepted))


def message_remove(*, message: Message, removed_by: User | None) -> None:
    """Soft-delete a message: never replayed again; open rooms get ``message_deleted``."""
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, removed_at__isnull=True).update(
            removed_at=timezone.now(), removed_by=removed_by
        )
        if updated:
            events.room_frame_on_commit(room_id=message.room_id, frame={"type": "message_deleted", "id": message.pk})


def room_notice(*, room: Room, content: str) -> None:
    events.room_frame_on_commit(room_id=room.pk, frame={"type": "notice", "content": content})


def ban_create(
    *,
    user: User,
    room: Room | None = None,
    minutes: float | None = None,
    reason: str = "",
    created_by: User | None = None,
) -> Ban:
    """Ban a user (from one room or everywhere); their open connections close with 4003."""
    ends_at = timezone.now() + timedelta(minutes=minutes) if minutes else None
    with transaction.atomic():
        ban = Ban.objects.create(user=user, room=room, reason=reason, created_by=created_by, ends_at=ends_at)
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
    ends_at = timezone.now() + timedelta(minutes=minutes) if minutes else None
    return Mute.objects.create(user=user, room=room, reason=reason, created_by=created_by, ends_at=ends_at)


async def typing_set(*, room_id: int, user_id: int, username: str, is_typing: bool) -> None:
    """Tell the others in the room; nothing is stored."""
    await events.typing_publish(
        room_id=room_id, user_id=user_id, frame={"type": "typing", "user": username, "is_typing": is_typing}
    )
