"""Function tools and reasoning on /v1/responses (docs/protocol.md, "Responses API"), with
the official openai SDK: the echo model's tool loop, and an upstream's reasoning and tool
calls, split across many chunks, put back together by the SDK's own accumulator."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import openai
import pytest
from django.test import override_settings

from config.asgi import application
from streaming import services
from streaming.backends import OpenAIBackend

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "description": "The weather", "parameters": {"type": "object", "properties": {}}}
]


def sdk(http: httpx2.AsyncClient, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=token, http_client=http, max_retries=0)


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_a_tool_round_trip_with_the_echo_model(token):
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        async with client.responses.stream(model="echo", input="call get_weather", tools=TOOLS) as stream:
            kinds = [event.type async for event in stream]
            asked = await stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds and "response.output_text.delta" not in kinds
        assert [item.type for item in asked.output] == ["function_call"]
        call = asked.output[0]
        assert call.type == "function_call" and call.name == "get_weather" and call.arguments == "{}"
        assert asked.tools[0].type == "function" and asked.tools[0].name == "get_weather"
        retrieved = await client.responses.retrieve(asked.id)
        assert [item.to_dict() for item in retrieved.output] == [
            {k: v for k, v in item.to_dict().items() if k != "parsed_arguments"} for item in asked.output
        ]

        answered = await client.responses.create(
            model="echo",
            tools=TOOLS,
            input=[
                {"role": "user", "content": "call get_weather"},
                {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": call.call_id, "output": "rain later"},
            ],
        )
        assert answered.output_text == "rain later " and answered.status == "completed"
        # previous_response_id carries the call over.
        followed = await client.responses.create(
            model="echo",
            previous_response_id=asked.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        )
        assert followed.output_text == "sunny "


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"id": "up", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def upstream_reply(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
    arguments = '{"city": "Oslo", "unit": "c"}'
    pieces = [
        chunk({"role": "assistant", "reasoning_content": "Needs "}),
        chunk({"reasoning_content": "the weather."}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_up", "type": "function", "function": {"name": "get_weather"}}]}),
        *(chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 4]}}]}) for i in range(0, 30, 4)),
        chunk({}, "tool_calls"),
        "data: [DONE]\n\n",
    ]
    return httpx.Response(200, content="".join(pieces).encode(), headers={"Content-Type": "text/event-stream"})


@override_settings(LLM_BACKEND="openai", LLM_BASE_URL="http://upstream.test/v1", LLM_MODEL="gpt-up")
async def test_an_upstreams_reasoning_and_split_tool_call_reassembled_by_the_sdk(token, monkeypatch):
    monkeypatch.setattr(services, "get_backend", lambda *model: OpenAIBackend(transport=httpx.MockTransport(upstream_reply)))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        async with client.responses.stream(model="gpt-up", input="weather?", tools=TOOLS) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert reasoning == "Needs the weather." and arguments == '{"city": "Oslo", "unit": "c"}'
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    thought, message, call = final.output
    assert thought.type == "reasoning" and thought.content and thought.content[0].text == "Needs the weather."
    assert message.type == "message" and final.output_text == "Let me check."
    assert call.type == "function_call" and (call.call_id, call.name) == ("call_up", "get_weather")
    assert json.loads(call.arguments) == {"city": "Oslo", "unit": "c"}
