"""A tool loop with the official ``openai`` SDK against the echo model (docs/protocol.md,
"Chat Completions parameters"): ``call <name>`` is answered with a call of that tool, the
tool's result is echoed back, streamed and not, with no upstream."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from django.test import override_settings

from config.asgi import application
from tests.support.asgi_client import BearerClient, read_all
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
]


def sdk(http: httpx2.AsyncClient, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=token, http_client=http, max_retries=0)


def run_tool(name: str, arguments: str) -> str:
    assert json.loads(arguments) == {}
    return {"get_time": "noon exactly", "get_weather": "sunny and warm"}[name]


async def tool_loop(client: openai.AsyncOpenAI, *, streamed: bool) -> tuple[list[Any], str]:
    """Two rounds, as an agent runs them: the model's tool call, our result, its answer."""
    messages: list[Any] = [
        {"role": "system", "content": "you may use tools"},
        {"role": "user", "content": "call get_weather now"},
    ]
    first: Any
    if streamed:
        async with client.chat.completions.stream(model="echo", messages=messages, tools=TOOLS) as stream:
            first = await stream.get_final_completion()
    else:
        first = await client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [("function", "get_weather", "{}")]
    assert calls[0].id.startswith("call_")
    messages.append(choice.message.model_dump(exclude_none=True))  # content null and tool_calls, as SDK users send it
    messages.append(
        {"role": "tool", "tool_call_id": calls[0].id, "content": run_tool(calls[0].function.name, calls[0].function.arguments)}
    )
    second: Any
    if streamed:
        async with client.chat.completions.stream(model="echo", messages=messages, tools=TOOLS) as stream:
            second = await stream.get_final_completion()
    else:
        second = await client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    return messages, second.choices[0].message.content or ""


@pytest.mark.parametrize("streamed", [False, True])
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_a_two_round_tool_loop_with_the_sdk(token, streamed):
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        messages, answer = await tool_loop(sdk(http, token), streamed=streamed)
    assert answer == "sunny and warm "
    assert messages[2]["role"] == "assistant" and messages[2]["tool_calls"][0]["function"]["name"] == "get_weather"


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_the_streamed_tool_call_has_openais_chunk_shape(token):
    body = {"model": "echo", "messages": [{"role": "user", "content": "call get_time"}], "tools": TOOLS, "stream": True}
    response = await BearerClient(token).post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    events = parse_events(await read_all(response))
    assert events[-1]["data"] == "[DONE]"
    deltas = [(e["data"]["choices"][0]["delta"], e["data"]["choices"][0]["finish_reason"]) for e in events[:-1]]
    assert deltas[0][0]["role"] == "assistant" and deltas[0][0]["content"] is None
    calls = [delta["tool_calls"] for delta, _ in deltas if "tool_calls" in delta]
    first, rest = calls[0][0], [entry for call in calls[1:] for entry in call]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_time"
    arguments = first["function"]["arguments"] + "".join(entry["function"]["arguments"] for entry in rest)
    assert arguments == "{}" and all(entry["index"] == 0 and "id" not in entry for entry in rest)
    assert deltas[-1] == ({}, "tool_calls")


@pytest.mark.parametrize(
    ("extra", "content"),
    [
        ({"tools": TOOLS, "tool_choice": "none"}, "call get_time"),  # tools offered, but not to be called
        ({"tools": TOOLS}, "call get_date"),  # not an offered tool
        ({}, "call get_time"),  # no tools at all
        ({"tools": TOOLS}, "please call get_time"),  # not at the start
    ],
)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_calls_only_an_offered_tool_when_asked(token, extra, content):
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        reply = await sdk(http, token).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": content}], **extra
        )
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == content + " "


@override_settings(LLM_TOKEN_DELAY_MS=0)
def assembled(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What an SDK makes of a stream of chunks: the message, its tool calls (pieces joined by
    index), the finish reason, the usage; the ids of the chunks that carry one, in order.

    A reader's batches decide how pieces are grouped into chunks (a run of pieces read at
    once is one chunk), so a replay may group them otherwise than the live reader did; what
    they add up to is the same."""
    message: dict[str, Any] = {"content": "", "tool_calls": {}}
    finish, usage, ids = None, None, []
    for event in events:
        if event["data"] == "[DONE]":
            continue
        if "id" in event:
            ids.append(event["id"])
        usage = event["data"].get("usage") or usage
        for choice in event["data"]["choices"]:
            delta = choice["delta"]
            message["role"] = delta.get("role", message.get("role"))
            message["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                known = message["tool_calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                known["id"] = call.get("id") or known["id"]
                known["name"] += call["function"].get("name") or ""
                known["arguments"] += call["function"].get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {"message": message, "finish_reason": finish, "usage": usage, "ids": ids, "done": events[-1]["data"]}


async def test_a_v1_stream_resumed_with_format_openai_gets_the_same_chunks(token):
    client = BearerClient(token)
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "call get_time"}],
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    plain_response = await client.post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    plain = parse_events(await read_all(plain_response))
    assert all("id" not in event for event in plain), "by default OpenAI's framing: data lines only"
    live_response = await client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json", headers={"X-Stream-Event-Ids": "1"}
    )
    stream_id = live_response["X-Stream-Id"]
    live = parse_events(await read_all(live_response))
    events = f"/api/streams/{stream_id}/events?format=openai"
    replayed = parse_events(await read_all(await client.get(events)))
    live_whole, replayed_whole = assembled(live), assembled(replayed)
    assert {**replayed_whole, "ids": None} == {**live_whole, "ids": None}, "from the start: the same reply, usage and [DONE]"
    assert replayed_whole["ids"][-1] == live_whole["ids"][-1] and replayed_whole["ids"] == sorted(
        set(replayed_whole["ids"]), key=lambda i: int(i.rsplit(":", 1)[1])
    ), "ids increase to the same last one"
    assert live_whole["message"]["tool_calls"][0]["name"] == "get_time"
    assert [e["data"] for e in live[-2:]] == [live[-2]["data"], "[DONE]"] and live[-2]["data"]["usage"][
        "completion_tokens"
    ] == 3  # "get_time{}"
    assert all(e["id"].startswith(f"{stream_id}:") for e in live[:-2]), "every chunk but usage and [DONE] names its position"

    rest = parse_events(await read_all(await client.get(events, headers={"Last-Event-ID": live[0]["id"]})))
    assert rest == live[1:], "after the first chunk: exactly the others, no second role"
    ended = await client.get(events, headers={"Last-Event-ID": live[-3]["id"]})
    assert ended.status_code == 204, "a reader that has the end is told to stop"
