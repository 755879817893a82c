"""The assistant in a room (docs/protocol.md, "The assistant in a room"), through the whole
ASGI stack with Channels' WebsocketCommunicator: the reply as every member sees it, its
deltas once each, Stop, removal, joining mid-reply, refusals, and the room setting."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client, override_settings

from chat.models import Message, Room
from chat.services.moderation import message_remove
from config.asgi import application
from tests.support.factories import make_room, make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_hub")]
TIMEOUT = 5
WORDS = " ".join(f"w{i}" for i in range(40))


@pytest.fixture
def tokens(transactional_db):
    owner = make_user("owner")
    Room.objects.create(slug="lobby", title="Lobby", created_by=owner, assistant=True, assistant_model="echo")
    make_room("quiet", "Quiet")
    tokens = {name: make_token(make_user(name, staff=name == "mod")) for name in ("alice", "bob", "mod")}
    tokens["owner"] = make_token(owner)
    return tokens


async def joined(token: str, room: str = "lobby", query: str = "") -> tuple[WebsocketCommunicator, list[dict]]:
    socket = WebsocketCommunicator(
        application, f"/ws/rooms/{room}/{query}", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    frames = [await socket.receive_json_from(timeout=TIMEOUT)]
    while frames[-1]["type"] != "presence":
        frames.append(await socket.receive_json_from(timeout=TIMEOUT))
    return socket, frames


async def next_of(socket: WebsocketCommunicator, kind: str, timeout: float = TIMEOUT) -> dict:
    while True:
        frame = await socket.receive_json_from(timeout=timeout)
        if frame["type"] == kind:
            return frame
        assert frame["type"] != "error", f"expected {kind}, got {frame}"


async def watch_reply(socket: WebsocketCommunicator, reply_id: int, content: str = "") -> tuple[str, dict]:
    """Read the reply's deltas until its message_done: the content they make (each delta
    exactly at the end of what came before: nothing skipped, nothing twice), and the end."""
    while True:
        frame = await socket.receive_json_from(timeout=TIMEOUT)
        if frame.get("id") != reply_id:
            continue
        if frame["type"] == "message_delta":
            assert frame["offset"] == len(content), (frame, len(content))
            content += frame["delta"]
        elif frame["type"] == "message_done":
            return content, frame
        else:
            raise AssertionError(f"unexpected frame for the reply: {frame}")


async def ask(socket: WebsocketCommunicator, content: str) -> tuple[dict, dict]:
    """Send a message; return its own frame and the reply's first frame."""
    await socket.send_json_to({"type": "message", "content": content, "nonce": "n1"})
    asked = await next_of(socket, "message")
    reply = await next_of(socket, "message")
    return asked, reply


async def test_every_member_sees_the_reply_grow_then_end_with_the_same_content(tokens):
    alice, _ = await joined(tokens["alice"])
    bob, _ = await joined(tokens["bob"])
    asked, reply = await ask(alice, f"@assistant {WORDS}")
    assert reply["user"] == "assistant" and reply["streaming"] is True and reply["reply_to"] == asked["id"]
    assert reply["seq"] == asked["seq"] + 1
    assert (await next_of(bob, "message"))["id"] == asked["id"]
    bob_reply = await next_of(bob, "message")
    assert bob_reply["id"] == reply["id"] and bob_reply["streaming"] is True
    results = await asyncio.gather(
        watch_reply(alice, reply["id"], reply["content"]), watch_reply(bob, reply["id"], bob_reply["content"])
    )
    for content, done in results:
        assert content == done["content"] == f"@assistant {WORDS} "
        assert done["finish_reason"] == "stop" and done["seq"] == reply["seq"] + 1
    stored = await database_sync_to_async(Message.objects.get)(pk=reply["id"])
    assert (stored.content, stored.streaming, stored.finish_reason) == (results[0][1]["content"], False, "stop")
    # Afterwards the reply is an ordinary message of the history, marked as ended.
    carol, frames = await joined(tokens["mod"])
    history = {frame["id"]: frame for frame in frames if frame["type"] == "message"}
    assert history[reply["id"]]["streaming"] is False and history[reply["id"]]["content"] == stored.content
    assert "streaming" not in history[asked["id"]]
    for socket in (alice, bob, carol):
        await socket.disconnect()


