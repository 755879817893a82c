"""Private rooms and direct messages across three daphne workers and one Redis."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.processes import Cluster
from tests.support.sse_parsing import parse_events
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def people(cluster: Cluster) -> dict[str, str]:
    return cluster.mint_tokens("pr-owner", "pr-member", "dm-amy", "dm-ben")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_removal_from_a_private_room_closes_the_members_sockets_on_every_worker(cluster: Cluster, people):
    owner, member = people["pr-owner"], people["pr-member"]
    slug = f"pr-{int(time.time() * 1000) % 10**8}"
    assert (
        httpx.post(
            f"{cluster.http(0)}/api/rooms/", json={"slug": slug, "title": "P", "private": True}, headers=auth(owner)
        ).status_code
        == 201
    )
    assert (
        httpx.post(f"{cluster.http(1)}/api/rooms/{slug}/members", json={"user": "pr-member"}, headers=auth(owner)).status_code
        == 201
    )
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), member) as zero,
        room_client(cluster.ws(1, path), member) as one,
        room_client(cluster.ws(2, path), member) as two,
    ):
        for client in (zero, one, two):
            await client.sync()
        removed = httpx.delete(f"{cluster.http(2)}/api/rooms/{slug}/members/pr-member", headers=auth(owner))
        assert removed.status_code == 204
        started = time.monotonic()
        codes = await asyncio.gather(*(client.close_code(timeout=5) for client in (zero, one, two)))
        assert codes == [4003, 4003, 4003]
        assert time.monotonic() - started < 2
    async with room_client(cluster.ws(1, path), member) as again:
        assert await again.close_code() == 4004, "after removal the room does not exist for them"


async def test_a_direct_message_reaches_the_other_person_on_another_worker_or_their_notifications(cluster: Cluster, people):
    amy, ben = people["dm-amy"], people["dm-ben"]
    opened = httpx.post(f"{cluster.http(0)}/api/dms/", json={"user": "dm-ben"}, headers=auth(amy))
    assert opened.status_code in (200, 201)
    path = f"/ws/rooms/{opened.json()['slug']}/"
    async with room_client(cluster.ws(0, path), amy) as sender, room_client(cluster.ws(2, path), ben) as receiver:
        await sender.sync()
        await receiver.sync()
        await sender.say("are you there?")
        assert (await receiver.until("message"))["content"] == "are you there?"
    # Ben has left the room: the next one becomes a notification, on whichever worker he listens.
    with httpx.stream("GET", f"{cluster.http(1)}/api/notifications/stream", headers=auth(ben), timeout=15) as stream:
        await asyncio.sleep(0.5)
        posted = httpx.post(
            f"{cluster.http(2)}/api/rooms/{opened.json()['slug']}/messages", json={"content": "call me"}, headers=auth(amy)
        )
        assert posted.status_code == 201
        buffer, events = "", []
        for text in stream.iter_text():
            buffer += text
            events = [e for e in parse_events(buffer) if e.get("event") == "dm"]
            if events:
                break
    assert events[0]["data"] == {
        "room": opened.json()["slug"],
        "from": "dm-amy",
        "message_id": posted.json()["id"],
        "content": "call me",
    }
