"""Chat across three real daphne workers sharing one real Redis: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages, new_room, post_message
from tests.support.wsclient import RoomClient, room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


def ids(frames: list[dict]) -> list[int]:
    return [f["id"] for f in frames]


async def test_a_message_sent_on_one_worker_reaches_every_worker_exactly_once(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user0"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["user0"]) as sender,
        room_client(cluster.ws(1, path), tokens["user1"]) as one,
        room_client(cluster.ws(2, path), tokens["user2"]) as two,
    ):
        for client in (sender, one, two):
            await client.sync()
        for i in range(20):
            await sender.say(f"hello {i}", nonce=f"n{i}")
        for client in (sender, one, two):
            await client.wait_messages(20)
        for client in (sender, one, two):
            await client.quiet(1.0)
        expected = [f"hello {i}" for i in range(20)]
        for client in (sender, one, two):
            assert [m["content"] for m in client.messages] == expected, "each message exactly once, in order"
        assert ids(one.messages) == ids(sender.messages) == ids(two.messages)
        assert [m["nonce"] for m in sender.messages] == [f"n{i}" for i in range(20)]
        assert ids(list_messages(cluster, slug, tokens["user0"])) == ids(sender.messages), "every message persisted"


async def test_two_hundred_rapid_messages_keep_the_senders_order(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user3"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["user3"]) as sender,
        room_client(cluster.ws(1, path), tokens["user4"]) as one,
        room_client(cluster.ws(2, path), tokens["user5"]) as two,
    ):
        for client in (sender, one, two):
            await client.sync()
        for i in range(200):  # no waiting between sends
            await sender.say(str(i))
        for client in (one, two):
            await client.wait_messages(200, timeout=30)
            await client.quiet(0.5)
            assert [int(m["content"]) for m in client.messages] == list(range(200))
            assert ids(client.messages) == sorted(ids(client.messages))


async def test_reconnecting_with_last_id_while_another_sends_misses_nothing(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user6"])
    path = f"/ws/rooms/{slug}/"
    total = 120
    async with room_client(cluster.ws(0, path), tokens["user6"]) as sender:
        await sender.sync()

        async def send_steadily() -> None:
            for i in range(total):
                await sender.say(f"s{i}")
                await asyncio.sleep(0.01)

        sending = asyncio.create_task(send_steadily())
        seen: list[dict] = []
        last_id = 0
        for round_number in range(4):  # read a while, drop, reconnect on another worker
            worker = 1 + round_number % 2
            url = cluster.ws(worker, path + (f"?last_id={last_id}" if last_id else ""))
            async with room_client(url, tokens["user7"]) as reader:
                await reader.sync()
                await asyncio.sleep(0.25)
                await reader.quiet(0.05)
                seen.extend(reader.messages)
            if seen:
                last_id = seen[-1]["id"]
        await sending
        async with room_client(cluster.ws(2, f"{path}?last_id={last_id}"), tokens["user7"]) as reader:
            await reader.sync()
            await reader.quiet(0.5)
            seen.extend(reader.messages)
        contents = [m["content"] for m in seen]
        # The first connection (no last_id) starts from the newest 50 at that moment,
        # which may begin after s0 if messages were already sent: compare from there.
        start = int(contents[0][1:])
        assert contents == [f"s{i}" for i in range(start, total)], "every missed message once, in order"


async def test_killed_worker_clients_reconnect_elsewhere_and_lose_nothing(cluster: Cluster):
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user8"])
    path = f"/ws/rooms/{slug}/"
    try:
        async with (
            room_client(cluster.ws(0, path), tokens["user8"]) as sender,
            room_client(cluster.ws(0, path), tokens["user10"]) as observer,
        ):
            await sender.sync()
            await observer.sync()
            victim = await _open(cluster, 2, path, tokens["user9"])
            await victim.sync()
            await observer.until("presence", users=sorted(["user8", "user9", "user10"]))
            for i in range(10):
                await sender.say(f"before {i}")
            await victim.wait_messages(10)
            last_id = victim.messages[-1]["id"]
            cluster.kill_worker(2)  # SIGKILL: no cleanup of any kind
            assert await victim.close_code(timeout=5) in (None, 1006)
            for i in range(10):
                await sender.say(f"during {i}")
            # The killed worker's presence entries expire after three heartbeats (1 s here).
            started = time.monotonic()
            await observer.until("presence", timeout=8, users=["user10", "user8"])
            assert time.monotonic() - started < 6, "ghost removed within about three heartbeats"
            async with room_client(cluster.ws(1, f"{path}?last_id={last_id}"), tokens["user9"]) as back:
                await back.sync()
                for i in range(5):
                    await sender.say(f"after {i}")
                await back.wait_messages(15)
                await back.quiet(0.5)
                expected = [f"during {i}" for i in range(10)] + [f"after {i}" for i in range(5)]
                assert [m["content"] for m in back.messages] == expected
    finally:
        cluster.start_worker(2)


async def _open(cluster: Cluster, worker: int, path: str, token: str) -> RoomClient:
    from websockets.asyncio.client import connect

    connection = await connect(cluster.ws(worker, path), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)
    return RoomClient(connection)


async def test_an_idle_worker_stays_subscribed_past_ten_seconds(cluster: Cluster):
    """redis-py 8's default 5 s socket timeout kills idle subscribers (channels_redis#422)."""
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user11"])
    path = f"/ws/rooms/{slug}/"
    async with room_client(cluster.ws(1, path), tokens["user11"]) as idle:
        await idle.sync()
        await idle.quiet(11.0)  # only pings in the room for 11 s (answered, so not closed)
        assert post_message(cluster, 0, slug, tokens["user0"], "still there?").status_code == 201
        frame = await idle.until("message", timeout=3)
        assert frame["content"] == "still there?"
    assert "subscriber lost" not in cluster.logs(), "the subscriber was never torn down while idle"