async def test_a_room_without_the_assistant_only_stores_the_message(tokens):
    alice, _ = await joined(tokens["alice"], room="quiet")
    await alice.send_json_to({"type": "message", "content": "@assistant hello", "nonce": "n1"})
    await next_of(alice, "message")
    assert await alice.receive_nothing(timeout=0.5)
    assert await database_sync_to_async(Message.objects.filter(user__username="assistant").count)() == 0
    await alice.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=30)
async def test_one_reply_at_a_time_and_stop_by_the_asker_keeps_what_was_written(tokens):
    alice, _ = await joined(tokens["alice"])
    bob, _ = await joined(tokens["bob"])
    _, reply = await ask(alice, f"@assistant {WORDS}")
    await bob.send_json_to({"type": "message", "content": "@Assistant me too", "nonce": "second"})
    busy = await next_of(bob, "error")
    assert (busy["code"], busy["nonce"]) == ("busy", "second")
    # Bob is neither the asker, the owner nor staff.
    await bob.send_json_to({"type": "stop", "id": reply["id"], "nonce": "s1"})
    forbidden = await next_of(bob, "error")
    assert (forbidden["code"], forbidden["nonce"]) == ("forbidden", "s1")
    first = await next_of(alice, "message_delta")
    await alice.send_json_to({"type": "stop", "id": reply["id"]})
    stopped_at = asyncio.get_running_loop().time()
    content, done = await watch_reply(alice, reply["id"], first["delta"])
    assert asyncio.get_running_loop().time() - stopped_at < 1.0 + 0.5, "within a second, plus this test's reading"
    assert done["finish_reason"] == "cancelled" and content == done["content"]
    assert 0 < len(content) < len(f"@assistant {WORDS} ")
    stored = await database_sync_to_async(Message.objects.get)(pk=reply["id"])
    assert (stored.content, stored.finish_reason) == (content, "cancelled")
    for socket in (alice, bob):
        await socket.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=30)
async def test_a_member_joining_mid_reply_gets_the_content_so_far_then_the_rest(tokens):
    alice, _ = await joined(tokens["alice"])
    _, reply = await ask(alice, f"@assistant {WORDS}")
    for _ in range(5):
        await next_of(alice, "message_delta")
    bob, frames = await joined(tokens["bob"], query=f"?last_id={reply['id']}")
    [joined_reply] = [frame for frame in frames if frame.get("id") == reply["id"]]
    assert joined_reply["type"] == "message" and joined_reply["streaming"] is True
    assert len(joined_reply["content"]) >= len("@assistant w0 w1 w2 ")
    assert frames.index(joined_reply) < [frame["type"] for frame in frames].index("synced")
    content, done = await watch_reply(bob, reply["id"], joined_reply["content"])
    assert content == done["content"] == f"@assistant {WORDS} "
    for socket in (alice, bob):
        await socket.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=30)
async def test_a_moderator_removing_a_streaming_reply_stops_it_and_nothing_more_comes(tokens):
    alice, _ = await joined(tokens["alice"])
    _, reply = await ask(alice, f"@assistant {WORDS}")
    await next_of(alice, "message_delta")
    moderator = await database_sync_to_async(User.objects.get)(username="mod")
    message = await database_sync_to_async(Message.objects.get)(pk=reply["id"])
    assert await database_sync_to_async(message_remove)(message=message, removed_by=moderator)
    while (frame := await alice.receive_json_from(timeout=TIMEOUT))["type"] != "message_deleted":
        assert frame["type"] == "message_delta"
    assert frame["id"] == reply["id"]
    assert await alice.receive_nothing(timeout=1.0)
    stored = await database_sync_to_async(Message.objects.get)(pk=reply["id"])
    assert (stored.streaming, stored.finish_reason, stored.removed_at is not None) == (False, "cancelled", True)
    # The room is free again.
    _, second = await ask(alice, "@assistant again")
    assert second["streaming"] is True
    await alice.disconnect()


async def test_a_resume_after_the_end_gets_the_end(tokens):
    alice, _ = await joined(tokens["alice"])
    _, reply = await ask(alice, "@assistant short one")
    _, done = await watch_reply(alice, reply["id"], reply["content"])
    await alice.disconnect()
    again, frames = await joined(tokens["alice"], query=f"?last_seq={reply['seq']}")
    assert [frame for frame in frames if frame.get("id") == reply["id"]] == [done]
    await again.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_TOKENS_PER_DAY=1)
