"""Writes about the assistant's replies in rooms (docs/protocol.md, "The assistant in a room").

A reply is a room message by the ``assistant`` user that grows. Its tokens never touch
the database: they are a token stream (core.eventlog) that every worker's hub follows and
turns into ``message_delta`` frames (chat.hub). The database sees the reply twice: when
it starts (an empty message marked as streaming, a ``created`` change of the room) and
when it ends (its whole content, a ``finished`` change, ``message_done``). Who produces
the tokens (a model, in room_assistant) is not chat's concern; chat knows the stream's
id and the events of docs/protocol.md, "Events".
"""

from __future__ import annotations

import logging
from functools import partial

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

# The assistant's username: no person may take it (accounts' sign-up refuses it).
from accounts.forms import ASSISTANT_USERNAME as ASSISTANT_USERNAME
from chat import events, protocol
from chat.models import Message, Room, RoomChange
from chat.protocol import ChatError
from chat.services.changes import change_record, room_next_seq
from core.db_thread import in_db_thread
from core.eventlog import get_log

logger = logging.getLogger(__name__)

BUSY_DETAIL = "the assistant is answering another message in this room; ask again when it is done"
# How a reply may end (docs/protocol.md, "The assistant in a room").
FINISH_REASONS = frozenset({"stop", "length", "cancelled", "interrupted", "error"})


def assistant_user() -> User:
    """The user the assistant's replies are by (made on first use; it cannot log in)."""
    user, created = User.objects.get_or_create(username=ASSISTANT_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def reply_create(*, room_id: int, reply_to: int, stream_id: str) -> protocol.MessageFrame:
    """Store the start of a reply to message ``reply_to``: an empty message marked as
    streaming, whose content is the stream ``stream_id``; the room gets its ``message``
    frame after commit. ChatError ``busy`` if the room has a reply streaming already
    (the database's constraint decides, so two workers cannot both start one),
    ``room_locked`` if the room was locked meanwhile."""
    user = assistant_user()
    now = timezone.now()
    try:
        with transaction.atomic():
            turn = room_next_seq(room_id=room_id)
            if turn.locked:
                raise ChatError("room_locked", "the room is locked")
            message = Message.objects.create(
                room_id=room_id, user=user, content="", created_at=now, reply_to_id=reply_to, stream_id=stream_id, streaming=True
            )
            change_record(room_id=room_id, seq=turn.seq, message_id=message.pk, kind=RoomChange.Kind.CREATED)
            Room.objects.filter(pk=room_id).update(last_message_id=message.pk)
            room_slug = Room.objects.values_list("slug", flat=True).get(pk=room_id)
            frame = protocol.message_frame(
                id=message.pk,
                room=room_slug,
                user=ASSISTANT_USERNAME,
                content="",
                created_at=now,
                nonce=None,
                seq=turn.seq,
                reply_to=reply_to,
                streaming=True,
            )
            events.messages_created_on_commit(
                messages=[events.CreatedMessage(room_id=room_id, room_slug=room_slug, message_id=message.pk, frame=frame)]
            )
    except IntegrityError:
        raise ChatError("busy", BUSY_DETAIL) from None
    return frame


def reply_finish(*, message_id: int, content: str, finish_reason: str) -> bool:
    """End a reply with its whole content, once: the room gets ``message_done`` (a
    ``finished`` change) after commit, unless a moderator removed the reply, which then
    only keeps its content for the audit trail. False if it had ended already (the
    producer and a reader that found the producer dead may both try)."""
    if finish_reason not in FINISH_REASONS:
        finish_reason = "stop" if finish_reason == "tool_calls" else "error"
    found = Message.objects.filter(pk=message_id, streaming=True).values_list("room_id", flat=True).first()
    if found is None:
        return False
    with transaction.atomic():
        turn = room_next_seq(room_id=found)  # the room's row lock: a removal now waits, or went first
        ended = Message.objects.filter(pk=message_id, streaming=True, removed_at__isnull=True).update(
            content=content, streaming=False, finish_reason=finish_reason
        )
        if ended:
            change_record(room_id=found, seq=turn.seq, message_id=message_id, kind=RoomChange.Kind.FINISHED)
            room_slug = Room.objects.values_list("slug", flat=True).get(pk=found)
            done: protocol.MessageDoneFrame = {
                "type": "message_done",
                "id": message_id,
                "content": content,
                "finish_reason": finish_reason,
                "seq": turn.seq,
            }
            events.change_on_commit(room_slug=room_slug, frame=done)
        else:
            transaction.set_rollback(True)  # not ours to end, or removed: give the seq back
    if ended:
        return True
    # Removed while it streamed: the room heard ``message_deleted`` and nothing more.
    removed = Message.objects.filter(pk=message_id, streaming=True).update(
        content=content, streaming=False, finish_reason=finish_reason
    )
    return bool(removed)


def reply_stop_on_commit(*, message: Message) -> None:
    """Inside a transaction that removes ``message``: if it is a reply still streaming,
    its producer is told to stop once the removal commits (chat.services.moderation)."""
    if message.streaming and message.stream_id:
        transaction.on_commit(partial(_cancel_quietly, message.stream_id))


def _cancel_quietly(stream_id: str) -> None:
    try:
        get_log().cancel_blocking(stream_id)
    except Exception:  # Redis down: the reply ends when its producer next writes, or is lost
        logger.warning("could not stop the reply streaming as %s", stream_id, exc_info=True)


def _stoppable_stream(*, room_id: int, user_id: int, message_id: int) -> str:
    reply = (
        Message.objects.filter(pk=message_id, room_id=room_id, removed_at__isnull=True)
        .exclude(stream_id="")
        .values_list("stream_id", "streaming", "reply_to__user_id", "room__created_by_id")
        .first()
    )
    if reply is None:
        raise ChatError("not_found", f"no reply {message_id} of the assistant in this room")
    stream_id, streaming, asker_id, owner_id = reply
    if user_id not in (asker_id, owner_id) and not User.objects.filter(pk=user_id, is_staff=True).exists():
        raise ChatError("forbidden", "only who asked, the room's owner or staff may stop a reply")
    if not streaming:
        raise ChatError("not_found", f"reply {message_id} has ended already")
    return str(stream_id)


async def reply_stop(*, room_id: int, user_id: int, message_id: int) -> None:
    """Stop a reply still streaming, from any worker: its producer sees the cancel on its
    next heartbeat and ends it ``cancelled``, keeping what it wrote. The asker, the
    room's owner (its creator) or staff; ChatError ``forbidden`` for anyone else,
    ``not_found`` for no such reply, or one that ended."""
    stream_id = await in_db_thread(_stoppable_stream, room_id=room_id, user_id=user_id, message_id=message_id)
    await get_log().cancel(stream_id)
