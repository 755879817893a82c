"""Channels' own API reaches our sockets (docs/protocol.md, "Channels integration"):
``get_channel_layer().group_send`` to ``room.<slug>`` or ``user.<id>``, driven with
Channels' WebsocketCommunicator through the whole ASGI stack, in process."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.management import call_command

from config.asgi import application
from tests.support.factories import make_room, make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_hub")]
TIMEOUT = 5


@pytest.fixture
def people(transactional_db):
    make_room("lobby")
    make_room("other", "Other")
    alice, bob = make_user("alice"), make_user("bob")
    return {"alice": (alice, make_token(alice)), "bob": (bob, make_token(bob))}


def socket(token: str, path: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {token}".encode())])


async def joined(token: str, path: str = "/ws/rooms/lobby/") -> WebsocketCommunicator:
    communicator = socket(token, path)
    assert (await communicator.connect(timeout=TIMEOUT))[0]
    if path.startswith("/ws/rooms/"):
        while (await communicator.receive_json_from(timeout=TIMEOUT))["type"] != "presence":
            pass
    return communicator


async def next_notice(communicator: WebsocketCommunicator) -> dict:
    """The next notice, past presence changes and pings."""
    while (frame := await communicator.receive_json_from(timeout=TIMEOUT))["type"] in ("presence", "ping"):
        pass
    return frame


async def test_group_send_to_a_room_reaches_its_sockets_only(people):
    _, alice_token = people["alice"]
    _, bob_token = people["bob"]
    in_lobby, also_in_lobby, elsewhere = (
        await joined(alice_token),
        await joined(bob_token),
        await joined(bob_token, "/ws/rooms/other/"),
    )
    await get_channel_layer().group_send("room.lobby", {"type": "room.notice", "content": "maintenance at noon"})
    for communicator in (in_lobby, also_in_lobby):
        assert await next_notice(communicator) == {"type": "notice", "content": "maintenance at noon"}
    assert await elsewhere.receive_nothing(0.3)
    assert await in_lobby.receive_nothing(0.2), "exactly once"
    for communicator in (in_lobby, also_in_lobby, elsewhere):
        await communicator.disconnect()


async def test_group_send_to_a_user_reaches_every_socket_of_theirs_and_no_one_else(people):
    alice, alice_token = people["alice"]
    _, bob_token = people["bob"]
    room, assistant, bobs = (
        await joined(alice_token),
        await joined(alice_token, "/ws/assistant/"),
        await joined(bob_token),
    )
    await get_channel_layer().group_send(f"user.{alice.pk}", {"type": "room.notice", "content": "your export is ready"})
    assert await next_notice(room) == {"type": "notice", "content": "your export is ready"}
    assert await assistant.receive_json_from(timeout=TIMEOUT) == {"type": "notice", "content": "your export is ready"}
    assert await bobs.receive_nothing(0.3)
    for communicator in (room, assistant, bobs):
        await communicator.disconnect()


async def test_a_message_type_nobody_handles_is_ignored_and_the_socket_stays_usable(people):
    _, alice_token = people["alice"]
    communicator = await joined(alice_token)
    layer = get_channel_layer()
    await layer.group_send("room.lobby", {"type": "nobody.handles_this", "content": "x"})
    await layer.group_send("room.lobby", {"type": "_private", "content": "x"})
    assert await communicator.receive_nothing(0.3)
    await communicator.send_json_to({"type": "message", "content": "still here"})
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["content"] == "still here"
    await layer.group_send("room.lobby", {"type": "room.notice", "content": "and notices too"})
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "notice"
    await communicator.disconnect()


async def test_a_closed_socket_leaves_its_groups(people):
    _, alice_token = people["alice"]
    communicator = await joined(alice_token)
    await communicator.disconnect()
    layer = get_channel_layer()
    assert "room.lobby" not in layer._local().groups


async def test_the_broadcast_command_sends_through_group_send(people):
    _, alice_token = people["alice"]
    communicator = await joined(alice_token)
    await database_sync_to_async(call_command)("broadcast", "--room", "lobby", "from the command line")
    assert await communicator.receive_json_from(timeout=TIMEOUT) == {"type": "notice", "content": "from the command line"}
    await communicator.disconnect()
