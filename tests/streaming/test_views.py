"""SSE endpoints in process (Django's AsyncClient, the in-process log)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings

from chat.services.moderation import ban_create
from streaming.models import ConversationMessage
from tests.support.asgi_client import BearerClient, read_all
from tests.support.eventlog import logged_events
from tests.support.factories import make_token, make_user
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def client_for(token: str) -> AsyncClient:
    return BearerClient(token)


async def start(client: AsyncClient, **body):
    return await client.post("/api/assistant/stream", json.dumps(body), content_type="application/json")


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_stream_sends_start_tokens_done_with_ids_and_headers(token):
    response = await start(client_for(token), message="one two three")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    stream_id = response["X-Stream-Id"]
    events = parse_events(await read_all(response))
    assert [e["event"] for e in events] == ["start", "token", "token", "token", "done"]
    assert events[0]["data"]["stream_id"] == stream_id and events[0]["id"] == f"{stream_id}:0"
    assert [e["data"] for e in events[1:4]] == [{"index": i, "token": w + " "} for i, w in enumerate(["one", "two", "three"])]
    assert [e["id"] for e in events[1:4]] == [f"{stream_id}:{i}" for i in (1, 2, 3)]
    # 14 characters: four tokens at four characters a token (count_tokens), though three words.
    assert events[4]["data"] == {"finish_reason": "stop", "content": "one two three ", "usage": {"completion_tokens": 4}}
    await asyncio.sleep(0.2)  # the producer stores the reply after the final event
    stored = await database_sync_to_async(list)(
        ConversationMessage.objects.order_by("id").values_list("role", "content", "finish_reason")
    )
    assert stored == [("user", "one two three", ""), ("assistant", "one two three ", "stop")]


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_the_next_message_carries_the_conversation(token):
    client = client_for(token)
    first = parse_events(await read_all(await start(client, message="hi", max_tokens=2)))
    conversation_id = first[0]["data"]["conversation_id"]
    second = parse_events(await read_all(await start(client, message="again", conversation_id=conversation_id)))
    assert second[0]["data"]["conversation_id"] == conversation_id
    await asyncio.sleep(0.2)
    roles = await database_sync_to_async(list)(
        ConversationMessage.objects.filter(conversation_id=conversation_id).values_list("role", flat=True)
    )
    assert roles == ["user", "assistant", "user", "assistant"]


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_resume_with_last_event_id_gives_exactly_the_rest(token):
    client = client_for(token)
    response = await start(client, message="a b c d e f")
    stream_id = response["X-Stream-Id"]
    await read_all(response)
    resumed = await client.get(f"/api/streams/{stream_id}/events", headers={"Last-Event-ID": f"{stream_id}:4"})
    events = parse_events(await read_all(resumed))
    assert [e["data"].get("token") for e in events[:-1]] == ["e ", "f "]
    assert events[-1]["event"] == "done"
    by_query = await client.get(f"/api/streams/{stream_id}/events?last_event_id={stream_id}:6")
    assert [e["event"] for e in parse_events(await read_all(by_query))] == ["done"]
    from_start = await client.get(f"/api/streams/{stream_id}/events")
    assert parse_events(await read_all(from_start))[0]["event"] == "start"


# Last-Event-IDs that name no position of the stream: ``{id}`` is its id.
MALFORMED_STREAM_IDS = ["garbage", "3", "{id}", "{id}:", "{id}:-1", "{id}:x", "{id}:3:4", "{id}:\u00b2", "{id}: 3", "other:3"]


@override_settings(LLM_TOKEN_DELAY_MS=0)
@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("last", MALFORMED_STREAM_IDS)
async def test_a_malformed_last_event_id_is_a_400_that_shows_a_valid_one(token, last, how):
    client = client_for(token)
    response = await start(client, message="one two three")
    stream_id = response["X-Stream-Id"]
    await read_all(response)
    value = last.format(id=stream_id)
    url = f"/api/streams/{stream_id}/events"
    if how == "header":
        refused = await client.get(url, headers={"Last-Event-ID": value})
    else:
        refused = await client.get(url, {"last_event_id": value})
    assert refused.status_code == 400, f"{value!r} was taken as a position"
    error = refused.json()["error"]
    assert error["code"] == "invalid_last_event_id" and f"'{stream_id}:3'" in error["detail"], error


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_a_reader_at_or_past_the_end_of_a_finished_stream_gets_204(token):
    """Events 0 (start) to 4 (done): a reader that has done (or claims more) is told to
    stop (no keepalives from a stream that will never say anything again); one that
    missed done gets it and the response closes."""
    client = client_for(token)
    response = await start(client, message="one two three")
    stream_id = response["X-Stream-Id"]
    assert parse_events(await read_all(response))[-1]["id"] == f"{stream_id}:4"
    for seen in (4, 5, 10**6):
        ended = await client.get(f"/api/streams/{stream_id}/events", headers={"Last-Event-ID": f"{stream_id}:{seen}"})
        assert ended.status_code == 204 and ended["Cache-Control"] == "no-cache"
        assert not ended.streaming and ended.content == b""
    missed = await client.get(f"/api/streams/{stream_id}/events", headers={"Last-Event-ID": f"{stream_id}:3"})
    assert [e["event"] for e in parse_events(await read_all(missed, timeout=3))] == ["done"]


@override_settings(LLM_TOKEN_DELAY_MS=50)
async def test_a_running_stream_is_never_204(token):
    client = client_for(token)
    response = await start(client, message="word", max_tokens=20)
    stream_id = response["X-Stream-Id"]
    ahead = await client.get(f"/api/streams/{stream_id}/events", headers={"Last-Event-ID": f"{stream_id}:1"})
    assert ahead.status_code == 200
    events = parse_events(await read_all(ahead))
    assert events[0]["id"] == f"{stream_id}:2" and events[-1]["event"] == "done"
    await read_all(response)


@override_settings(LLM_TOKEN_DELAY_MS=50)
async def test_cancel_stops_the_stream_and_stores_the_partial_reply(token):
    client = client_for(token)
    response = await start(client, message="word", max_tokens=1000)
    stream_id = response["X-Stream-Id"]
    await asyncio.sleep(0.3)
    cancel = await client.post(f"/api/streams/{stream_id}/cancel")
    assert cancel.status_code == 202
    events = parse_events(await read_all(response, timeout=3))
    done = events[-1]
    assert done["event"] == "done" and done["data"]["finish_reason"] == "cancelled"
    assert 0 < done["data"]["usage"]["completion_tokens"] < 1000
    await asyncio.sleep(0.2)
    stored = await database_sync_to_async(ConversationMessage.objects.get)(role="assistant")
    assert stored.finish_reason == "cancelled" and stored.content == done["data"]["content"]


async def test_streams_are_private_to_their_owner(token):
    client = client_for(token)
    response = await start(client, message="secret")
    stream_id = response["X-Stream-Id"]
    await read_all(response)
    other = client_for(await database_sync_to_async(lambda: make_token(make_user("mallory")))())
    assert (await other.get(f"/api/streams/{stream_id}/events")).status_code == 404
    assert (await other.post(f"/api/streams/{stream_id}/cancel")).status_code == 404
    assert (await client.get(f"/api/streams/{'0' * 32}/events")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "bad_request"),
        ({"message": ""}, 400, "bad_request"),
        ({"message": 5}, 400, "bad_request"),
        ({"message": "hi", "max_tokens": 0}, 400, "bad_request"),
        ({"message": "hi", "max_tokens": "5"}, 400, "bad_request"),
        ({"message": "hi", "conversation_id": 3}, 400, "bad_request"),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, 404, "not_found"),
    ],
)
async def test_bad_requests_get_json_errors(token, body, status, code):
    response = await start(client_for(token), **body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_unauthenticated_is_401_json():
    response = await AsyncClient().post("/api/assistant/stream", "{}", content_type="application/json")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


@override_settings(LLM_MAX_CONCURRENT=1, LLM_TOKEN_DELAY_MS=50)
async def test_concurrency_cap_answers_busy(token):
    client = client_for(token)
    first = await start(client, message="slow", max_tokens=100)
    second = await start(client, message="too many")
    assert second.status_code == 429 and second.json()["error"]["code"] == "busy"
    await client.post(f"/api/streams/{first['X-Stream-Id']}/cancel")
    await read_all(first)
    await asyncio.sleep(0.1)
    third = await start(client, message="now there is room")
    assert third.status_code == 200
    await read_all(third)


@override_settings(LLM_TOKENS_PER_DAY=5, LLM_TOKEN_DELAY_MS=0)
async def test_daily_token_budget(token):
    client = client_for(token)
    await read_all(await start(client, message="a b c d e f"))
    await asyncio.sleep(0.2)
    refused = await start(client, message="more")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"


@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_MAX_REPLY_CHARS=50_000)
async def test_a_reply_ends_with_length_past_the_size_cap_whatever_max_tokens_says(token):
    word = "w" * 10_000  # the echo model repeats it: 10,001 characters a token
    response = await start(client_for(token), message=word, max_tokens=100_000)
    assert response.status_code == 200
    events = parse_events(await read_all(response))
    done = events[-1]
    assert done["event"] == "done" and done["data"]["finish_reason"] == "length"
    # Nothing past the cap is written: the token that crosses it is cut short.
    assert len(done["data"]["content"]) == 50_000
    assert "".join(e["data"]["token"] for e in events if e["event"] == "token") == done["data"]["content"]
    assert done["data"]["usage"]["completion_tokens"] == 12_500, "50,000 characters at four a token"


@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_MAX_REPLY_CHARS=10**9, LLM_STREAM_MAX_CHARS=40_000)
async def test_a_generation_stops_at_the_logs_character_cap_whatever_the_reply_cap_says(token):
    word = "w" * 999  # 1,000 characters a token: 2,000 of them would be 2,000,000
    response = await start(client_for(token), message=word, max_tokens=2_000)
    events = parse_events(await read_all(response))
    done = events[-1]
    assert done["event"] == "done" and done["data"]["finish_reason"] == "length"
    assert len(done["data"]["content"]) == 40_000
    tokens = [e for e in await logged_events(response["X-Stream-Id"]) if e.kind == "token"]
    assert sum(len(e.data["token"]) for e in tokens) == 40_000 and len(tokens) == 40
    await asyncio.sleep(0.2)
    stored = await database_sync_to_async(ConversationMessage.objects.get)(role="assistant")
    assert len(stored.content) == 40_000 and stored.finish_reason == "length"


@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_STREAM_MAX_EVENTS=100)
async def test_a_generation_stops_at_the_logs_event_cap(token):
    response = await start(client_for(token), message="a", max_tokens=1_000)
    events = parse_events(await read_all(response))
    assert events[-1]["event"] == "done" and events[-1]["data"]["finish_reason"] == "length"
    assert [e["data"]["index"] for e in events if e["event"] == "token"] == list(range(100))
    assert len(await logged_events(response["X-Stream-Id"])) == 102, "start, 100 tokens, done"


async def test_a_user_banned_site_wide_cannot_start_a_reply(token):
    def ban_alice():
        ban_create(user=User.objects.get(username="alice"), room=None, reason="spam")

    # A start a moment before: this worker remembers that alice was not banned (chat.ban_cache).
    assert parse_events(await read_all(await start(client_for(token), message="hi")))[-1]["event"] == "done"
    for _ in range(250):  # the turn and the reply are stored just after "done"; within 5 s
        if await ConversationMessage.objects.acount() == 2:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the reply before the ban was not stored")
    await database_sync_to_async(ban_alice)()
    refused = await start(client_for(token), message="hello")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    assert await ConversationMessage.objects.acount() == 2, "nothing stored of the refused start"
    assert (await client_for(token).get("/api/conversations/")).status_code == 200, "reading still works"