async def test_a_refused_reply_is_the_askers_error_alone_and_no_message(tokens):
    alice, _ = await joined(tokens["alice"])
    bob, _ = await joined(tokens["bob"])
    _, reply = await ask(alice, "@assistant spend it")  # the first fits; it uses up the day's budget
    await watch_reply(alice, reply["id"], reply["content"])
    await alice.send_json_to({"type": "message", "content": "@assistant more", "nonce": "over"})
    await next_of(alice, "message")
    refused = await next_of(alice, "error")
    assert (refused["code"], refused["nonce"]) == ("budget_exceeded", "over")
    assert await alice.receive_nothing(timeout=0.5)
    frames = []
    while not await bob.receive_nothing(timeout=0.3):
        frames.append(await bob.receive_json_from())
    assert not any(frame["type"] == "error" or frame.get("user") == "assistant" for frame in frames[-2:])
    assert await database_sync_to_async(Message.objects.filter(user__username="assistant").count)() == 1
    for socket in (alice, bob):
        await socket.disconnect()


def _patch(client: Client, token: str, slug: str, body: object) -> tuple[int, dict]:
    response = client.patch(
        f"/api/rooms/{slug}", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    return response.status_code, response.json()


async def test_the_owner_or_staff_turn_the_assistant_on_with_a_served_model(tokens):
    def patch_all() -> None:
        client = Client()
        status, room = _patch(client, tokens["owner"], "lobby", {"assistant": False})
        assert status == 200 and (room["assistant"], room["assistant_model"]) == (False, "echo")
        assert _patch(client, tokens["alice"], "lobby", {"assistant": True})[0] == 403
        status, error = _patch(client, tokens["owner"], "lobby", {"assistant": True, "assistant_model": "gpt-nothing"})
        assert status == 400 and "assistant_model" in error["error"]["detail"]
        assert _patch(client, tokens["owner"], "lobby", {"assistant": "yes"})[0] == 400
        status, room = _patch(client, tokens["mod"], "quiet", {"assistant": True, "assistant_model": "echo"})
        assert status == 200 and room["assistant"] is True
        assert _patch(client, tokens["owner"], "nowhere", {"assistant": True})[0] == 404
        signup = client.post(
            "/accounts/signup/", {"username": "Assistant", "password1": "a-L0ng-pass!", "password2": "a-L0ng-pass!"}
        )
        assert signup.status_code == 200 and b"reserved" in signup.content
        assert not User.objects.filter(username="Assistant").exists()

    await database_sync_to_async(patch_all)()


@override_settings(LLM_TOKEN_DELAY_MS=10)
async def test_reasoning_streams_beside_the_reply_and_a_joiner_gets_it_so_far(tokens):
    alice, _ = await joined(tokens["alice"])
    _, reply = await ask(alice, "/think @assistant one two three four five six")
    reasoning, kinds = "", []
    while (frame := await next_of(alice, "message_reasoning"))["offset"] == len(reasoning):
        reasoning += frame["delta"]
        if reasoning.startswith("Echoing these words: @assistant"):
            break
    bob, frames = await joined(tokens["bob"], query=f"?last_id={reply['id']}")
    [seen] = [frame for frame in frames if frame.get("id") == reply["id"]]
    assert seen["reasoning"].startswith(reasoning), "the reasoning so far, in the reply's frame"
    content, done = "", None
    while done is None:
        frame = await alice.receive_json_from(timeout=TIMEOUT)
        kinds.append(frame["type"])
        if frame["type"] == "message_reasoning":
            assert frame["offset"] == len(reasoning)
            reasoning += frame["delta"]
        elif frame["type"] == "message_delta":
            assert frame["offset"] == len(content)
            content += frame["delta"]
        elif frame["type"] == "message_done":
            done = frame
    assert reasoning.split() == ["Echoing", "these", "words:", "@assistant", "one", "two", "three", "four", "five", "six"]
    assert content == done["content"] == "@assistant one two three four five six "
    assert "message_reasoning" not in kinds[kinds.index("message_delta") :], "reasoning first, then the answer"
    for socket in (alice, bob):
        await socket.disconnect()
