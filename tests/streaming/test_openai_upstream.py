"""/v1/chat/completions against an ``openai`` upstream faked with httpx.MockTransport
(docs/protocol.md, "Chat Completions parameters"): what the upstream receives, as the
official ``openai`` SDK sends it, and what the client gets back of tool calls and reasoning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from config.asgi import application
from streaming import services
from streaming.backends import OpenAIBackend
from streaming.models import ConversationMessage
from tests.support.asgi_client import BearerClient, read_all
from tests.support.sse_parsing import parse_events

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
]

UPSTREAM = override_settings(
    LLM_BACKEND="openai", LLM_BASE_URL="http://upstream.test/v1", LLM_API_KEY="sk-up", LLM_MODEL="gpt-up", LLM_TOKEN_DELAY_MS=0
)
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
        },
    }
]


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "up", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def text_reply(*words: str) -> bytes:
    return sse(*(chunk({"content": word}) for word in words), chunk({}, "stop"))


class Upstream:
    """The fake upstream: records each request's JSON body and answers with ``reply``."""

    def __init__(self, reply: Callable[[dict[str, Any]], bytes]) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        return httpx.Response(200, content=self.reply(body), headers={"Content-Type": "text/event-stream"})


@pytest.fixture
def upstream(monkeypatch) -> Iterator[Callable[[Callable[[dict[str, Any]], bytes]], Upstream]]:
    """Installs a fake upstream as the backend of every generation started."""

    def install(reply: Callable[[dict[str, Any]], bytes]) -> Upstream:
        fake = Upstream(reply)
        monkeypatch.setattr(services, "get_backend", lambda *model: OpenAIBackend(transport=httpx.MockTransport(fake.handle)))
        return fake

    yield install


def sdk(http: httpx2.AsyncClient, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=token, http_client=http, max_retries=0)


@UPSTREAM
async def test_the_sdks_parameters_arrive_at_the_upstream_as_sent(token, upstream):
    fake = upstream(lambda body: text_reply("ok"))
    params: dict[str, Any] = {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "stop": ["\n\n", "END"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "user": "user-7",
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
    }
    messages: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        reply = await client.chat.completions.create(model="gpt-up", messages=messages, max_tokens=30, **params)
        assert reply.choices[0].message.content == "ok"
        stream = await client.chat.completions.create(
            model="gpt-up", messages=messages, max_completion_tokens=40, stream=True, **params
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "ok"
    expected = {"model": "gpt-up", "messages": messages, "stream": True, **params}
    assert fake.bodies[0] == {**expected, "max_tokens": 30}
    # The cap goes under the client's own name: newer OpenAI models refuse max_tokens.
    assert fake.bodies[1] == {**expected, "max_completion_tokens": 40}


@UPSTREAM
async def test_null_parameters_are_left_to_the_upstreams_defaults(token, upstream):
    fake = upstream(lambda body: text_reply("ok"))
    body = {"model": "gpt-up", "messages": [{"role": "user", "content": "hi"}], "temperature": None, "tools": None}
    response = await BearerClient(token).post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    assert fake.bodies == [{"model": "gpt-up", "messages": [{"role": "user", "content": "hi"}], "stream": True}]


@UPSTREAM
async def test_tool_and_tool_result_messages_pass_upstream_unchanged(token, upstream):
    fake = upstream(lambda body: text_reply("It is ", "sunny."))
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "weather in Oslo? "}, image]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky":"clear"}'},
    ]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        reply = await sdk(http, token).chat.completions.create(model="gpt-up", messages=messages, tools=TOOLS)
    assert reply.choices[0].message.content == "It is sunny."
    assert fake.bodies[0]["messages"] == messages


def tool_call_reply(body: dict[str, Any]) -> bytes:
    """Two tool calls, each split across several chunks as OpenAI sends them, after a
    little reasoning (vLLM's reasoning_content) and some text."""
    first = '{"city": "Oslo"}'
    second = '{"city": "Paris", "unit": "c"}'
    pieces: list[dict[str, Any]] = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "The user wants "}),
        chunk({"reasoning_content": "two cities."}),
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
                ]
            }
        ),
    ]
    pieces += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": first[i : i + 3]}}]}) for i in range(0, len(first), 3)
    ]
    pieces.append(
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
                ]
            }
        )
    )
    pieces += [
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": second[i : i + 4]}}]}) for i in range(0, len(second), 4)
    ]
    pieces.append(chunk({}, "tool_calls"))
    return sse(*pieces)


