"""Properties of the wire format between workers (chat/events.py), decoded by the hub's
own parser (chat/hub.py): every event published comes out whole, in order, as sent."""

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

from chat import events, protocol
from chat.hub import Hub
from project.api import MAX_ID

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
IDS = st.integers(min_value=1, max_value=MAX_ID)


class _Decoded:
    """Stands in for the hub: records what ``Hub._room_event`` hands to each event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def _room_single_event(self, feed: object, header: str, text: str) -> None:
        self.events.append((header, text))


def _decode(payload: str) -> list[tuple[str, Any]]:
    decoded = _Decoded()
    asyncio.run(Hub._room_event(decoded, None, payload))  # type: ignore[arg-type]
    return [(header, json.loads(text)) for header, text in decoded.events]


@contextlib.contextmanager
def published() -> Iterator[list[tuple[str, str]]]:
    """What would go to the broker, with on_commit run at once."""
    sent: list[tuple[str, str]] = []

    async def apublish(topic: str, data: str) -> None:
        sent.append((topic, data))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events.transaction, "on_commit", lambda function: function())
        patch.setattr(events.broker, "publish_many", lambda batch: sent.extend(batch))
        patch.setattr(events.broker, "publish", lambda topic, data: sent.append((topic, data)))
        patch.setattr(events.broker, "apublish", apublish)
        yield sent


@st.composite
def created_messages(draw: st.DrawFn) -> list[events.CreatedMessage]:
    count = draw(st.integers(min_value=1, max_value=6))
    room_ids = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=count, max_size=count))
    first = draw(IDS.filter(lambda i: i < MAX_ID - 10))
    messages = []
    for offset, room_id in enumerate(room_ids):
        message_id = first + offset
        frame = protocol.message_frame(
            id=message_id,
            room=draw(TEXT),
            user=draw(TEXT),
            content=draw(TEXT),
            created_at=draw(st.datetimes(timezones=st.just(UTC))),
            nonce=draw(st.none() | TEXT),
        )
        messages.append(events.CreatedMessage(room_id=room_id, message_id=message_id, previous_id=message_id - 1, frame=frame))
    return messages


@given(messages=created_messages())
def test_a_batch_of_messages_decodes_to_the_same_messages_per_room_in_order(messages: list[events.CreatedMessage]) -> None:
    with published() as sent:
        events.messages_created_on_commit(messages=messages)
    for room_id in {m.room_id for m in messages}:
        payloads = [data for topic, data in sent if topic == events.room_topic(room_id)]
        assert len(payloads) == 1  # one publish per room
        expected = [(f"m {m.message_id} {m.previous_id}", m.frame) for m in messages if m.room_id == room_id]
        assert _decode(payloads[0]) == expected


@given(content=TEXT, user=TEXT, is_typing=st.booleans(), version=st.integers(min_value=0, max_value=MAX_ID))
def test_single_frames_decode_to_themselves(content: str, user: str, is_typing: bool, version: int) -> None:
    notice: protocol.NoticeFrame = {"type": "notice", "content": content}
    typing: protocol.TypingFrame = {"type": "typing", "user": user, "is_typing": is_typing}
    presence: protocol.PresenceFrame = {"type": "presence", "users": [user, content]}

    async def publish_live() -> None:
        await events.typing_publish(room_id=1, user_id=7, frame=typing)
        await events.presence_publish(room_id=1, version=version, frame=presence)

    with published() as sent:
        events.room_frame_on_commit(room_id=1, frame=notice)
        asyncio.run(publish_live())
    decoded = [event for _, data in sent for event in _decode(data)]
    assert decoded == [("f", notice), ("t 7", typing), (f"p {version}", presence)]
