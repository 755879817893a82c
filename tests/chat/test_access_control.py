"""What an attacker with a valid account can and cannot do (docs/security.md), in process:
other people's private rooms, direct messages, streams, conversations, notifications,
speaking as someone else, and the limits that do not care which address a request says
it comes from."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from chat.hub import get_hub
from chat.models import Message, Report, Room
from chat.services.messages import message_create
from chat.services.moderation import ban_create
from chat.services.rooms import dm_open, room_create
from chat.writer import get_writer
from config.asgi import application
from core.redis_clients import reset_in_process
from notifications.models import Notification
from notifications.services import notification_create
from tasks.runner import _local_runners
from tests.support.asgi_client import BearerClient, read_all
from tests.support.factories import make_room, make_token, make_user

TIMEOUT = 5


def api(user) -> Client:
    return Client(headers={"Authorization": f"Bearer {make_token(user)}"})


def post(client: Client, url: str, body: dict) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def socket(token: str, path: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {token}".encode())])


async def handshake_close_code(token: str, path: str) -> int:
    communicator = socket(token, path)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected, "the contract accepts, then closes with the code"
    output = await communicator.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"]


@pytest.fixture
def _fresh_limits():
    reset_in_process()
    yield
    reset_in_process()


# ---- private rooms and direct messages ----------------------------------------------------------
@pytest.mark.django_db
def test_a_third_person_gets_nothing_out_of_a_direct_message_room():
    """Every REST route and the page: 404 (the room does not exist for them), nothing written."""
    amy, ben, eve = make_user("amy"), make_user("ben"), make_user("eve")
    room, _ = dm_open(user=amy, other=ben)
    secret = message_create(room=room, user=amy, content="the secret")
    stranger = api(eve)
    assert room.slug not in [r["slug"] for r in stranger.get("/api/rooms/").json()["rooms"]]
    base = f"/api/rooms/{room.slug}"
    for response in (
        stranger.get(f"{base}/messages"),
        post(stranger, f"{base}/messages", {"content": "let me in"}),
        stranger.delete(f"{base}/messages/{secret.pk}"),
        post(stranger, f"{base}/messages/{secret.pk}/report", {"reason": "probe"}),
        stranger.get(f"{base}/members"),
        post(stranger, f"{base}/members", {"user": "eve"}),
        post(stranger, f"{base}/read", {"last_id": secret.pk}),
    ):
        assert response.status_code == 404, response.content
        assert b"the secret" not in response.content
    page = Client()
    page.force_login(eve)
    assert page.get(f"/rooms/{room.slug}/").status_code == 404
    # A member cannot bring a third person into a direct message either.
    assert post(api(amy), f"{base}/members", {"user": "eve"}).status_code == 400
    assert not Report.objects.filter(message=secret).exists()
    assert list(Message.objects.filter(room=room).values_list("content", "removed_at")) == [("the secret", None)]
    assert not room.memberships.filter(user=eve).exists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_third_persons_socket_to_a_direct_message_room_closes_4004():
    def setup():
        amy, ben = make_user("amy"), make_user("ben")
        room, _ = dm_open(user=amy, other=ben)
        return room.slug, make_token(make_user("eve")), make_token(make_user("mod", staff=True))

    slug, eve_token, staff_token = await database_sync_to_async(setup)()
    try:
        assert await handshake_close_code(eve_token, f"/ws/rooms/{slug}/") == 4004
        assert await handshake_close_code(staff_token, f"/ws/rooms/{slug}/") == 4004, "staff do not listen in either"
    finally:
        await get_hub().close()
        await get_writer().close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_an_outsider_cannot_have_a_private_room_summarised():
    def setup():
        owner = make_user("owner")
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        message_create(room=room, user=owner, content="the launch code is 0000")
        return make_token(make_user("outsider"))

    outsider = BearerClient(await database_sync_to_async(setup)())
    try:
        response = await outsider.post(
            "/api/tasks/", json.dumps({"kind": "summarize_room", "room": "club"}), content_type="application/json"
        )
        leaked = ""
        if response.status_code == 202:
            leaked = await read_all(await outsider.get(f"/api/tasks/{response.json()['id']}/events"))
        assert response.status_code == 404, f"an outsider's summary task was accepted; its events: {leaked[-300:]!r}"
    finally:
        runner = _local_runners.get(asyncio.get_running_loop())
        if runner is not None:
            await runner.close()


@pytest.mark.django_db
def test_a_task_page_does_not_show_the_title_of_a_room_its_owner_cannot_see():
    """Even if such a task exists (finding 1), its page names no private room."""
    from tasks.models import Task

    owner, outsider = make_user("owner"), make_user("outsider")
    room_create(slug="club", title="Plans for the merger", created_by=owner, private=True)
    task = Task.objects.create(owner=outsider, kind="summarize_room", params={"room": "club"})
    page = Client()
    page.force_login(outsider)
    response = page.get(f"/tasks/{task.pk}/")
    assert response.status_code == 200
    assert b"merger" not in response.content and b"/rooms/club/" not in response.content


# ---- site-wide bans -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_user_banned_site_wide_reads_but_cannot_create_rooms_open_dms_or_add_members():
    eve, amy, ben = make_user("eve"), make_user("amy"), make_user("ben")
    club = room_create(slug="club", title="Club", created_by=eve, private=True)
    dm_open(user=eve, other=amy)  # opened before the ban
    ban_create(user=eve, room=club, reason="room only")
    client = api(eve)
    # A ban from one room does not stop any of this...
    assert post(client, "/api/rooms/", {"slug": "eves-first", "title": "Mine"}).status_code == 201
    ban_create(user=eve, room=None, reason="spam")
    # ...a site-wide one does.
    for response in (
        post(client, "/api/rooms/", {"slug": "eves-second", "title": "Mine too"}),
        post(client, "/api/rooms/", {"slug": "eves-private", "title": "Hidden", "private": True}),
        post(client, "/api/dms/", {"user": "ben"}),
        post(client, "/api/dms/", {"user": "amy"}),
        post(client, "/api/rooms/club/members", {"user": "ben"}),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "banned"
    assert not Room.objects.filter(slug__in=["eves-second", "eves-private"]).exists()
    assert Room.objects.filter(direct_key__isnull=False).count() == 1, "no DM with ben"
    assert not club.memberships.filter(user=ben).exists()
    # Reading still works.
    assert client.get("/api/rooms/").status_code == 200
    assert client.get("/api/rooms/club/members").status_code == 200


# ---- speaking as someone else -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_author_is_always_the_authenticated_user_over_rest():
    alice, _bob = make_user("alice"), make_user("bob")
    make_room()
    response = post(api(alice), "/api/rooms/lobby/messages", {"content": "hello", "user": "bob", "user_id": _bob.pk})
    assert response.status_code == 201 and response.json()["user"] == "alice"
    assert list(Message.objects.values_list("user__username", flat=True)) == ["alice"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_author_is_always_the_authenticated_user_over_the_socket():
    def setup():
        make_room()
        make_user("bob")
        return make_token(make_user("alice"))

    token = await database_sync_to_async(setup)()
    communicator = socket(token, "/ws/rooms/lobby/")
    try:
        assert (await communicator.connect(timeout=TIMEOUT))[0]
        while (await communicator.receive_json_from(timeout=TIMEOUT))["type"] != "presence":
            pass
        await communicator.send_json_to({"type": "message", "content": "hi", "user": "bob", "nonce": "n1"})
        frame = await communicator.receive_json_from(timeout=TIMEOUT)
        while frame.get("type") != "message":
            frame = await communicator.receive_json_from(timeout=TIMEOUT)
        assert (frame["user"], frame["nonce"]) == ("alice", "n1")
        await communicator.disconnect()
    finally:
        await get_hub().close()
        await get_writer().close()
    authors = await database_sync_to_async(lambda: list(Message.objects.values_list("user__username", flat=True)))()
    assert authors == ["alice"]


# ---- other people's streams, conversations and notifications ----------------------------------------
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_someone_elses_stream_and_conversation_are_not_found_over_the_socket(_fresh_limits):
    def setup():
        return make_token(make_user("alice")), make_token(make_user("mallory"))

    alice_token, mallory_token = await database_sync_to_async(setup)()
    alice = BearerClient(alice_token)
    started = await alice.post(
        "/api/assistant/stream", json.dumps({"message": "my secret plan"}), content_type="application/json"
    )
    stream_id = started["X-Stream-Id"]
    body = await read_all(started)
    conversation_id = json.loads(body.split("data: ", 1)[1].split("\n", 1)[0])["conversation_id"]

    # Her conversation: the handshake closes 4004 before any history is sent.
    assert await handshake_close_code(mallory_token, f"/ws/assistant/?conversation_id={conversation_id}") == 4004
    mallory = socket(mallory_token, "/ws/assistant/")
    assert (await mallory.connect(timeout=TIMEOUT))[0]
    # Her stream: resume is not_found, and nothing of it is sent.
    await mallory.send_json_to({"type": "resume", "stream_id": stream_id, "after": -1})
    answer = await mallory.receive_json_from(timeout=TIMEOUT)
    assert (answer["type"], answer["code"]) == ("error", "not_found")
    # Her conversation as context for a new message: refused.
    await mallory.send_json_to({"type": "user_message", "content": "continue", "conversation_id": conversation_id})
    answer = await mallory.receive_json_from(timeout=TIMEOUT)
    assert (answer["type"], answer["code"]) == ("error", "not_found")
    assert await mallory.receive_nothing(timeout=0.3)
    await mallory.disconnect()
    # The same over SSE.
    refused = await BearerClient(mallory_token).post(
        "/api/assistant/stream",
        json.dumps({"message": "continue", "conversation_id": conversation_id}),
        content_type="application/json",
    )
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_notifications_are_read_and_marked_by_their_owner_only():
    def setup():
        nina, mallory = make_user("nina"), make_user("mallory")
        note = notification_create(user_id=nina.pk, kind="mention", data={"room": "lobby", "content": "for nina only"})
        return note.pk, make_token(mallory)

    note_id, mallory_token = await database_sync_to_async(setup)()
    mallory = BearerClient(mallory_token)
    listed = await mallory.get("/api/notifications/")
    assert listed.status_code == 200 and listed.json()["notifications"] == []
    for body in ({"ids": [note_id]}, {"up_to": note_id + 1000}):
        marked = await mallory.post("/api/notifications/read", json.dumps(body), content_type="application/json")
        assert marked.status_code == 200 and marked.json() == {"marked": 0}
    assert await Notification.objects.filter(pk=note_id, read_at__isnull=True).aexists()


# ---- limits are per account, whatever address a request claims ------------------------------------
@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_RATE_LIMIT=3, CHAT_RATE_WINDOW=60)
def test_the_rate_limit_counts_the_account_not_the_address_it_claims(_fresh_limits):
    """Nothing security-relevant keys on the client's address: changing REMOTE_ADDR or
    sending X-Forwarded-For does not buy a fresh allowance."""
    make_room()
    client = api(make_user("alice"))
    statuses = [
        client.post(
            "/api/rooms/lobby/messages",
            data=json.dumps({"content": f"m{i}"}),
            content_type="application/json",
            REMOTE_ADDR=f"10.0.0.{i + 1}",
            headers={"X-Forwarded-For": f"192.0.2.{i + 1}", "X-Real-IP": f"198.51.100.{i + 1}"},
        ).status_code
        for i in range(5)
    ]
    assert statuses == [201, 201, 201, 429, 429]
    assert Message.objects.count() == 3


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_MAX_CONCURRENT=10, LLM_TOKEN_DELAY_MS=50)
async def test_one_account_cannot_take_every_generation_slot(_fresh_limits):
    def setup():
        return make_token(make_user("mallory")), make_token(make_user("alice"))

    mallory_token, alice_token = await database_sync_to_async(setup)()
    mallory = BearerClient(mallory_token)
    hogs = []
    try:
        for _ in range(10):  # every slot, if she is allowed them
            response = await mallory.post(
                "/api/assistant/stream", json.dumps({"message": "hog", "max_tokens": 1000}), content_type="application/json"
            )
            if response.status_code == 200:
                hogs.append(response)
        alice = BearerClient(alice_token)
        answer = await alice.post(
            "/api/assistant/stream", json.dumps({"message": "hi", "max_tokens": 1}), content_type="application/json"
        )
        if answer.status_code == 200:
            await read_all(answer)
        assert answer.status_code == 200, f"alice got {answer.status_code} while mallory holds {len(hogs)} streams"
    finally:
        for response in hogs:
            await mallory.post(f"/api/streams/{response['X-Stream-Id']}/cancel")
            await read_all(response)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_one_account_cannot_fill_every_task_slot():
    from tasks.models import Task

    def setup():
        return make_token(make_user("mallory")), make_token(make_user("alice"))

    mallory_token, alice_token = await database_sync_to_async(setup)()
    mallory, alice = BearerClient(mallory_token), BearerClient(alice_token)
    hogs: list[int] = []
    try:
        for _ in range(8):  # the in-process runner's concurrency (a task worker's: TASK_CONCURRENCY)
            body = json.dumps({"kind": "countdown", "steps": 1, "interval_ms": 60_000})
            created = await mallory.post("/api/tasks/", body, content_type="application/json")
            if created.status_code == 202:  # a per-user cap would refuse some of them
                hogs.append(created.json()["id"])
        body = json.dumps({"kind": "countdown", "steps": 1, "interval_ms": 0})
        mine = (await alice.post("/api/tasks/", body, content_type="application/json")).json()["id"]
        async with asyncio.timeout(10):
            for _ in range(30):  # 3 s: an idle runner finishes it in milliseconds
                status = (await Task.objects.aget(pk=mine)).status
                if status == "succeeded":
                    break
                await asyncio.sleep(0.1)
        assert status == "succeeded", f"alice's task is still {status} behind {len(hogs)} of mallory's"
    finally:
        for task_id in hogs:
            await mallory.delete(f"/api/tasks/{task_id}")
        runner = _local_runners.get(asyncio.get_running_loop())
        if runner is not None:
            await runner.close()
