"""The assistant in a room across three real daphne workers and a real Redis
(docs/protocol.md, "The assistant in a room"): the echo model streams a word every 20 ms
(LLM_TOKEN_DELAY_MS), so a reply of 150 words takes about three seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import Cluster, RedisServer
from tests.support.rooms_api import new_room
from tests.support.wsclient import RoomClient, room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]
WORDS = 150
QUESTION = "@assistant " + " ".join(f"w{i}" for i in range(WORDS))
TIMEOUT = 20.0


def assistant_room(cluster: Cluster, owner: str) -> str:
    """A new room of ``owner``'s with the assistant on."""
    token = cluster.tokens[owner]
    slug = new_room(cluster, token)
    response = httpx.patch(
        f"{cluster.http(1)}/api/rooms/{slug}",
        json={"assistant": True, "assistant_model": "echo"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["assistant"] is True, response.text
    return slug


class ReplyWatch:
    """What one client saw of one reply: its content built from the frames, each delta
    checked to start exactly where the content so far ends."""

    def __init__(self, client: RoomClient) -> None:
        self.client = client
        self.reply: dict[str, Any] | None = None
        self.content = ""
        self.done: dict[str, Any] | None = None
        self.deleted = False

    def take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "message" and frame["user"] == "assistant":
            if self.reply is not None:
                assert frame["id"] == self.reply["id"] and frame["content"].startswith(self.content), frame
            self.reply, self.content = frame, frame["content"]
        elif self.reply is None or frame.get("id") != self.reply["id"]:
            return
        elif frame["type"] == "message_delta":
            assert self.done is None, f"a delta after the end: {frame}"
            assert frame["offset"] == len(self.content), (frame, len(self.content))
            self.content += frame["delta"]
        elif frame["type"] == "message_done":
            assert self.done is None, "the end twice"
            self.done = frame
        elif frame["type"] == "message_deleted":
            self.deleted = True

    async def until_end(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while self.done is None:
                self.take(await self.client.recv(timeout))
        return self.done

    async def until(self, predicate: Any, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.take(await self.client.recv(timeout))


async def joined(cluster: Cluster, worker: int, slug: str, user: str, query: str = "") -> tuple[Any, RoomClient]:
    manager = room_client(cluster.ws(worker, f"/ws/rooms/{slug}/{query}"), cluster.tokens[user])
    client = await manager.__aenter__()
    await client.sync()
    return manager, client


async def test_thirty_members_on_three_workers_a_late_joiner_and_a_reconnect_all_get_every_token_once(cluster: Cluster):
    slug = assistant_room(cluster, "user0")
    members = [await joined(cluster, index % 3, slug, f"user{index % 12}") for index in range(30)]
    watches = [ReplyWatch(client) for _, client in members]
    try:
        await members[0][1].say(QUESTION, nonce="ask")
        await watches[0].until(lambda: watches[0].reply is not None)
        # A member on another worker drops at about token 50 and resumes on a third worker.
        dropping = watches[1]
        await dropping.until(lambda: dropping.content.count(" ") >= 50)
        await members[1][0].__aexit__(None, None, None)
        assert dropping.reply is not None
        members[1] = await joined(cluster, 2, slug, "user1", f"?last_seq={dropping.reply['seq']}")
        dropping.client = members[1][1]
        for frame in dropping.client.frames:  # its resume: the reply so far, before synced
            dropping.take(frame)
        # A newcomer joins at about token 100, on the worker that is not producing.
        await watches[0].until(lambda: watches[0].content.count(" ") >= 100)
        late_manager = room_client(cluster.ws(1, f"/ws/rooms/{slug}/"), cluster.tokens["user11"])
        late_client = await late_manager.__aenter__()
        late = ReplyWatch(late_client)
        members.append((late_manager, late_client))
        hello = await late_client.recv()
        assert hello["type"] == "hello"
        while (frame := await late_client.recv()).get("type") != "synced":
            late.take(frame)
        assert late.reply is not None and late.reply["streaming"] is True, "the reply, before synced"
        assert late.content.count(" ") >= 100, f"joined at token 100 or later, got {late.content.count(' ')}"
        ends = await asyncio.gather(*(watch.until_end() for watch in [*watches, late]))
    finally:
        for manager, _ in members:
            await manager.__aexit__(None, None, None)
    expected = f"{QUESTION} "
    for watch, end in zip([*watches, late], ends, strict=True):
        assert watch.content == end["content"] == expected
        assert end["finish_reason"] == "stop"
    assert len({end["seq"] for end in ends}) == 1


async def test_stop_from_another_worker_ends_it_everywhere_within_a_second_and_one_reply_at_a_time(cluster: Cluster):
    slug = assistant_room(cluster, "user2")
    members = [await joined(cluster, worker, slug, user) for worker, user in ((0, "user3"), (1, "user4"), (2, "user2"))]
    watches = [ReplyWatch(client) for _, client in members]
    try:
        # Two questions at once on two workers: one reply, and busy for the other asker.
        await asyncio.gather(members[0][1].say("@assistant " + QUESTION, nonce="a"), members[1][1].say(QUESTION, nonce="b"))
        busy = None
        async with asyncio.timeout(TIMEOUT):
            while busy is None or watches[2].reply is None:
                for watch in watches:
                    frame = await watch.client.recv()
                    watch.take(frame)
                    if frame["type"] == "error":
                        assert frame["code"] == "busy" and frame["nonce"] in ("a", "b"), frame
                        busy = frame
                    if busy is not None and watches[2].reply is not None:
                        break
        await watches[2].until(lambda: watches[2].content.count(" ") >= 20)
        assert watches[2].reply is not None
        # The room's owner, on worker 2 (the reply runs on worker 0 or 1).
        await members[2][1].send({"type": "stop", "id": watches[2].reply["id"]})
        asked = time.monotonic()
        ends = await asyncio.gather(*(watch.until_end() for watch in watches))
        assert time.monotonic() - asked < 1.0 + 0.5, "within a second, plus this client's reading"
        await asyncio.gather(*(watch.client.quiet(0.5) for watch in watches))
    finally:
        for manager, _ in members:
            await manager.__aexit__(None, None, None)
    assert {end["finish_reason"] for end in ends} == {"cancelled"}
    assert {watch.content for watch in watches} == {ends[0]["content"]}
    assert 0 < ends[0]["content"].count(" ") < WORDS
    replies = [m for m in watches[0].client.messages if m["user"] == "assistant"]
    assert len(replies) == 1, "one reply for the two questions"


async def test_a_moderator_removing_a_streaming_reply_on_another_worker_ends_it_with_nothing_after(cluster: Cluster):
    moderator = cluster.mint_tokens("reply-mod", staff=True)["reply-mod"]
    slug = assistant_room(cluster, "user5")
    members = [await joined(cluster, worker, slug, "user5") for worker in range(3)]
    watches = [ReplyWatch(client) for _, client in members]
    try:
        await members[0][1].say(QUESTION)
        await watches[1].until(lambda: watches[1].content.count(" ") >= 10)
        assert watches[1].reply is not None
        reply_id = watches[1].reply["id"]
        removed = httpx.delete(
            f"{cluster.http(2)}/api/rooms/{slug}/messages/{reply_id}",
            headers={"Authorization": f"Bearer {moderator}"},
            timeout=10,
        )
        assert removed.status_code == 204, removed.text
        await asyncio.gather(*(watch.until(lambda watch=watch: watch.deleted) for watch in watches))
        await asyncio.gather(*(watch.client.quiet(1.5) for watch in watches))
        after = [[f for f in watch.client.frames if f.get("id") == reply_id][-1]["type"] for watch in watches]
    finally:
        for manager, _ in members:
            await manager.__aexit__(None, None, None)
    assert after == ["message_deleted"] * 3, "nothing after the removal"
    assert all(watch.done is None for watch in watches)


async def test_a_killed_producer_ends_the_reply_interrupted_on_every_other_worker_within_ten_seconds(cluster: Cluster):
    slug = assistant_room(cluster, "user6")
    asker_manager, asker = await joined(cluster, 0, slug, "user6")
    members = [await joined(cluster, worker, slug, "user7") for worker in (1, 2)]
    watches = [ReplyWatch(client) for _, client in members]
    try:
        await asker.say(QUESTION)
        await asyncio.gather(*(watch.until(lambda watch=watch: watch.content.count(" ") >= 10) for watch in watches))
        cluster.kill_worker(0)
        killed = time.monotonic()
        ends = await asyncio.gather(*(watch.until_end(timeout=15) for watch in watches))
        assert time.monotonic() - killed < 10
    finally:
        cluster.start_worker(0)
        with contextlib.suppress(Exception):  # its worker was killed under it
            await asker_manager.__aexit__(None, None, None)
        for manager, _ in members:
            await manager.__aexit__(None, None, None)
    assert {end["finish_reason"] for end in ends} == {"interrupted"}
    assert {watch.content for watch in watches} == {ends[0]["content"]}
    assert 0 < ends[0]["content"].count(" ") < WORDS


async def test_a_question_over_rest_starts_a_reply_and_a_refusal_comes_back_beside_the_message(cluster: Cluster):
    slug = assistant_room(cluster, "user8")
    manager, client = await joined(cluster, 0, slug, "user9")
    watch = ReplyWatch(client)
    headers = {"Authorization": f"Bearer {cluster.tokens['user8']}"}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            asked = await http.post(f"{cluster.http(2)}/api/rooms/{slug}/messages", json={"content": QUESTION}, headers=headers)
            assert asked.status_code == 201 and "assistant_error" not in asked.json(), asked.text
            await watch.until(lambda: watch.reply is not None)
            again = await http.post(f"{cluster.http(1)}/api/rooms/{slug}/messages", json={"content": QUESTION}, headers=headers)
        assert again.status_code == 201 and again.json()["assistant_error"]["code"] == "busy", again.text
        end = await watch.until_end()
    finally:
        await manager.__aexit__(None, None, None)
    assert watch.reply is not None and watch.reply["reply_to"] == asked.json()["id"]
    assert end["finish_reason"] == "stop" and watch.content == end["content"] == f"{QUESTION} "


@pytest.fixture(scope="module")
def upstream_rooms() -> Iterator[tuple[Cluster, FakeUpstream]]:
    """Two workers serving the echo model and a model of a fake OpenAI-compatible upstream."""
    upstream = FakeUpstream()
    redis = RedisServer()
    models = {"echo": {}, "fake": {"base_url": upstream.url, "api_key": "sk-upstream", "model": "fake-model"}}
    started = Cluster(redis, workers=2, env={"LLM_MODELS": json.dumps(models), "LLM_TIMEOUT_SECONDS": "2"})
    started.tokens = started.mint_tokens("user0", "user1")
    yield started, upstream
    started.stop()
    redis.stop()
    upstream.stop()


async def test_a_room_on_an_upstream_model_sends_the_room_as_named_turns_and_shows_its_failure(upstream_rooms):
    cluster, upstream = upstream_rooms
    token = cluster.tokens["user0"]
    slug = new_room(cluster, token)
    response = httpx.patch(
        f"{cluster.http(0)}/api/rooms/{slug}",
        json={"assistant": True, "assistant_model": "fake"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["assistant_model"] == "fake", response.text
    manager, client = await joined(cluster, 1, slug, "user1")
    watch = ReplyWatch(client)
    try:
        await client.say("hello everyone")
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(
                f"{cluster.http(0)}/api/rooms/{slug}/messages",
                json={"content": "@assistant through the fake upstream"},
                headers={"Authorization": f"Bearer {token}"},
            )
        end = await watch.until_end()
        assert (end["finish_reason"], watch.content) == ("stop", "@assistant through the fake upstream ")
        sent = upstream.requests[-1]["body"]
        assert sent["model"] == "fake-model" and sent["messages"][0]["role"] == "system"
        assert [(m["role"], m.get("name"), m["content"]) for m in sent["messages"][1:]] == [
            ("user", "user1", "hello everyone"),
            ("user", "user0", "@assistant through the fake upstream"),
        ]
        # The model fails: the reply ends with "error", for everyone, and the room is free again.
        await client.say("fail @assistant now")
        failed = ReplyWatch(client)
        end = await failed.until_end()
        assert end["finish_reason"] == "error"
    finally:
        await manager.__aexit__(None, None, None)