async def test_rest_posts_are_broadcast_to_websocket_clients_on_other_workers(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user1"])
    async with room_client(cluster.ws(2, f"/ws/rooms/{slug}/"), tokens["user2"]) as reader:
        await reader.sync()
        response = post_message(cluster, 0, slug, tokens["user1"], "via REST")
        assert response.status_code == 201
        frame = await reader.until("message")
        assert frame == response.json()


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('{"type":"dance"}', "bad_frame"),
    ('{"type":"message","content":42}', "bad_frame"),
    ('{"type":"message","content":"hi","nonce":7}', "bad_frame"),
    ('{"type":"typing","is_typing":"yes"}', "bad_frame"),
    ('{"type":"message","content":" \\n "}', "empty"),
    ('{"type":"message","content":"' + "x" * 4001 + '"}', "too_long"),
    # A frame of exactly 1 MiB: daphne's own limit (websocket_max_message_size), past which
    # it closes the connection with 1009 before the application sees the frame.
    ('{"type":"message","content":"' + "x" * (1024 * 1024 - 32) + '"}', "too_long"),
    (b"\x00\xffbinary", "bad_frame"),
]


async def test_bad_frames_against_a_real_worker_get_their_code_and_the_socket_stays_usable(cluster: Cluster):
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user2"])
    async with room_client(cluster.ws(1, f"/ws/rooms/{slug}/"), tokens["user2"]) as client:
        await client.sync()
        for index, (frame, code) in enumerate(BAD_FRAMES):
            await client.send(frame)
            error = await client.until("error")
            assert error["code"] == code, f"{frame[:40]!r} should be answered with {code}, got {error}"
            await client.say(f"fine {index}", nonce=f"ok{index}")
            assert (await client.until("message", nonce=f"ok{index}"))["content"] == f"fine {index}"
        await client.quiet(0.3)
        assert [m["content"] for m in client.messages] == [f"fine {i}" for i in range(len(BAD_FRAMES))], "nothing bad was stored"


async def test_a_group_send_from_a_management_command_reaches_every_socket_of_a_room_and_of_a_user(cluster: Cluster):
    """docs/protocol.md, "Channels integration": Django code in another process (here
    manage.py broadcast, i.e. get_channel_layer().group_send) reaches every worker."""
    tokens = cluster.mint_tokens("layer-a", "layer-b")
    slug = new_room(cluster, tokens["layer-a"])
    other = new_room(cluster, tokens["layer-a"])
    async with (
        room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), tokens["layer-a"]) as a0,
        room_client(cluster.ws(1, f"/ws/rooms/{slug}/"), tokens["layer-b"]) as b1,
        room_client(cluster.ws(2, f"/ws/rooms/{other}/"), tokens["layer-a"]) as a2,
        room_client(cluster.ws(2, f"/ws/rooms/{other}/"), tokens["layer-b"]) as b2,
    ):
        for client in (a0, b1, a2, b2):
            await client.sync()

        async def keep_reading(client: RoomClient) -> None:
            # Reading answers the server's pings: manage.py takes seconds to start, longer
            # than the cluster's idle limit of three 1 s heartbeats.
            with contextlib.suppress(TimeoutError):
                while True:
                    if (await client.recv(60))["type"] == "notice":
                        arrived.set()

        def notices(client: RoomClient) -> list[str]:
            return [frame["content"] for frame in client.frames if frame["type"] == "notice"]

        arrived = asyncio.Event()
        readers = [asyncio.create_task(keep_reading(client)) for client in (a0, b1, a2, b2)]
        try:
            await asyncio.to_thread(cluster.manage, "broadcast", "--room", slug, "to the room")
            await asyncio.to_thread(cluster.manage, "broadcast", "--user", "layer-a", "to alice")
            async with asyncio.timeout(10):
                while notices(a0) != ["to the room", "to alice"] or notices(a2) != ["to alice"]:
                    arrived.clear()
                    await arrived.wait()
            await asyncio.sleep(0.5)  # anything extra would arrive by now
        finally:
            for reader in readers:
                reader.cancel()
        assert notices(a0) == ["to the room", "to alice"], "alice's socket in the room: both, once each"
        assert notices(b1) == ["to the room"], "bob's socket in the room: the room's notice only"
        assert notices(a2) == ["to alice"], "alice's socket elsewhere: hers only"
        assert notices(b2) == [], "bob's socket elsewhere: nothing"
