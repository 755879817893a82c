"""Bad input for both OpenAI APIs, table-driven (docs/protocol.md, "Chat Completions
parameters" and "Responses API"): a wrong JSON type for every field, malformed tool calls
and tool messages, unknown models, ``n=2``, bodies of a megabyte and more. Each is refused
in OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's
status and code, before anything is stored; none is a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streaming.models import Conversation
from tests.support.asgi_client import BearerClient

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

# One value of each JSON type, to put where another type belongs.
SAMPLES: dict[str, Any] = {
    "string": "x",
    "number": 1.5,
    "integer": 2,
    "boolean": True,
    "array": [],
    "object": {},
}
NUMBER = ("number", "integer")


def wrong_types(allowed: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(JSON type, a value of it) for every JSON type a field does not take."""
    return [(kind, value) for kind, value in SAMPLES.items() if kind not in allowed]


def table(fields: dict[str, tuple[str, ...]]) -> list[Any]:
    return [
        pytest.param(field, value, id=f"{field}={kind}")
        for field, allowed in fields.items()
        for kind, value in wrong_types(allowed)
    ]


ASKED = {"role": "user", "content": "hello"}
CHAT = {"model": "echo", "messages": [ASKED]}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "lookup"}}

# What each field of a chat completion request takes (OpenAI's API reference).
CHAT_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("string",),
    "messages": ("array",),
    "stream": ("boolean",),
    "max_tokens": ("integer",),
    "max_completion_tokens": ("integer",),
    "stream_options": ("object",),
    "temperature": NUMBER,
    "top_p": NUMBER,
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "stop": ("string", "array"),
    "seed": ("integer",),
    "logprobs": ("boolean",),
    "top_logprobs": ("integer",),
    "logit_bias": ("object",),
    "reasoning_effort": ("string",),
    "user": ("string",),
    "n": ("integer",),
    "tools": ("array",),
    "tool_choice": ("string", "object"),
    "parallel_tool_calls": ("boolean",),
    "response_format": ("object",),
    "modalities": ("array",),
}
# The fields of a message, each set in a message where it belongs.
MESSAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "role": ("string",),
    "content": ("string", "array"),
    "name": ("string",),
}

RESPONSES = {"model": "echo", "input": "hello"}
RESPONSES_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("string",),
    "input": ("string", "array"),
    "instructions": ("string",),
    "stream": ("boolean",),
    "background": ("boolean",),
    "store": ("boolean",),
    "max_output_tokens": ("integer",),
    "previous_response_id": ("string",),
    "tools": ("array",),
    "tool_choice": ("string", "object"),
    "parallel_tool_calls": ("boolean",),
}
FUNCTION_CALL = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
ITEM_FIELDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "role": ({"type": "message", "role": "user", "content": "hi"}, ("string",)),
    "content": ({"type": "message", "role": "user", "content": "hi"}, ("string", "array")),
    "call_id": (FUNCTION_CALL, ("string",)),
    "name": (FUNCTION_CALL, ("string",)),
    "arguments": (FUNCTION_CALL, ("string",)),
    "output": ({"type": "function_call_output", "call_id": "call_1", "output": "ok"}, ("string",)),
}


