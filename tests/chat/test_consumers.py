"""The room consumer through the whole ASGI stack (origin check, auth, routing),
in process, with WebsocketCommunicator and the in-process broker."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from chat import protocol
from chat.models import Message
from chat.services.moderation import ban_create, message_remove, mute_create
from config.asgi import application
from core import broker
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_hub")]
TIMEOUT = 5


def room_socket(token: str | None, path: str = "/ws/rooms/lobby/", headers: list[tuple[bytes, bytes]] | None = None):
    headers = list(headers or [])
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive(communicator: WebsocketCommunicator) -> dict:
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def join(communicator: WebsocketCommunicator) -> list[dict]:
    """Connect and read through presence; returns every frame read."""
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    frames = [await receive(communicator)]
    while frames[-1]["type"] != "presence":
        frames.append(await receive(communicator))
    return frames


async def close_code(communicator: WebsocketCommunicator) -> int:
    output = await communicator.receive_output(timeout=TIMEOUT)
    while output["type"] == "websocket.send":
        output = await communicator.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"]


@pytest.fixture
def alice_token(transactional_db):
    make_room()
    return make_token(make_user("alice"))


@pytest.fixture
def bob_token(transactional_db):
    return make_token(make_user("bob"))


async def test_handshake_sends_hello_backlog_synced_presence(alice_token):
    messages = await database_sync_to_async(lambda: make_messages(make_room("busy"), make_user("carol"), 3))()
    socket = room_socket(alice_token, "/ws/rooms/busy/")
    frames = await join(socket)
    assert [f["type"] for f in frames] == ["hello", "message", "message", "message", "synced", "presence"]
    assert frames[0] == {"type": "hello", "room": "busy", "user": "alice", "heartbeat": 20.0}
    assert [f["id"] for f in frames[1:4]] == [m.pk for m in messages]
    assert frames[4] == {"type": "synced", "last_id": messages[-1].pk, "seq": 3}
    assert frames[5] == {"type": "presence", "users": ["alice"]}
    await socket.disconnect()


async def test_reconnect_with_last_id_gets_what_was_missed_and_a_gap_frame(alice_token):
    room = await database_sync_to_async(make_room)("old")
    messages = await database_sync_to_async(lambda: make_messages(room, make_user("carol"), 1005))()
    socket = room_socket(alice_token, f"/ws/rooms/old/?last_id={messages[0].pk}")
    frames = await join(socket)
    assert frames[1] == {"type": "gap", "missed": 4}
    assert [f["id"] for f in frames[2:-2]] == [m.pk for m in messages[-1000:]]
    assert frames[-2] == {"type": "synced", "last_id": messages[-1].pk, "seq": 1005}
    await socket.disconnect()


async def test_handshake_without_credentials_closes_4001(transactional_db):
    await database_sync_to_async(make_room)()
    for headers in ([], [(b"authorization", b"Bearer rt_forged")], [(b"cookie", b"sessionid=forged")]):
        socket = room_socket(None, headers=headers)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        assert connected, "the server accepts first so that the close code reaches the client"
        assert await close_code(socket) == protocol.CLOSE_UNAUTHENTICATED


async def test_session_cookie_authenticates_the_handshake(alice_token):
    user = await database_sync_to_async(make_user)("dora")
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    browser = [(b"cookie", cookie), (b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]
    socket = room_socket(None, headers=browser)
    frames = await join(socket)
    assert frames[0]["user"] == "dora"
    await socket.disconnect()


async def test_unknown_room_closes_4004(alice_token):
    socket = room_socket(alice_token, "/ws/rooms/nowhere/")
    await socket.connect(timeout=TIMEOUT)
    assert await close_code(socket) == protocol.CLOSE_NO_ROOM


async def test_banned_user_is_refused_4003_and_kicked_live(alice_token, bob_token):
    socket = room_socket(alice_token)
    await join(socket)
    alice = await database_sync_to_async(User.objects.get)(username="alice")
    await database_sync_to_async(ban_create)(user=alice, minutes=5, reason="spam")
    assert await close_code(socket) == protocol.CLOSE_BANNED
    again = room_socket(alice_token)
    await again.connect(timeout=TIMEOUT)
    assert await close_code(again) == protocol.CLOSE_BANNED


async def test_an_expired_ban_lets_the_user_back_in_with_nobody_acting(alice_token):
    alice = await database_sync_to_async(User.objects.get)(username="alice")
    ban = await database_sync_to_async(ban_create)(user=alice, minutes=2 / 60)
    refused = room_socket(alice_token)
    await refused.connect(timeout=TIMEOUT)
    assert await close_code(refused) == protocol.CLOSE_BANNED
    assert ban.ends_at is not None
    await asyncio.sleep(max(0.0, (ban.ends_at - timezone.now()).total_seconds()) + 0.1)
    again = room_socket(alice_token)
    await join(again)
    await again.disconnect()


@override_settings(CHAT_MAX_CONNECTIONS_PER_USER=2)
async def test_connections_past_the_cap_close_4029(alice_token):
    first, second, third = room_socket(alice_token), room_socket(alice_token), room_socket(alice_token)
    await join(first)
    await join(second)
    await third.connect(timeout=TIMEOUT)
    assert await close_code(third) == protocol.CLOSE_TOO_MANY_CONNECTIONS
    await first.disconnect()
    fourth = room_socket(alice_token)
    await join(fourth)  # a closed connection frees its place
    await second.disconnect()
    await fourth.disconnect()


async def test_hostile_origin_is_refused_but_no_origin_is_judged_by_token(alice_token):
    hostile = room_socket(alice_token, headers=[(b"origin", b"https://evil.example")])
    connected, _ = await hostile.connect(timeout=TIMEOUT)
    assert not connected
    scripted = room_socket(alice_token)
    await join(scripted)
    await scripted.disconnect()


async def test_only_the_pages_own_origin_or_a_trusted_one_rides_the_session_cookie(alice_token):
    """docs/protocol.md, "Authentication and the handshake": scheme, host and port must all be the page's, or listed in
    CSRF_TRUSTED_ORIGINS; another port or scheme of the same host is another site."""
    user = await database_sync_to_async(make_user)("dora")
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())

    def from_page(origin: bytes) -> WebsocketCommunicator:
        return room_socket(None, headers=[cookie, (b"host", b"127.0.0.1:8000"), (b"origin", origin)])

    for origin in (b"http://127.0.0.1:9999", b"https://127.0.0.1", b"https://127.0.0.1:8000", b"https://app.example"):
        connected, _ = await from_page(origin).connect(timeout=TIMEOUT)
        assert not connected, origin
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://app.example"]):
        for origin in (b"http://127.0.0.1:8000", b"https://app.example"):
            socket = from_page(origin)
            assert (await join(socket))[0]["user"] == "dora", origin
            await socket.disconnect()


async def test_message_is_echoed_with_nonce_and_reaches_others_once(alice_token, bob_token):
    alice, bob = room_socket(alice_token), room_socket(bob_token)
    await join(alice)
    await join(bob)
    assert (await receive(alice)) == {"type": "presence", "users": ["alice", "bob"]}
    await alice.send_json_to({"type": "message", "content": "hello <b>bob</b>", "nonce": "n-1"})
    echo, delivered = await receive(alice), await receive(bob)
    assert echo == delivered
    assert (
        echo["type"] == "message" and echo["content"] == "hello <b>bob</b>" and echo["nonce"] == "n-1" and echo["user"] == "alice"
    )
    assert await database_sync_to_async(Message.objects.filter(pk=echo["id"]).exists)()
    assert await alice.receive_nothing(0.3) and await bob.receive_nothing(0.3)
    await alice.disconnect()
    assert (await receive(bob)) == {"type": "presence", "users": ["bob"]}
    await bob.disconnect()


BAD_FRAMES = [
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('{"type":"dance"}', "bad_frame"),
    ('{"type":"message","content":42}', "bad_frame"),
    ('{"type":"typing","is_typing":"yes"}', "bad_frame"),
    ('{"type":"message","content":"  "}', "empty"),
    (json.dumps({"type": "message", "content": "x" * 4001}), "too_long"),
    (json.dumps({"type": "message", "content": "x" * (1024 * 1024)}), "too_long"),
    (b"\x00\x01binary", "bad_frame"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frames_get_their_error_and_the_connection_stays_usable(alice_token, frame, code):
    socket = room_socket(alice_token)
    await join(socket)
    if isinstance(frame, bytes):
        await socket.send_to(bytes_data=frame)
    else:
        await socket.send_to(text_data=frame)
    error = await receive(socket)
    assert error["type"] == "error" and error["code"] == code and error["detail"], error
    await socket.send_json_to({"type": "ping"})
    assert (await receive(socket)) == {"type": "pong"}
    await socket.send_json_to({"type": "message", "content": "still here", "nonce": "ok"})
    assert (await receive(socket))["nonce"] == "ok"
    await socket.disconnect()


async def test_error_frames_echo_the_nonce(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    await socket.send_json_to({"type": "message", "content": "", "nonce": "mine"})
    assert (await receive(socket))["nonce"] == "mine"
    await socket.disconnect()


@override_settings(CHAT_RATE_LIMIT=2, CHAT_RATE_WINDOW=30)
async def test_rate_limited_frames_say_when_to_retry(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    for i in range(3):
        await socket.send_json_to({"type": "message", "content": f"m{i}", "nonce": str(i)})
    frames = [await receive(socket) for _ in range(3)]
    assert [f["type"] for f in frames] == ["message", "message", "error"]
    assert frames[2]["code"] == "rate_limited" and frames[2]["nonce"] == "2" and 0 < frames[2]["retry_after"] <= 30
    await socket.disconnect()


async def test_typing_reaches_the_others_only(alice_token, bob_token):
    alice, bob = room_socket(alice_token), room_socket(bob_token)
    await join(alice)
    await join(bob)
    await receive(alice)  # bob's presence
    await alice.send_json_to({"type": "typing", "is_typing": True})
    assert (await receive(bob)) == {"type": "typing", "user": "alice", "is_typing": True}
    assert await alice.receive_nothing(0.3)
    await alice.disconnect()
    await bob.disconnect()


async def typing_frames_received(communicator: WebsocketCommunicator, quiet: float = 0.5) -> list[dict]:
    """Every frame that arrives until none has for ``quiet`` seconds: all typing frames."""
    frames = []
    while not await communicator.receive_nothing(quiet):
        frames.append(await receive(communicator))
    assert all(frame["type"] == "typing" for frame in frames), frames
    return frames


async def test_a_typing_flood_reaches_the_others_as_a_few_frames(alice_token, bob_token):
    """docs/protocol.md, "Typing": at most one "typing" a second per connection, "stopped"
    only after an announced "typing"; the rest are dropped silently."""
    alice, bob = room_socket(alice_token), room_socket(bob_token)
    await join(alice)
    await join(bob)
    await receive(alice)  # bob's presence
    for _ in range(100):
        await alice.send_json_to({"type": "typing", "is_typing": True})
    assert await typing_frames_received(bob) == [{"type": "typing", "user": "alice", "is_typing": True}]
    for i in range(100):
        await alice.send_json_to({"type": "typing", "is_typing": i % 2 == 1})
    assert await typing_frames_received(bob) == [{"type": "typing", "user": "alice", "is_typing": False}]
    assert await alice.receive_nothing(0.1), "silently: no error for the sender either"
    await asyncio.sleep(protocol.TYPING_INTERVAL)
    await alice.send_json_to({"type": "typing", "is_typing": True})
    await alice.send_json_to({"type": "typing", "is_typing": False})
    assert await typing_frames_received(bob) == [
        {"type": "typing", "user": "alice", "is_typing": True},
        {"type": "typing", "user": "alice", "is_typing": False},
    ], "a second later, typing shows again"
    await alice.disconnect()
    await bob.disconnect()


async def test_a_muted_user_cannot_show_typing(alice_token, bob_token):
    alice, bob = room_socket(alice_token), room_socket(bob_token)
    await join(alice)
    await join(bob)
    await receive(alice)  # bob's presence
    user = await database_sync_to_async(User.objects.get)(username="alice")
    await database_sync_to_async(mute_create)(user=user, minutes=5)
    await alice.send_json_to({"type": "typing", "is_typing": True})
    error = await receive(alice)
    assert error["type"] == "error" and error["code"] == "muted", error
    assert await bob.receive_nothing(0.5)
    await alice.disconnect()
    await bob.disconnect()


async def test_removed_message_disappears_live(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    await socket.send_json_to({"type": "message", "content": "regrettable"})
    message = await receive(socket)
    row = await database_sync_to_async(Message.objects.get)(pk=message["id"])
    await database_sync_to_async(message_remove)(message=row, removed_by=None)
    assert (await receive(socket)) == {"type": "message_deleted", "id": message["id"], "seq": message["seq"] + 1}
    await socket.disconnect()


@override_settings(WS_HEARTBEAT_SECONDS=0.3)
async def test_server_pings_and_closes_a_silent_client_with_4000(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    assert (await receive(socket)) == {"type": "ping"}
    assert await close_code(socket) == protocol.CLOSE_IDLE


@override_settings(WS_HEARTBEAT_SECONDS=0.3)
async def test_a_client_that_answers_pings_stays_connected(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    for _ in range(6):
        assert (await receive(socket)) == {"type": "ping"}
        await socket.send_json_to({"type": "pong"})
    await socket.disconnect()


async def test_a_lost_broadcast_is_repaired_from_the_database(alice_token, monkeypatch):
    socket = room_socket(alice_token)
    await join(socket)
    real_publish = broker.publish_many
    monkeypatch.setattr(broker, "publish_many", lambda batch: None)  # Redis "drops" this one
    await socket.send_json_to({"type": "message", "content": "lost in transit"})
    assert await socket.receive_nothing(0.2)
    monkeypatch.setattr(broker, "publish_many", real_publish)
    await socket.send_json_to({"type": "message", "content": "reveals the gap"})
    first, second = await receive(socket), await receive(socket)
    assert [first["content"], second["content"]] == ["lost in transit", "reveals the gap"]
    assert first["id"] < second["id"]
    assert await socket.receive_nothing(0.3)
    await socket.disconnect()


async def test_a_lost_last_broadcast_is_repaired_within_seconds(alice_token, monkeypatch):
    socket = room_socket(alice_token)
    await join(socket)
    monkeypatch.setattr(broker, "publish_many", lambda batch: None)
    await socket.send_json_to({"type": "message", "content": "nobody publishes me"})
    frame = await socket.receive_json_from(timeout=4)  # the hub's once-a-second check
    assert frame["content"] == "nobody publishes me"
    assert await socket.receive_nothing(1.5), "repaired once, not again"
    await socket.disconnect()


@override_settings(CHAT_RATE_LIMIT=1000)
async def test_concurrent_joins_and_sends_deliver_every_message_once(alice_token, bob_token):
    sender = room_socket(bob_token)
    await join(sender)

    async def send_all():
        for i in range(40):
            await sender.send_json_to({"type": "message", "content": f"m{i}"})
            await asyncio.sleep(0.005)

    sending = asyncio.create_task(send_all())
    await asyncio.sleep(0.05)
    late = room_socket(alice_token, "/ws/rooms/lobby/?last_id=0")
    frames = await join(late)
    await sending
    seen = [f["content"] for f in frames if f["type"] == "message"]
    while len(seen) < 40:
        try:
            frame = await receive(late)
        except TimeoutError:
            raise AssertionError(f"the late joiner saw only {seen}") from None
        if frame["type"] == "message":
            seen.append(frame["content"])
    assert seen == [f"m{i}" for i in range(40)]
    assert await late.receive_nothing(0.5), "nothing after the 40 messages, no duplicate"
    await late.disconnect()
    await sender.disconnect()


async def test_revoking_the_token_closes_its_sockets_4011_and_the_reconnect_4001(alice_token):
    from accounts.models import ApiToken
    from accounts.services import token_revoke

    socket = room_socket(alice_token)
    await join(socket)
    token = await ApiToken.objects.aget(user__username="alice")
    await database_sync_to_async(token_revoke)(token=token)
    assert await close_code(socket) == protocol.CLOSE_REAUTHENTICATE
    again = room_socket(alice_token)
    await again.connect(timeout=TIMEOUT)
    assert await close_code(again) == protocol.CLOSE_UNAUTHENTICATED


async def test_a_new_password_or_deactivation_closes_the_users_sockets_4011(alice_token):
    socket = room_socket(alice_token)
    await join(socket)
    alice = await User.objects.aget(username="alice")
    alice.last_login = None
    await alice.asave(update_fields=["last_login"])  # a login's save: nothing to re-check
    alice.set_password("a-new-Passphrase-77")
    await alice.asave()
    assert await close_code(socket) == protocol.CLOSE_REAUTHENTICATE
    reconnected = room_socket(alice_token)  # the token is still valid: back in
    await join(reconnected)
    alice.is_active = False
    await alice.asave()
    assert await close_code(reconnected) == protocol.CLOSE_REAUTHENTICATE


async def test_logging_out_closes_the_users_sockets_4011(alice_token):
    from django.contrib.auth.signals import user_logged_out

    socket = room_socket(alice_token)
    await join(socket)
    alice = await User.objects.aget(username="alice")
    await database_sync_to_async(user_logged_out.send)(sender=User, request=None, user=alice)
    assert await close_code(socket) == protocol.CLOSE_REAUTHENTICATE
