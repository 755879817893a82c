"""A revoked token ends what it opened on every worker within 2 seconds (docs/protocol.md,
"Connections and credentials"): room and assistant sockets close with 4011, SSE
responses end, and the generation it started stops, while a reply started with the
same user's other token runs on."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import Cluster
from tests.support.rooms_api import new_room
from tests.support.sse_parsing import parse_events
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sse_ended_at(
    http: httpx.AsyncClient, method: str, url: str, token: str, opened: asyncio.Event, **kwargs
) -> tuple[float, str, str]:
    """Open an SSE response, read it to its end: when it ended, what it said, its X-Stream-Id."""
    body = ""
    async with http.stream(method, url, headers=auth(token), **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            body += chunk
            opened.set()
    return time.time(), body, response.headers.get("X-Stream-Id", "")


async def final_event(cluster: Cluster, worker: int, stream_id: str, token: str) -> dict:
    """The stream's last event, read from the start on ``worker`` (waits for its end)."""
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.get(f"{cluster.http(worker)}/api/streams/{stream_id}/events", headers=auth(token))
    return parse_events(response.text)[-1]


async def test_revoking_a_token_ends_its_connections_on_every_worker(cluster: Cluster):
    tokens = cluster.mint_tokens("cred-revoked")
    revoked = tokens["cred-revoked"]
    kept = cluster.mint_tokens("cred-revoked")["cred-revoked"]  # a second token of the same user
    slug = new_room(cluster, revoked)
    async with (
        httpx.AsyncClient(timeout=20) as http,
        room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), revoked) as room,
        connect(cluster.ws(1, "/ws/assistant/"), additional_headers=auth(revoked)) as assistant,
    ):
        await room.sync()
        opened = [asyncio.Event() for _ in range(3)]
        completion = {"model": "echo", "messages": [{"role": "user", "content": "word"}], "max_tokens": 150, "stream": True}
        reply = {"message": "word", "max_tokens": 2000}
        streams = [
            asyncio.create_task(sse_ended_at(http, "GET", f"{cluster.http(2)}/api/notifications/stream", revoked, opened[0])),
            asyncio.create_task(
                sse_ended_at(http, "POST", f"{cluster.http(1)}/api/assistant/stream", revoked, opened[1], json=reply)
            ),
            asyncio.create_task(
                sse_ended_at(http, "POST", f"{cluster.http(2)}/v1/chat/completions", kept, opened[2], json=completion)
            ),
        ]
        async with asyncio.timeout(10):
            for event in opened:
                await event.wait()
        await asyncio.sleep(0.3)

        prefix = revoked[:10]
        await asyncio.to_thread(cluster.manage, "revoke_tokens", "cred-revoked", "--prefix", prefix)
        revoked_at = time.time()

        async def assistant_closed() -> tuple[float, int | None]:
            try:
                async with asyncio.timeout(10):
                    while True:
                        frame = json.loads(await assistant.recv())
                        if frame["type"] == "ping":
                            await assistant.send('{"type":"pong"}')
            except ConnectionClosed as closed:
                return time.time(), closed.rcvd.code if closed.rcvd else None
            raise AssertionError("unreachable")

        async def room_closed() -> tuple[int | None, float]:
            return await room.close_code(timeout=10), time.time()

        (assistant_at, assistant_code), (room_code, room_at) = await asyncio.gather(assistant_closed(), room_closed())
        ended = await asyncio.gather(*streams)

    assert room_code == 4011 and assistant_code == 4011
    for moment in (room_at, assistant_at, *(at for at, _, _ in ended)):
        assert moment - revoked_at < 2.5, f"a connection ended {moment - revoked_at:.2f} s after the revocation"
    # The reply the revoked token started was stopped; the one the kept token started
    # runs on (its response ended with the others), and the user resumes it with that
    # token from any worker.
    assert "[DONE]" not in ended[2][1], "every SSE response of the user ended, the kept token's too"
    stopped = await final_event(cluster, 0, ended[1][2], kept)
    assert stopped["event"] == "done" and stopped["data"]["finish_reason"] == "cancelled"
    assert 0 < stopped["data"]["usage"]["completion_tokens"] < 2000
    ran_on = await final_event(cluster, 0, ended[2][2], kept)
    assert ran_on["event"] == "done" and ran_on["data"]["finish_reason"] == "length"
