"""The assistant WebSocket in process."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from config.asgi import application
from tests.support.asgi_client import BearerClient

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
TIMEOUT = 5


def socket(token: str | None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return WebsocketCommunicator(application, f"/ws/assistant/{query}", headers=headers)


async def until_end(ws: WebsocketCommunicator) -> list[dict]:
    frames: list[dict] = []
    async with asyncio.timeout(TIMEOUT):
        while not frames or frames[-1]["type"] != "ai_stream_end":
            frames.append(await ws.receive_json_from(timeout=TIMEOUT))
    return frames


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_a_reply_streams_as_chunks_then_ends(token):
    ws = socket(token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "user_message", "content": "red green blue", "conversation_id": None, "max_tokens": None})
    frames = await until_end(ws)
    start, typing, *chunks, end = frames
    assert start["type"] == "conversation_start" and start["stream_id"] and start["conversation_id"]
    assert typing == {"type": "typing"}
    assert [(c["index"], c["content"]) for c in chunks] == [(0, "red "), (1, "green "), (2, "blue ")]
    assert all(c["type"] == "ai_stream_chunk" and c["stream_id"] == start["stream_id"] for c in chunks)
    assert end == {
        "type": "ai_stream_end",
        "stream_id": start["stream_id"],
        "finish_reason": "stop",
        "content": "red green blue ",
    }
    await ws.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_reconnecting_with_the_conversation_sends_its_history_first(token):
    ws = socket(token)
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "remember me", "max_tokens": 2})
    frames = await until_end(ws)
    await ws.disconnect()
    await asyncio.sleep(0.2)
    again = socket(token, f"?conversation_id={frames[0]['conversation_id']}")
    await again.connect()
    history = await again.receive_json_from(timeout=TIMEOUT)
    assert history == {
        "type": "history",
        "messages": [{"role": "user", "content": "remember me"}, {"role": "assistant", "content": "remember me "}],
    }
    await again.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=30)
async def test_cancel_frame_stops_the_reply_while_it_streams(token):
    ws = socket(token)
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "on and on", "max_tokens": 500})
    await ws.receive_json_from(timeout=TIMEOUT)  # conversation_start
    await asyncio.sleep(0.2)
    await ws.send_json_to({"type": "cancel"})
    frames = await until_end(ws)
    assert frames[-1]["finish_reason"] == "cancelled"
    assert len(frames) < 100
    await ws.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=20)
async def test_a_dropped_socket_resumes_the_stream_after_an_index(token):
    ws = socket(token)
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "a b c d e f g h", "max_tokens": 12})
    start = await ws.receive_json_from(timeout=TIMEOUT)
    seen: list[int] = []
    while len(seen) < 3:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "ai_stream_chunk":
            seen.append(frame["index"])
    await ws.disconnect()
    later = socket(token)
    await later.connect()
    await later.send_json_to({"type": "resume", "stream_id": start["stream_id"], "after": seen[-1]})
    frames = await until_end(later)
    assert [f["index"] for f in frames[:-1]] == list(range(seen[-1] + 1, 12))
    assert frames[-1]["finish_reason"] == "length"
    await later.disconnect()


async def test_unauthenticated_socket_closes_4001():
    ws = socket(None)
    assert (await ws.connect())[0]
    assert (await ws.receive_output(timeout=TIMEOUT))["code"] == 4001


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{", "bad_json"),
        ("[]", "bad_frame"),
        ('{"type":"sing"}', "bad_frame"),
        ('{"type":"user_message","content":""}', "bad_request"),
        ('{"type":"user_message","content":"x","max_tokens":-1}', "bad_request"),
        ('{"type":"resume","stream_id":"nope","after":0}', "not_found"),
        ('{"type":"resume","stream_id":5}', "bad_frame"),
    ],
)
async def test_bad_frames_get_errors_and_the_socket_stays_open(token, frame, code):
    ws = socket(token)
    await ws.connect()
    await ws.send_to(text_data=frame)
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and error["code"] == code
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


async def test_a_user_banned_site_wide_cannot_start_a_reply_over_the_socket(token):
    from channels.db import database_sync_to_async
    from django.contrib.auth.models import User

    from chat.services.moderation import ban_create
    from streaming.models import Conversation

    await database_sync_to_async(lambda: ban_create(user=User.objects.get(username="alice"), room=None))()
    ws = socket(token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "user_message", "content": "hello"})
    frame = await ws.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "error" and frame["code"] == "banned"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}, "the socket stays open"
    assert await Conversation.objects.acount() == 0
    await ws.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_the_typed_events_come_as_frames_of_their_own_and_resume_by_index(token):
    """docs/protocol.md, "Events": a status, reasoning and sources before the chunks, each an
    ``ai_stream_<event>`` frame with the event's data and its ``index``, so that a resume
    after any frame gets exactly the rest."""
    ws = socket(token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "user_message", "content": "/sources /think red"})
    start, _typing, *frames, end = await until_end(ws)
    stream_id = start["stream_id"]
    assert [f["type"] for f in frames] == [
        "ai_stream_status",
        *["ai_stream_reasoning"] * 4,
        "ai_stream_sources",
        "ai_stream_chunk",
    ]
    assert frames[0] == {"type": "ai_stream_status", "stream_id": stream_id, "index": 0, "status": "thinking"}
    assert frames[1] == {"type": "ai_stream_reasoning", "stream_id": stream_id, "index": 1, "text": "Echoing "}
    assert frames[5] == {
        "type": "ai_stream_sources",
        "stream_id": stream_id,
        "index": 5,
        "sources": [{"title": "Results for red", "url": "https://example.com/search?q=red"}],
    }
    assert [f["index"] for f in frames] == list(range(7))
    assert end["finish_reason"] == "stop" and end["content"] == "red "
    await ws.disconnect()
    later = socket(token)
    await later.connect()
    await later.send_json_to({"type": "resume", "stream_id": stream_id, "after": 4})
    rest = await until_end(later)
    assert [f["type"] for f in rest] == ["ai_stream_sources", "ai_stream_chunk", "ai_stream_end"]
    await later.disconnect()


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_a_v1_streams_tool_call_and_tool_result_come_as_frames_with_their_call_index(token):
    """A /v1 stream resumed over the socket: the echo model's tool call (its id and name,
    then its arguments) and, in the next round, the tool result it answers."""
    client = BearerClient(token)
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    asked = [{"role": "user", "content": "call lookup"}]
    first = await client.post(
        "/v1/chat/completions", json.dumps({"model": "echo", "messages": asked, "tools": tools}), content_type="application/json"
    )
    call = first.json()["choices"][0]["message"]["tool_calls"][0]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "found"}
    second = await client.post(
        "/v1/chat/completions",
        json.dumps(
            {
                "model": "echo",
                "messages": [*asked, {"role": "assistant", "content": None, "tool_calls": [call]}, result],
                "tools": tools,
            }
        ),
        content_type="application/json",
    )
    ws = socket(token)
    await ws.connect()
    await ws.send_json_to({"type": "resume", "stream_id": first["X-Stream-Id"], "after": -1})
    frames = await until_end(ws)
    assert [{k: f[k] for k in ("type", "index", "call_index", "id", "name", "arguments")} for f in frames[:-1]] == [
        {"type": "ai_stream_tool_call", "index": 0, "call_index": 0, "id": call["id"], "name": "lookup", "arguments": ""},
        {"type": "ai_stream_tool_call", "index": 1, "call_index": 0, "id": None, "name": None, "arguments": "{}"},
    ]
    assert frames[-1]["finish_reason"] == "tool_calls"
    await ws.send_json_to({"type": "resume", "stream_id": second["X-Stream-Id"], "after": -1})
    frames = await until_end(ws)
    assert frames[0] == {
        "type": "ai_stream_tool_result",
        "stream_id": second["X-Stream-Id"],
        "index": 0,
        "tool_call_id": call["id"],
        "name": "lookup",
        "content": "found",
    }
    assert [f["content"] for f in frames[1:-1]] == ["found "]
    await ws.disconnect()
