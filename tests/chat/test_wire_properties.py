"""Properties of the wire format between workers: what chat/events.py publishes, decoded
by chat/wire.py as the hub decodes it, comes out whole, in order, as sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat import events, protocol, wire
from core.http import MAX_ID
from core.layer import RealtimeChannelLayer

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
IDS = st.integers(min_value=1, max_value=MAX_ID)


def _decode(payload: str) -> list[tuple[Any, Any]]:
    """What the hub would act on: each event with its frame's JSON parsed."""
    decoded: list[tuple[Any, Any]] = []
    for event in wire.decode(payload):
        if isinstance(event, wire.Change):
            decoded.append((("c", event.seq, event.new_id), json.loads(event.text)))
        elif isinstance(event, wire.ReadMarker):
            decoded.append((("r", event.room_id, event.except_key), json.loads(event.text)))
        elif isinstance(event, wire.RoomFrame):
            decoded.append((("f",), json.loads(event.text)))
        elif isinstance(event, wire.Typing):
            decoded.append((("t", event.user_id), json.loads(event.text)))
        elif isinstance(event, wire.Presence):
            decoded.append((("p", event.version), json.loads(event.text)))
        else:
            decoded.append((("k", event.code, event.room_id), None))
    return decoded


@contextlib.contextmanager
def published() -> Iterator[list[tuple[str, str]]]:
    """What would go to the broker, with on_commit run at once."""
    sent: list[tuple[str, str]] = []

    async def apublish(group: str, data: str) -> None:
        sent.append((group, data))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events.transaction, "on_commit", lambda function: function())
        patch.setattr(RealtimeChannelLayer, "publish_many", staticmethod(lambda batch: sent.extend(batch)))
        patch.setattr(RealtimeChannelLayer, "publish", staticmethod(lambda group, data: sent.append((group, data))))
        patch.setattr(RealtimeChannelLayer, "apublish", staticmethod(apublish))
        yield sent


@st.composite
def created_messages(draw: st.DrawFn) -> list[events.CreatedMessage]:
    count = draw(st.integers(min_value=1, max_value=6))
    room_ids = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=count, max_size=count))
    slugs = {1: "one", 2: "two", 3: "dm-a-b"}
    first = draw(IDS.filter(lambda i: i < MAX_ID - 10))
    seqs = {room_id: draw(IDS.filter(lambda i: i < MAX_ID - 10)) for room_id in slugs}
    messages = []
    for offset, room_id in enumerate(room_ids):
        message_id = first + offset
        seqs[room_id] += 1
        frame = protocol.message_frame(
            id=message_id,
            room=draw(TEXT),
            user=draw(TEXT),
            content=draw(TEXT),
            created_at=draw(st.datetimes(timezones=st.just(UTC))),
            nonce=draw(st.none() | TEXT),
            seq=seqs[room_id],
            reply_to=draw(st.none() | IDS),
            reactions=draw(st.dictionaries(TEXT, st.lists(TEXT, max_size=2), max_size=2)),
        )
        messages.append(events.CreatedMessage(room_id=room_id, room_slug=slugs[room_id], message_id=message_id, frame=frame))
    return messages


@given(messages=created_messages())
def test_a_batch_of_messages_decodes_to_the_same_messages_per_room_in_order(messages: list[events.CreatedMessage]) -> None:
    with published() as sent:
        events.messages_created_on_commit(messages=messages)
    for slug in {m.room_slug for m in messages}:
        payloads = [data for group, data in sent if group == wire.room_group(slug)]
        assert len(payloads) == 1  # one publish per room
        expected = [(("c", m.frame["seq"], m.message_id), m.frame) for m in messages if m.room_slug == slug]
        assert _decode(payloads[0]) == expected


@given(
    content=TEXT,
    user=TEXT,
    is_typing=st.booleans(),
    version=st.integers(min_value=0, max_value=MAX_ID),
    seq=IDS,
    key=st.none() | st.from_regex(r"[0-9a-f]{12}:[0-9]{1,9}", fullmatch=True),
)
def test_single_frames_decode_to_themselves(
    content: str, user: str, is_typing: bool, version: int, seq: int, key: str | None
) -> None:
    notice: protocol.NoticeFrame = {"type": "notice", "content": content}
    typing: protocol.TypingFrame = {"type": "typing", "user": user, "is_typing": is_typing}
    presence: protocol.PresenceFrame = {"type": "presence", "users": [user, content]}
    edited: protocol.MessageEditedFrame = {"type": "message_edited", "id": 3, "content": content, "edited_at": "t", "seq": seq}
    read: protocol.ReadFrame = {"type": "read", "user": user, "id": 3}

    async def publish_live() -> None:
        await events.typing_publish(room_slug="lobby", user_id=7, frame=typing)
        await events.presence_publish(room_slug="lobby", version=version, frame=presence)

    with published() as sent:
        events.room_frame_on_commit(room_slug="lobby", frame=notice)
        events.user_close_on_commit(user_id=7, code=4003, room_id=None)
        events.change_on_commit(room_slug="lobby", frame=edited)
        events.read_on_commit(user_id=7, room_id=5, except_key=key, frame=read)
        asyncio.run(publish_live())
    assert [group for group, _ in sent] == ["room.lobby", "user.7", "room.lobby", "user.7", "room.lobby", "room.lobby"]
    decoded = [event for _, data in sent for event in _decode(data)]
    assert decoded == [
        (("f",), notice),
        (("k", 4003, 0), None),
        (("c", seq, 0), edited),
        (("r", 5, key or ""), read),
        (("t", 7), typing),
        (("p", version), presence),
    ]


@given(garbage=TEXT)
def test_malformed_texts_decode_to_nothing_rather_than_fail(garbage: str) -> None:
    decoded = wire.decode(garbage)
    assert all(
        isinstance(event, (wire.RoomFrame, wire.Change, wire.Typing, wire.Presence, wire.CloseConnections, wire.ReadMarker))
        for event in decoded
    )
