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
