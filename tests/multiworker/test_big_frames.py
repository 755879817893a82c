"""A room frame over daphne's message limit (1 MiB) ends that connection with close code
1009, "message too big" (docs/protocol.md, "Frames from the client"), not a dropped
TCP connection (1006 to the client), and the worker stays healthy."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages, new_room
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]

MIB = 1024 * 1024  # daphne's --websocket-max-message-size and frame size, by default


@pytest.mark.parametrize("size", [MIB + 1, 4 * MIB])
async def test_a_frame_over_one_mib_is_closed_with_1009_and_the_worker_stays_healthy(cluster: Cluster, size: int):
    token, other = cluster.tokens["user3"], cluster.tokens["user4"]
    slug = new_room(cluster, token)
    path = f"/ws/rooms/{slug}/"
    prefix = '{"type":"message","content":"'
    frame = prefix + "x" * (size - len(prefix) - 2) + '"}'
    assert len(frame.encode()) == size
    async with room_client(cluster.ws(2, path), other) as bystander:
        await bystander.sync()
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(cluster.ws(1, path), additional_headers=headers, max_size=None, open_timeout=10) as raw:
            async with asyncio.timeout(10):
                while json.loads(await raw.recv())["type"] != "presence":
                    pass
            await raw.send(frame)
            try:
                async with asyncio.timeout(10):
                    while True:
                        reply = json.loads(await raw.recv())
                        assert reply["type"] in ("ping", "presence"), f"no frame but the close: {reply}"
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "the worker dropped the connection without a close frame (1006)"
                assert closed.rcvd.code == 1009, closed
        response = httpx.get(f"{cluster.http(1)}/healthz", timeout=5)
        assert response.status_code == 200, response.text
        async with room_client(cluster.ws(1, path), token) as again:  # the same worker, the same user
            await again.sync()
            await again.say("after the big frame", nonce="after")
            assert (await again.until("message", nonce="after"))["content"] == "after the big frame"
        assert (await bystander.until("message", nonce="after"))["content"] == "after the big frame"
    assert [m["content"] for m in list_messages(cluster, slug, token)] == ["after the big frame"], "nothing big was stored"