EXPECTED_CALLS = [
    ("call_a", "get_weather", '{"city": "Oslo"}'),
    ("call_b", "get_weather", '{"city": "Paris", "unit": "c"}'),
]


@UPSTREAM
async def test_tool_call_and_reasoning_deltas_reach_the_sdk_streamed_and_not(token, upstream):
    upstream(tool_call_reply)
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo and Paris"}]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        async with client.chat.completions.stream(model="gpt-up", messages=messages, tools=TOOLS) as stream:
            chunks = [event.chunk async for event in stream if event.type == "chunk"]
            final = await stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
        assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == EXPECTED_CALLS
        reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices)
        assert reasoning == "The user wants two cities."

        reply = await client.chat.completions.create(model="gpt-up", messages=messages, tools=TOOLS)
        message: Any = reply.choices[0].message
        assert reply.choices[0].finish_reason == "tool_calls" and message.content == "Checking."
        assert [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
            (call_id, "function", name, arguments) for call_id, name, arguments in EXPECTED_CALLS
        ]
        assert (message.model_extra or {}).get("reasoning_content") == "The user wants two cities."


@UPSTREAM
async def test_a_resumed_stream_replays_the_typed_events(token, upstream):
    upstream(tool_call_reply)
    client = BearerClient(token)
    body = {"model": "gpt-up", "messages": [{"role": "user", "content": "weather"}], "tools": TOOLS, "stream": True}
    first = await client.post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    stream_id = first["X-Stream-Id"]
    await read_all(first)
    replay = parse_events(await read_all(await client.get(f"/api/streams/{stream_id}/events")))
    kinds = [event["event"] for event in replay]
    assert kinds[:4] == ["start", "reasoning", "reasoning", "token"]
    assert kinds[-1] == "done" and set(kinds[4:-1]) == {"tool_call"}
    calls = [event["data"] for event in replay if event["event"] == "tool_call"]
    assert calls[0] == {"index": 0, "id": "call_a", "name": "get_weather", "arguments": ""}
    assert "".join(c["arguments"] for c in calls if c["index"] == 1) == '{"city": "Paris", "unit": "c"}'
    done = replay[-1]["data"]
    assert done["finish_reason"] == "tool_calls" and done["content"] == "Checking."
    assert done["reasoning"] == "The user wants two cities."
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in done["tool_calls"]] == EXPECTED_CALLS


@UPSTREAM
@override_settings(LLM_STREAM_MAX_EVENTS=6, LLM_STREAM_MAX_CHARS=10_000)
async def test_reasoning_and_tool_call_pieces_count_against_the_streams_cap(token, upstream):
    upstream(tool_call_reply)
    client = BearerClient(token)
    body = {"model": "gpt-up", "messages": [{"role": "user", "content": "weather"}], "tools": TOOLS, "stream": True}
    response = await client.post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    await read_all(response)
    replay = parse_events(await read_all(await client.get(f"/api/streams/{response['X-Stream-Id']}/events")))
    assert [event["event"] for event in replay] == ["start", "reasoning", "reasoning", "token", *["tool_call"] * 3, "done"]
    done = replay[-1]["data"]
    assert done["finish_reason"] == "length"
    assert done["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city'}}
    ]


def reply_with_usage(body: dict[str, Any]) -> bytes:
    """Text, then OpenAI's usage chunk (choices empty) when the request asked for it."""
    chunks = [chunk({"content": "counted"}), chunk({}, "stop")]
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(
            {
                "id": "up",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": 111, "completion_tokens": 22, "total_tokens": 133},
            }
        )
    return sse(*chunks)


@UPSTREAM
async def test_the_upstreams_usage_is_reported_and_stored_when_asked_for(token, upstream):
    fake = upstream(reply_with_usage)
    messages: list[Any] = [{"role": "user", "content": "count me"}]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        stream = await client.chat.completions.create(
            model="gpt-up", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
        plain = await client.chat.completions.create(model="gpt-up", messages=messages)
    assert fake.bodies[0]["stream_options"] == {"include_usage": True}
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages] == [(111, 22, 133)]
    assert "stream_options" not in fake.bodies[1]
    assert plain.usage is not None and (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (2, 2), "our estimate"
    await asyncio.sleep(0.2)  # the reply is stored after the final event
    stored = ConversationMessage.objects.filter(role="assistant").order_by("id").values_list("prompt_tokens", "completion_tokens")
    assert await database_sync_to_async(list)(stored) == [(111, 22), (2, 2)]
