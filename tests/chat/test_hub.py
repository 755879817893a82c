"""The hub's chain (chat/hub.py): changes that overtake each other between workers are put
back in order without the database; a gap that stays open is read from it."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chat import protocol, selectors, wire
from chat.hub import GAP_WAIT_SECONDS
from chat.models import Message, Room
from config.asgi import application
from core import metrics
from core.layer import RealtimeChannelLayer
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_hub")]
TIMEOUT = 5


async def joined(token: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(application, "/ws/rooms/lobby/", headers=[(b"authorization", f"Bearer {token}".encode())])
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    while (await socket.receive_json_from(timeout=TIMEOUT))["type"] != "presence":
        pass
    return socket


def stored_without_broadcast(count: int) -> list[tuple[int, int, str]]:
    """``count`` new messages in the room's database and change log, published by nobody:
    (seq, id, the wire text another worker would publish) of each."""
    room = Room.objects.get(slug="lobby")
    new = make_messages(room, make_user("writer"), count)[-count:]
    frames = selectors.message_frames(messages=new, room_slug="lobby")
    return [
        (frame["seq"], message.pk, wire.encode_change(seq=frame["seq"], new_id=message.pk, text=protocol.encode(frame)))
        for message, frame in zip(new, frames, strict=True)
    ]


async def publish(text: str) -> None:
    await RealtimeChannelLayer.apublish(wire.room_group("lobby"), text)


async def ids_received(socket: WebsocketCommunicator, count: int) -> list[int]:
    return [(await socket.receive_json_from(timeout=TIMEOUT))["id"] for _ in range(count)]


def backfills() -> float:
    return metrics.BACKFILLS._value.get()


async def test_changes_that_overtake_each_other_are_delivered_in_order_without_the_database():
    await database_sync_to_async(make_room)()
    socket = await joined(await database_sync_to_async(lambda: make_token(make_user("reader")))())
    changes = await database_sync_to_async(stored_without_broadcast)(3)
    before = backfills()
    await publish(changes[1][2])  # seq 2 and 3 first, as another worker's publish overtook seq 1's
    await publish(changes[2][2])
    await asyncio.sleep(GAP_WAIT_SECONDS / 5)
    await publish(changes[0][2])
    assert await ids_received(socket, 3) == [message_id for _, message_id, _ in changes]
    assert await socket.receive_nothing(2 * GAP_WAIT_SECONDS), "each once"
    assert backfills() == before, "no database read for a reordering"
    await socket.disconnect()


async def test_a_gap_that_stays_open_is_read_from_the_database_after_the_wait():
    await database_sync_to_async(make_room)()
    socket = await joined(await database_sync_to_async(lambda: make_token(make_user("reader")))())
    changes = await database_sync_to_async(stored_without_broadcast)(3)
    before = backfills()
    loop = asyncio.get_running_loop()
    published_at = loop.time()
    await publish(changes[2][2])  # the publishes of seq 1 and 2 were lost
    assert await ids_received(socket, 3) == [message_id for _, message_id, _ in changes]
    assert loop.time() - published_at >= GAP_WAIT_SECONDS * 0.9, "it waited for them first"
    assert backfills() == before + 1
    assert await socket.receive_nothing(2 * GAP_WAIT_SECONDS), "each once"
    assert await database_sync_to_async(Message.objects.count)() == 3
    await socket.disconnect()
