"""granian (issue 21): measured beside daphne and uvicorn (bench/ --server granian), not a
WEB_SERVER (docs/performance.md, "granian"). These tests keep both halves of that on record
with three granian workers: what the benchmark relies on holds (room delivery across
workers, SSE resumed on another worker, a hostile Origin refused), and what stops us shipping it still fails (a
close the server starts while Channels waits on ``receive()`` does not reach the client).
That xfail is not strict: the close does go out when a client frame arrives in time (a pong
to the server's ping, say), which a busy CI machine made happen once; a run in which every
ban closes in time is the sign to measure granian again."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages, new_room
from tests.support.streams import auth, read_events, start_stream
from tests.support.wsclient import room_client

pytestmark = pytest.mark.multiworker


@pytest.mark.asyncio
async def test_under_granian_a_message_reaches_every_worker_exactly_once(granian_cluster: Cluster):
    cluster, tokens = granian_cluster, granian_cluster.tokens
    slug = new_room(cluster, tokens["user0"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["user0"]) as sender,
        room_client(cluster.ws(1, path), tokens["user1"]) as one,
        room_client(cluster.ws(2, path), tokens["user2"]) as two,
    ):
        for client in (sender, one, two):
            await client.sync()
        for i in range(50):
            await sender.say(f"hello {i}", nonce=f"n{i}")
        for client in (sender, one, two):
            await client.wait_messages(50)
            await client.quiet(0.5)
            assert [m["content"] for m in client.messages] == [f"hello {i}" for i in range(50)], "once each, in order"
        persisted = [m["id"] for m in list_messages(cluster, slug, tokens["user0"])]
        assert persisted == [m["id"] for m in sender.messages]


def test_under_granian_a_dropped_stream_resumes_on_another_worker(granian_cluster: Cluster):
    cluster = granian_cluster
    token = cluster.tokens["user3"]
    response = start_stream(cluster, 0, token, message="alpha beta gamma", max_tokens=60)
    stream_id = response.headers["X-Stream-Id"]
    first = read_events(response, until=10)
    response.close()  # the client drops; the generation goes on
    seen = [e["data"]["index"] for e in first if e.get("event") == "token"]
    last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
    with httpx.stream(
        "GET", f"{cluster.http(1)}/api/streams/{stream_id}/events", headers={**auth(token), "Last-Event-ID": last_id}, timeout=20
    ) as resumed:
        rest = read_events(resumed)
    assert seen + [e["data"]["index"] for e in rest if e.get("event") == "token"] == list(range(60))
    assert rest[-1]["event"] == "done"


@pytest.mark.asyncio
async def test_under_granian_a_hostile_origin_is_refused_before_accept(granian_cluster: Cluster):
    cluster = granian_cluster
    url = cluster.ws(0, f"/ws/rooms/{new_room(cluster, cluster.tokens['user4'])}/")
    headers = {"Authorization": f"Bearer {cluster.tokens['user4']}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers, origin="https://evil.example", open_timeout=10):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.asyncio
@pytest.mark.xfail(
    strict=False,
    raises=(AssertionError, TimeoutError),
    reason="granian 2.8.7: websocket.close waits on the receive() Channels keeps pending, "
    "so the 4003 does not reach the client (docs/performance.md, 'granian')",
)
async def test_under_granian_a_ban_closes_the_users_sockets_within_two_seconds(granian_cluster: Cluster):
    cluster, tokens = granian_cluster, granian_cluster.tokens
    slug = new_room(cluster, tokens["user0"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["user6"]) as zero,
        room_client(cluster.ws(1, path), tokens["user6"]) as one,
    ):
        for client in (zero, one):
            await client.sync()
        banning = asyncio.to_thread(
            cluster.manage,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from chat.models import Room; "
            "from chat.services.moderation import ban_create; "
            f"ban_create(user=User.objects.get(username='user6'), room=Room.objects.get(slug='{slug}'), minutes=1)",
        )
        started = time.monotonic()
        codes = await asyncio.gather(banning, zero.close_code(timeout=6), one.close_code(timeout=6))
        assert codes[1:] == [4003, 4003]
        assert time.monotonic() - started < 6