async def post(client: BearerClient, path: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return await client.post(path, data, content_type="application/json")


def assert_refused(response: Any, status: int, code: str) -> dict[str, Any]:
    """OpenAI's error object, its keys exactly, with this status and code."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert error["type"] == ("rate_limit_error" if status == 429 else "invalid_request_error")
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture
def client(token: str) -> BearerClient:
    return BearerClient(token)


# ---- /v1/chat/completions ------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), table(CHAT_FIELDS))
async def test_chat_a_wrong_type_for_any_field_is_invalid_type(client, field, value):
    error = assert_refused(await post(client, "/v1/chat/completions", CHAT | {field: value}), 400, "invalid_type")
    assert f"'{field}'" in error["message"], "the message names the field"
    assert await Conversation.objects.acount() == 0


@pytest.mark.parametrize(("field", "value"), table(MESSAGE_FIELDS))
async def test_chat_a_wrong_type_for_a_message_field_is_invalid_type(client, field, value):
    error = assert_refused(
        await post(client, "/v1/chat/completions", CHAT | {"messages": [ASKED | {field: value}]}), 400, "invalid_type"
    )
    assert f"'messages[0].{field}'" in error["message"]


@pytest.mark.parametrize(("kind", "value"), wrong_types(("object",)))
async def test_chat_a_message_that_is_not_an_object_is_invalid_type(client, kind, value):
    assert_refused(await post(client, "/v1/chat/completions", CHAT | {"messages": [ASKED, value]}), 400, "invalid_type")


def chat_with_calls(calls: Any, answer: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = {"role": "tool", "tool_call_id": "call_1", "content": "found"} if answer is None else answer
    return CHAT | {"tools": [TOOL], "messages": [ASKED, {"role": "assistant", "content": None, "tool_calls": calls}, answer]}


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        # Tool messages without the id of the call they answer.
        (chat_with_calls([CALL], {"role": "tool", "content": "found"}), "missing_required_parameter", "messages[2].tool_call_id"),
        (
            chat_with_calls([CALL], {"role": "tool", "tool_call_id": "", "content": "x"}),
            "missing_required_parameter",
            "tool_call_id",
        ),
        (
            chat_with_calls([CALL], {"role": "tool", "tool_call_id": 5, "content": "x"}),
            "invalid_type",
            "messages[2].tool_call_id",
        ),
        (chat_with_calls([CALL], {"role": "tool", "tool_call_id": "call_9", "content": "x"}), "invalid_messages", "messages[2]"),
        (
            CHAT | {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}, ASKED]},
            "invalid_messages",
            "messages[0]",
        ),
        # Assistant tool_calls malformed.
        (chat_with_calls({"id": "call_1"}), "invalid_type", "messages[1].tool_calls"),
        (chat_with_calls(["call_1"]), "invalid_type", "messages[1].tool_calls[0]"),
        (chat_with_calls([{**CALL, "id": None}]), "missing_required_parameter", "messages[1].tool_calls[0].id"),
        (chat_with_calls([{**CALL, "id": 1}]), "invalid_type", "messages[1].tool_calls[0].id"),
        (chat_with_calls([{**CALL, "function": None}]), "missing_required_parameter", "messages[1].tool_calls[0].function"),
        (chat_with_calls([{**CALL, "function": "lookup"}]), "invalid_type", "messages[1].tool_calls[0].function"),
        (chat_with_calls([{**CALL, "function": {"arguments": "{}"}}]), "invalid_type", "tool_calls[0].function.name"),
        (chat_with_calls([{**CALL, "function": {"name": "lookup", "arguments": {}}}]), "invalid_type", "function.arguments"),
        (chat_with_calls([{**CALL, "type": "custom"}]), "invalid_value", "messages[1].tool_calls[0].type"),
        (chat_with_calls([{**CALL, "type": 3}]), "invalid_type", "messages[1].tool_calls[0].type"),
        # Tools.
        (CHAT | {"tools": [5]}, "invalid_type", "tools[0]"),
        (CHAT | {"tools": [{"type": "function"}]}, "missing_required_parameter", "tools[0].function.name"),
        (
            CHAT | {"tools": [{"type": "function", "function": {"name": 3}}]},
            "missing_required_parameter",
            "tools[0].function.name",
        ),
        (CHAT | {"stop": ["a", 1]}, "invalid_type", "stop"),
        (CHAT | {"stream_options": {"include_usage": "yes"}}, "invalid_type", "stream_options.include_usage"),
        # Values.
        (CHAT | {"n": 2}, "invalid_value", "n"),
        (CHAT | {"n": 0}, "invalid_value", "n"),
        (CHAT | {"max_tokens": 0}, "invalid_value", "max_tokens"),
        (CHAT | {"max_completion_tokens": 100_001}, "invalid_value", "max_completion_tokens"),
        (CHAT | {"messages": []}, "invalid_messages", "messages"),
        (CHAT | {"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_messages", "role"),
        (CHAT | {"model": ""}, "invalid_value", "model"),
        ({"messages": [ASKED]}, "missing_required_parameter", "model"),
        ({"model": "echo"}, "missing_required_parameter", "messages"),
        (CHAT | {"logprobs": True}, "unsupported_parameter", "logprobs"),
        (CHAT | {"functions": [{"name": "f"}]}, "unsupported_parameter", "functions"),
        (CHAT | {"modalities": ["audio"]}, "unsupported_parameter", "modalities"),
        ([CHAT], "invalid_request", "JSON object"),
        (b"{not json", "invalid_json", "JSON"),
    ],
)
async def test_chat_malformed_requests_are_refused_in_openais_shape(client, body, code, named):
    error = assert_refused(await post(client, "/v1/chat/completions", body), 400, code)
    assert named in error["message"], error["message"]
    assert await Conversation.objects.acount() == 0


async def test_chat_an_unknown_model_is_404_model_not_found(client):
    error = assert_refused(await post(client, "/v1/chat/completions", CHAT | {"model": "gpt-nothing"}), 404, "model_not_found")
    assert "gpt-nothing" in error["message"]
    streamed = await post(client, "/v1/chat/completions", CHAT | {"model": "gpt-nothing", "stream": True})
    assert_refused(streamed, 404, "model_not_found")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_megabyte_body_is_a_400_and_three_are_a_413(client, path):
    megabyte = "m" * 1_000_000
    body = CHAT | {"messages": [{"role": "user", "content": megabyte}]} if "chat" in path else RESPONSES | {"input": megabyte}
    assert_refused(await post(client, path, body), 400, "string_above_max_length")
    padded = (CHAT if "chat" in path else RESPONSES) | {"metadata": {"pad": megabyte}}
    assert (await post(client, path, padded)).status_code in (200, 400), "a 1 MB body is read, never a 413 or a 500"
    assert_refused(await post(client, path, json.dumps(body | {"pad": "p" * 3_000_000}).encode()), 413, "request_too_large")


# ---- /v1/responses --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), table(RESPONSES_FIELDS))
async def test_responses_a_wrong_type_for_any_field_is_invalid_type(client, field, value):
    error = assert_refused(await post(client, "/v1/responses", RESPONSES | {field: value}), 400, "invalid_type")
    assert error["message"].startswith(field), error["message"]
    assert await Conversation.objects.acount() == 0


@pytest.mark.parametrize(
    ("field", "value", "item"),
    [
        pytest.param(field, value, item, id=f"{field}={kind}")
        for field, (item, allowed) in ITEM_FIELDS.items()
        for kind, value in wrong_types(allowed)
    ],
)
async def test_responses_a_wrong_type_for_an_input_item_field_is_invalid_type(client, field, value, item):
    before = [FUNCTION_CALL] if item["type"] == "function_call_output" else []
    body = RESPONSES | {"input": [*before, item | {field: value}]}
    error = assert_refused(await post(client, "/v1/responses", body), 400, "invalid_type")
    assert error["message"].startswith(f"input[{len(before)}].{field}"), error["message"]


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        (RESPONSES | {"input": [5]}, "invalid_type", "input[0]"),
        (RESPONSES | {"input": [{"type": "input_image", "image_url": "x"}]}, "invalid_value", "input[0]"),
        (RESPONSES | {"input": [{"type": ["message"], "role": "user", "content": "x"}]}, "invalid_type", "input[0].type"),
        (RESPONSES | {"input": [{"role": "wizard", "content": "x"}]}, "invalid_value", "input[0].role"),
        (RESPONSES | {"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "invalid_value", "input[0].content[0]"),
        (RESPONSES | {"input": [{"role": "user", "content": [5]}]}, "invalid_value", "input[0].content[0]"),
        (RESPONSES | {"input": []}, "invalid_type", "input"),
        (
            RESPONSES | {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
            "invalid_value",
            "call_id",
        ),
        (RESPONSES | {"input": [{"type": "function_call_output", "output": "x"}]}, "invalid_value", "input[0].call_id"),
        (RESPONSES | {"input": [FUNCTION_CALL | {"call_id": ""}]}, "missing_required_parameter", "input[0].call_id"),
        (RESPONSES | {"tools": [5]}, "invalid_type", "tools[0]"),
        (RESPONSES | {"tools": [{"type": "web_search"}]}, "unsupported_parameter", "tools[0].type"),
        (RESPONSES | {"tools": [{"type": "function"}]}, "missing_required_parameter", "tools[0].name"),
        (RESPONSES | {"tools": [{"type": "function", "name": "f", "parameters": []}]}, "invalid_type", "tools[0].parameters"),
        (RESPONSES | {"tool_choice": "sometimes"}, "invalid_value", "tool_choice"),
        (RESPONSES | {"tool_choice": {"type": "function"}}, "invalid_value", "tool_choice"),
        (RESPONSES | {"max_output_tokens": 0}, "invalid_value", "max_output_tokens"),
        (RESPONSES | {"max_output_tokens": 100_001}, "invalid_value", "max_output_tokens"),
        (RESPONSES | {"store": False}, "unsupported_parameter", "store"),
        (RESPONSES | {"n": 2}, "unsupported_parameter", "n"),
        (RESPONSES | {"temperature": 0.2}, "unsupported_parameter", "temperature"),
        (RESPONSES | {"model": ""}, "invalid_value", "model"),
        ({"input": "hi"}, "missing_required_parameter", "model"),
        ({"model": "echo"}, "missing_required_parameter", "input"),
        (RESPONSES | {"previous_response_id": "msg_1"}, "invalid_value", "previous_response_id"),
        ([RESPONSES], "invalid_json", "JSON object"),
        (b"{not json", "invalid_json", "JSON"),
    ],
)
async def test_responses_malformed_requests_are_refused_in_openais_shape(client, body, code, named):
    error = assert_refused(await post(client, "/v1/responses", body), 400, code)
    assert named in error["message"], error["message"]
    assert await Conversation.objects.acount() == 0


async def test_responses_unknown_models_and_responses_are_404s(client):
    error = assert_refused(await post(client, "/v1/responses", RESPONSES | {"model": "gpt-nothing"}), 404, "model_not_found")
    assert "gpt-nothing" in error["message"]
    assert_refused(
        await post(client, "/v1/responses", RESPONSES | {"previous_response_id": "resp_" + "0" * 32}), 404, "not_found"
    )
    assert_refused(await client.get("/v1/responses/resp_nothing"), 404, "not_found")
    assert_refused(await client.get("/v1/responses/resp_nothing?stream=true"), 404, "not_found")
    assert_refused(await client.post("/v1/responses/resp_nothing/cancel"), 404, "not_found")
