"""Writes. Keyword-only, typed, one transaction each; live events go out after commit.

Callable from consumers (through database_sync_to_async), REST views, admin actions
and management commands alike.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import events, protocol
from chat.models import Ban, Message, Mute, Room, slug_validator
from chat.protocol import ChatError
from chat.ratelimit import rate_limit_hit
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


def message_create(*, room: Room, user: User, content: object, nonce: str | None = None) -> Message:
    """Store a message and broadcast it after commit.

    Raises ChatError: ``empty``/``too_long``/``bad_frame`` for bad content, ``room_locked``,
    ``muted``, ``rate_limited`` (with ``retry_after``). Checks that cost nothing come
    first, so a badly formed or muted message does not use up the sender's rate.
    """
    text = protocol.clean_content(content, nonce=nonce)
    if Mute.objects.applying_to(user_id=user.pk, room_id=room.pk).exists():
        raise ChatError("muted", "you are muted", nonce=nonce)
    # Counted before taking the room's write lock, to keep the Redis round trip out of
    # the serialised section; a message refused because the room is locked still counts.
    retry_after = rate_limit_hit(user_id=user.pk)
    if retry_after:
        raise ChatError("rate_limited", "too many messages", nonce=nonce, retry_after=round(retry_after, 3))
    with transaction.atomic():
        # The row lock serialises writers per room (PostgreSQL; SQLite serialises all
        # writers), so ids grow in commit order within a room and the previous-id chain
        # that lets workers detect lost broadcasts is exact.
        locked_room = Room.objects.select_for_update().only("pk", "locked", "last_message_id").get(pk=room.pk)
        if locked_room.locked:
            raise ChatError("room_locked", "the room is locked", nonce=nonce)
        message = Message.objects.create(room_id=room.pk, user=user, content=text, nonce=nonce or "")
        Room.objects.filter(pk=room.pk).update(last_message_id=message.pk)
        frame = protocol.message_frame(
            id=message.pk,
            room=room.slug,
            user=user.get_username(),
            content=text,
            created_at=message.created_at,
            nonce=nonce,
        )
        events.message_created_on_commit(
            room_id=room.pk, message_id=message.pk, previous_id=locked_room.last_message_id, frame=frame
        )
    metrics.MESSAGES_CREATED.inc()
    return message


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
