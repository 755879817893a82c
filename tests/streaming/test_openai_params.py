"""/v1/chat/completions' optional parameters (docs/protocol.md, "Chat Completions parameters"):
a wrong JSON type is a 400 in OpenAI's shape naming the parameter, ``n`` other than 1 is
refused, and well-typed values are accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.asgi_client import BearerClient

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MESSAGES = [{"role": "user", "content": "hello"}]


async def completion(client: BearerClient, extra: dict[str, Any]):
    body = {"model": "echo", "messages": MESSAGES, "max_tokens": 4, **extra}
    return await client.post("/v1/chat/completions", json.dumps(body), content_type="application/json")


WRONG_TYPES = [
    ("tools", "not a list"),
    ("tool_choice", 3),
    ("parallel_tool_calls", "yes"),
    ("response_format", "json"),
    ("temperature", "hot"),
    ("temperature", True),
    ("top_p", [1]),
    ("stop", 5),
    ("stop", ["ok", 5]),
    ("seed", 1.5),
    ("seed", False),
    ("presence_penalty", "0"),
    ("frequency_penalty", {}),
    ("logprobs", 1),
    ("user", 42),
    ("stream_options", "usage"),
    ("n", "2"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
async def test_a_wrong_type_is_a_400_naming_the_parameter(token, name, value):
    response = await completion(BearerClient(token), {name: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_type"
    assert f"'{name}'" in error["message"]


@pytest.mark.parametrize("n", [0, 2, 5])
async def test_n_other_than_one_is_refused(token, n):
    response = await completion(BearerClient(token), {"n": n})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_value" and "'n'" in error["message"]


async def test_well_typed_parameters_and_nulls_are_accepted(token):
    client = BearerClient(token)
    accepted = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "text"},
        "temperature": 0,
        "top_p": 0.5,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "logprobs": False,
        "user": "u-1",
        "n": 1,
    }
    assert (await completion(client, accepted)).status_code == 200
    assert (await completion(client, dict.fromkeys(accepted))).status_code == 200


async def test_the_model_is_listed_retrieved_and_an_unknown_one_is_a_404(token):
    client = BearerClient(token)
    listed = (await client.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["echo"]
    retrieved = await client.get("/v1/models/echo")
    assert retrieved.status_code == 200 and retrieved.json() == listed["data"][0]
    for response in (await client.get("/v1/models/gpt-nothing"), await completion(client, {"model": "gpt-nothing"})):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "model_not_found"


REFUSED = [
    ("logprobs", True),
    ("top_logprobs", 3),
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
]


@pytest.mark.parametrize(("name", "value"), REFUSED)
async def test_a_parameter_we_cannot_honour_is_a_400_naming_it(token, name, value):
    response = await completion(BearerClient(token), {name: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter" and f"'{name}'" in error["message"]


BAD_TOOLS = [
    (["f"], "invalid_type", "tools[0]"),
    ([{"function": {"name": "f"}}], "invalid_type", "tools[0]"),
    ([{"type": "function"}], "missing_required_parameter", "tools[0].function.name"),
    ([{"type": "function", "function": {"name": ""}}], "missing_required_parameter", "tools[0].function.name"),
]


@pytest.mark.parametrize(("tools", "code", "where"), BAD_TOOLS)
async def test_a_malformed_tool_is_a_400_naming_it(token, tools, code, where):
    response = await completion(BearerClient(token), {"tools": tools})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and f"'{where}'" in error["message"]


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
ASKED = {"role": "user", "content": "call f"}
BAD_TOOL_MESSAGES = [
    (
        [ASKED, {"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "tool", "content": "r"}],
        "missing_required_parameter",
    ),
    ([ASKED, {"role": "tool", "tool_call_id": "call_1", "content": "r"}], "invalid_messages"),  # no call before it
    (
        [
            ASKED,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_2", "content": "r"},
        ],
        "invalid_messages",  # answers no call of the message before
    ),
    ([ASKED, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": None}]}], "missing_required_parameter"),
    (
        [ASKED, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}],
        "invalid_type",
    ),
    ([ASKED, {"role": "assistant", "content": None, "tool_calls": "call_1"}], "invalid_type"),
    ([ASKED, {"role": "assistant", "content": None}], "invalid_messages"),  # null content without tool calls
    (
        [ASKED, {"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_1"}],
        "invalid_messages",
    ),
]


@pytest.mark.parametrize(("messages", "code"), BAD_TOOL_MESSAGES)
async def test_malformed_tool_messages_are_a_400(token, messages, code):
    response = await completion(BearerClient(token), {"messages": messages})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_tool_messages_and_assistant_tool_calls_are_accepted(token):
    messages = [
        ASKED,
        {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "done", "tool_calls": []},
        {"role": "user", "content": "thanks"},
    ]
    response = await completion(BearerClient(token), {"messages": messages})
    assert response.status_code == 200, response.json()
