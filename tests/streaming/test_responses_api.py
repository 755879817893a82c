"""/v1/responses, a first text-only slice (docs/protocol.md, "Responses API"), as the
official ``openai`` SDK sees it: in process, and across three real workers."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import httpx2
import openai
import pytest
from django.test import override_settings
from openai.types.responses import ResponseCompletedEvent, ResponseCreatedEvent

from config.asgi import application
from tests.support.factories import make_token, make_user
from tests.support.processes import Cluster


@pytest.fixture
def other_token(token):
    return make_token(make_user("bob"))


def sdk(http: httpx2.AsyncClient, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=token, http_client=http, max_retries=0)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_create_non_streamed_and_streamed_parse_in_the_sdk(token):
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        reply = await client.responses.create(model="echo", input="say this back", instructions="be brief")
        assert reply.status == "completed" and reply.output_text == "say this back "
        assert reply.id.startswith("resp_") and reply.instructions == "be brief"
        assert reply.usage is not None and reply.usage.output_tokens == 4
        again = await client.responses.retrieve(reply.id)
        assert again.output_text == "say this back " and again.status == "completed"

        stream = await client.responses.create(
            model="echo", input=[{"role": "user", "content": [{"type": "input_text", "text": "one two"}]}], stream=True
        )
        events = [event async for event in stream]
        types = [event.type for event in events]
        assert types == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two "
        assert isinstance(events[-1], ResponseCompletedEvent) and events[-1].response.output_text == "one two "

        limited = await client.responses.create(model="echo", input="a b", max_output_tokens=3)
        assert limited.status == "incomplete" and limited.incomplete_details is not None
        assert limited.incomplete_details.reason == "max_output_tokens" and limited.output_text == "a b a "


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_previous_response_id_prepends_its_turns_and_is_the_callers_only(token, other_token):
    other = other_token
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        client = sdk(http, token)
        first = await client.responses.create(model="echo", input="hello there")
        second = await client.responses.create(model="echo", input="again", previous_response_id=first.id)
        alone = await client.responses.create(model="echo", input="again")
        assert second.previous_response_id == first.id and second.output_text == "again "
        assert second.usage is not None and alone.usage is not None
        # "hello there" (3: 11 characters at four a token) and its reply (3) come before "again".
        assert second.usage.input_tokens == alone.usage.input_tokens + 6
        with pytest.raises(openai.NotFoundError):
            await sdk(http, other).responses.create(model="echo", input="x", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            await sdk(http, other).responses.retrieve(first.id)
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)


BAD = [
    ({"input": "hi"}, "model"),
    ({"model": 3, "input": "hi"}, "model"),
    ({"model": "echo"}, "input"),
    ({"model": "echo", "input": 5}, "input"),
    ({"model": "echo", "input": []}, "input"),
    ({"model": "echo", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"model": "echo", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]"),
    ({"model": "echo", "input": "hi", "instructions": ["x"]}, "instructions"),
    ({"model": "echo", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "echo", "input": "hi", "background": 1}, "background"),
    ({"model": "echo", "input": "hi", "store": False}, "store"),
    ({"model": "echo", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "echo", "input": "hi", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"model": "echo", "input": "hi", "previous_response_id": 7}, "previous_response_id"),
    ({"model": "echo", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "echo", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "echo", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
    ({"model": "echo", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0].call_id"),
    ({"model": "echo", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"model": "echo", "input": [{"type": "file_search_call"}]}, "input[0]"),
    ({"model": "echo", "input": "hi", "tools": "none"}, "tools"),
    ({"model": "echo", "input": "hi", "temperature": 0.2}, "temperature"),
    ({"model": "echo", "input": "hi", "colour": "blue"}, "colour"),
]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("body", "named"), BAD)
async def test_bad_input_is_a_400_in_openais_shape_naming_the_field(token, body: dict[str, Any], named: str):
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        response = await http.post(
            "http://localhost/v1/responses", content=json.dumps(body), headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{named}:")


# ---- three real workers ----------------------------------------------------------------------------
def _client(cluster: Cluster, index: int, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.http(index)}/v1", api_key=token, max_retries=0, timeout=20)


@pytest.mark.multiworker
def test_a_dropped_background_stream_resumes_on_another_worker_with_starting_after(cluster: Cluster):
    token = cluster.tokens["user9"]
    stream = _client(cluster, 0, token).responses.create(
        model="echo", input="alpha beta gamma", background=True, stream=True, max_output_tokens=40
    )
    first = []
    for event in stream:
        first.append(event)
        if len(first) == 10:
            break
    stream.close()  # the client drops; a background response goes on
    assert isinstance(first[0], ResponseCreatedEvent)
    response_id = first[0].response.id
    rest = list(_client(cluster, 1, token).responses.retrieve(response_id, stream=True, starting_after=first[-1].sequence_number))
    numbers = [e.sequence_number for e in first + rest]
    assert numbers == list(range(len(numbers))), "every event exactly once across the two connections"
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert rest[-1].type == "response.incomplete" and rest[-1].response.output_text == text
    assert text == "".join(["alpha ", "beta ", "gamma "][i % 3] for i in range(40))
    finished = httpx.get(
        f"{cluster.http(2)}/v1/responses/{response_id}?stream=true&starting_after={numbers[-1]}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert finished.status_code == 204, "a reader past the end is told to stop"


@pytest.mark.multiworker
def test_a_background_response_is_cancelled_from_another_worker(cluster: Cluster):
    token = cluster.tokens["user10"]
    started = _client(cluster, 0, token).responses.create(
        model="echo", input="never ending", background=True, max_output_tokens=5000
    )
    assert started.status == "queued"
    time.sleep(0.3)
    asked = time.monotonic()
    cancelled = _client(cluster, 2, token).responses.cancel(started.id)
    assert time.monotonic() - asked < 1.5
    assert cancelled.status == "cancelled"
    seen = _client(cluster, 1, token).responses.retrieve(started.id)
    assert seen.status == "cancelled" and seen.output_text and seen.output_text == cancelled.output_text
    assert seen.usage is not None and seen.usage.output_tokens < 5000


@pytest.mark.multiworker
def test_a_running_background_response_deleted_on_another_worker_is_gone_everywhere(cluster: Cluster):
    token = cluster.tokens["user11"]
    started = _client(cluster, 0, token).responses.create(
        model="echo", input="soon gone", background=True, max_output_tokens=5000
    )
    time.sleep(0.3)
    _client(cluster, 1, token).responses.delete(started.id)
    for index in range(3):
        with pytest.raises(openai.NotFoundError):
            _client(cluster, index, token).responses.retrieve(started.id)
    time.sleep(0.5)  # a producer writing on would bring its log back
    with pytest.raises(openai.NotFoundError):
        _client(cluster, 0, token).responses.retrieve(started.id)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_body_over_the_cap_is_a_413_in_openais_shape(token):
    padded = json.dumps({"model": "echo", "input": "hi", "metadata": {"p": "p" * 2_300_000}})
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        response = await http.post("http://localhost/v1/responses", content=padded, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
