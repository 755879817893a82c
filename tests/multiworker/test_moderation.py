"""Moderation through the staff API, heard on all three workers (docs/protocol.md, "The room protocol" and "Moderation").

Every test uses its own room and its own users (minted here; the cluster is shared)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages, new_room, post_message
from tests.support.wsclient import RoomClient, room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]

WORKERS = (0, 1, 2)
USERS = ("mod-author", "mod-reader", "mod-banned", "mod-room-banned", "mod-muted", "mod-locked")


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    minted = cluster.mint_tokens(*USERS)
    minted.update(cluster.mint_tokens("mod-staff", staff=True))
    return minted


async def staff_call(cluster: Cluster, tokens: dict[str, str], method: str, path: str, worker: int = 0, **kwargs):
    """A call of the staff API as mod-staff (a staff user, not a superuser)."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.request(
            method, f"{cluster.http(worker)}{path}", headers={"Authorization": f"Bearer {tokens['mod-staff']}"}, **kwargs
        )


async def closed_at(client: RoomClient) -> tuple[int | None, float]:
    code = await client.close_code(timeout=10)
    return code, time.time()


async def test_a_site_wide_ban_closes_every_worker_within_two_seconds_and_holds_until_lifted(cluster: Cluster, tokens):
    token = tokens["mod-banned"]
    slug = new_room(cluster, tokens["mod-author"])
    other = new_room(cluster, tokens["mod-author"])
    async with (
        room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), token) as zero,
        room_client(cluster.ws(1, f"/ws/rooms/{slug}/"), token) as one,
        room_client(cluster.ws(2, f"/ws/rooms/{other}/"), token) as two,
    ):
        for client in (zero, one, two):
            await client.sync()
        started = time.time()
        banning = asyncio.create_task(
            staff_call(cluster, tokens, "POST", "/api/moderation/bans", 1, json={"user": "mod-banned", "reason": "flooding"})
        )
        results = await asyncio.gather(*(closed_at(c) for c in (zero, one, two)))
        response = await banning
    assert response.status_code == 201, response.text
    ban = response.json()
    assert (ban["user"], ban["room"], ban["ends_at"], ban["reason"]) == ("mod-banned", None, None, "flooding")
    assert [code for code, _ in results] == [4003, 4003, 4003]
    slowest = max(at for _, at in results) - started
    assert slowest < 2, f"the last socket closed {slowest:.2f}s after the ban was requested"
    for worker in WORKERS:
        async with room_client(cluster.ws(worker, f"/ws/rooms/{slug}/"), token) as refused:
            assert await refused.close_code() == 4003, f"worker {worker} let a banned user in"
    assert post_message(cluster, 0, slug, token, "over REST then?").status_code == 403
    lifted = await staff_call(cluster, tokens, "DELETE", f"/api/moderation/bans/{ban['id']}", 2)
    assert lifted.status_code == 204
    for worker in WORKERS:
        async with room_client(cluster.ws(worker, f"/ws/rooms/{slug}/"), token) as welcome:
            await welcome.sync()


async def test_a_room_ban_closes_that_rooms_sockets_only(cluster: Cluster, tokens):
    token = tokens["mod-room-banned"]
    slug = new_room(cluster, tokens["mod-author"])
    other = new_room(cluster, tokens["mod-author"])
    async with (
        room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), token) as zero,
        room_client(cluster.ws(2, f"/ws/rooms/{slug}/"), token) as two,
        room_client(cluster.ws(1, f"/ws/rooms/{other}/"), token) as elsewhere,
    ):
        for client in (zero, two, elsewhere):
            await client.sync()
        response = await staff_call(
            cluster, tokens, "POST", "/api/moderation/bans", json={"user": "mod-room-banned", "room": slug, "minutes": 5}
        )
        assert response.status_code == 201, response.text
        assert response.json()["room"] == slug and response.json()["ends_at"]
        assert [await c.close_code(timeout=2) for c in (zero, two)] == [4003, 4003]
        await elsewhere.send({"type": "ping"})
        assert await elsewhere.until("pong", timeout=5) == {"type": "pong"}, "other rooms are not affected"


async def test_a_removal_reaches_every_worker_and_is_never_replayed(cluster: Cluster, tokens):
    author, reader = tokens["mod-author"], tokens["mod-reader"]
    slug = new_room(cluster, author)
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), reader) as zero,
        room_client(cluster.ws(1, path), reader) as one,
        room_client(cluster.ws(2, path), author) as two,
    ):
        for client in (zero, one, two):
            await client.sync()
        ids = [post_message(cluster, 0, slug, author, f"m{i}").json()["id"] for i in range(3)]
        for client in (zero, one, two):
            await client.wait_messages(3)
        response = await staff_call(cluster, tokens, "DELETE", f"/api/rooms/{slug}/messages/{ids[1]}", 1)
        assert response.status_code == 204
        for client in (zero, one, two):
            assert await client.until("message_deleted", timeout=2) == {"type": "message_deleted", "id": ids[1], "seq": 4}
    kept = [ids[0], ids[2]]
    for worker in WORKERS:
        async with room_client(cluster.ws(worker, f"{path}?last_id=0"), reader) as again:
            synced, _ = await again.sync()
            assert [m["id"] for m in again.messages] == kept, f"worker {worker} replayed a removed message"
            assert synced["last_id"] == ids[2]
        async with room_client(cluster.ws(worker, path), reader) as fresh:
            await fresh.sync()
            assert [m["id"] for m in fresh.messages] == kept
    assert [m["id"] for m in list_messages(cluster, slug, reader)] == kept


async def test_a_mute_yields_muted_errors_on_every_worker_until_lifted(cluster: Cluster, tokens):
    token = tokens["mod-muted"]
    slug = new_room(cluster, tokens["mod-author"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), token) as zero,
        room_client(cluster.ws(1, path), token) as one,
        room_client(cluster.ws(2, path), token) as two,
    ):
        clients = (zero, one, two)
        for client in clients:
            await client.sync()
        response = await staff_call(cluster, tokens, "POST", "/api/moderation/mutes", 2, json={"user": "mod-muted", "room": slug})
        assert response.status_code == 201, response.text
        for worker, client in enumerate(clients):
            await client.say("anyone?", nonce=f"muted-{worker}")
            error = await client.until("error", timeout=5)
            assert (error["code"], error["nonce"]) == ("muted", f"muted-{worker}"), f"worker {worker}: {error}"
        lifted = await staff_call(cluster, tokens, "DELETE", f"/api/moderation/mutes/{response.json()['id']}", 1)
        assert lifted.status_code == 204
        for worker, client in enumerate(clients):
            await client.say("back", nonce=f"back-{worker}")
            assert (await client.until("message", timeout=5, nonce=f"back-{worker}"))["content"] == "back"
    assert [m["content"] for m in list_messages(cluster, slug, token)] == ["back"] * 3


async def test_lock_and_notice_are_heard_on_every_worker(cluster: Cluster, tokens):
    token = tokens["mod-locked"]
    slug = new_room(cluster, tokens["mod-author"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), token) as zero,
        room_client(cluster.ws(1, path), token) as one,
        room_client(cluster.ws(2, path), token) as two,
    ):
        clients = (zero, one, two)
        for client in clients:
            await client.sync()
        locked = await staff_call(cluster, tokens, "POST", f"/api/rooms/{slug}/lock", 1, json={"locked": True})
        assert locked.status_code == 200 and locked.json()["locked"] is True
        for worker, client in enumerate(clients):
            assert await client.until("room_locked", timeout=2) == {"type": "room_locked", "locked": True}
            await client.say("hello?", nonce=f"locked-{worker}")
            error = await client.until("error", timeout=5)
            assert (error["code"], error["nonce"]) == ("room_locked", f"locked-{worker}")
        notice = await staff_call(cluster, tokens, "POST", f"/api/rooms/{slug}/notice", 2, json={"content": "Back soon"})
        assert notice.status_code == 202
        for client in clients:
            assert await client.until("notice", timeout=2) == {"type": "notice", "content": "Back soon"}
        unlocked = await staff_call(cluster, tokens, "POST", f"/api/rooms/{slug}/lock", 0, json={"locked": False})
        assert unlocked.json()["locked"] is False
        for client in clients:
            assert await client.until("room_locked", timeout=2) == {"type": "room_locked", "locked": False}


async def test_non_staff_get_403_from_every_moderation_endpoint(cluster: Cluster, tokens):
    slug = new_room(cluster, tokens["mod-author"])
    headers = {"Authorization": f"Bearer {tokens['mod-reader']}"}
    async with httpx.AsyncClient(base_url=cluster.http(1), headers=headers, timeout=10) as http:
        for method, path, body in [
            ("POST", "/api/moderation/bans", {"user": "mod-author"}),
            ("POST", "/api/moderation/mutes", {"user": "mod-author"}),
            ("DELETE", "/api/moderation/bans/1", None),
            ("DELETE", "/api/moderation/mutes/1", None),
            ("POST", f"/api/rooms/{slug}/lock", {"locked": True}),
            ("POST", f"/api/rooms/{slug}/notice", {"content": "hi"}),
        ]:
            response = await http.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
