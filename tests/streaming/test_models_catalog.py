"""Several models (docs/protocol.md, "Models"): LLM_MODELS parsed (a bad value names the
variable, at start-up too), /v1/models listing them, each request answered by its
model's backend (the upstream's URL, key and model name), an unknown one 404."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from django.test import override_settings

from core.env import ImproperlyConfiguredError
from streaming import backends, catalog
from streaming.catalog import ModelSpec
from tests.support.asgi_client import BearerClient, read_all
from tests.support.processes import ROOT
from tests.support.sse_parsing import parse_events

MODELS = {
    "echo": {},
    "big": {"base_url": "http://big.test/v1/", "api_key": "sk-big", "model": "gpt-big-2025"},
    "org/small": {"base_url": "http://small.test/v1"},
}


def test_llm_models_is_parsed_in_its_order():
    assert catalog.parse(json.dumps(MODELS)) == (
        ModelSpec("echo", "echo"),
        ModelSpec("big", "openai", "http://big.test/v1", "sk-big", "gpt-big-2025"),
        ModelSpec("org/small", "openai", "http://small.test/v1", None, "org/small"),
    )


def test_a_model_may_have_a_concurrency_cap():
    raw = {"echo": {"max_concurrent": 2}, "big": {"base_url": "http://big.test/v1", "max_concurrent": 30}, "free": {}}
    assert [(spec.name, spec.max_concurrent) for spec in catalog.parse(json.dumps(raw))] == [
        ("echo", 2),
        ("big", 30),
        ("free", None),
    ]


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("{", "invalid JSON"),
        ("[]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ('{"a": "http://x"}', "must be an object"),
        ('{"a": {"url": "http://x"}}', "unknown key 'url'"),
        ('{"a": {"base_url": 3}}', "base_url must be a string"),
        ('{"a": {"base_url": "ftp://x"}}', "http(s) URL"),
        ('{"a": {"base_url": "x.test"}}', "http(s) URL"),
        ('{"a": {"api_key": "sk"}}', "no base_url"),
        ('{"a b": {}}', "without spaces"),
        ('{"": {}}', "without spaces"),
        ('{"a": {"max_concurrent": 0}}', "max_concurrent must be a whole number from 1"),
        ('{"a": {"max_concurrent": "2"}}', "max_concurrent must be a whole number from 1"),
        ('{"a": {"max_concurrent": true}}', "max_concurrent must be a whole number from 1"),
        ('{"a": {"max_concurrent": 1.5}}', "max_concurrent must be a whole number from 1"),
    ],
)
def test_a_bad_llm_models_names_the_variable(raw: str, complaint: str):
    with pytest.raises(ImproperlyConfiguredError) as raised:
        catalog.parse(raw)
    assert "LLM_MODELS" in str(raised.value) and complaint in str(raised.value)


def test_without_llm_models_one_model_is_served_as_before(monkeypatch):
    monkeypatch.delenv("LLM_MODELS", raising=False)
    assert catalog.models() == (ModelSpec("echo", "echo"),)
    with override_settings(LLM_BACKEND="openai", LLM_BASE_URL="http://up.test/v1", LLM_API_KEY="k", LLM_MODEL="m"):
        assert catalog.models() == (ModelSpec("m", "openai", "http://up.test/v1", "k", "m"),)


def test_llm_models_and_llm_backend_openai_together_are_refused(monkeypatch):
    monkeypatch.setenv("LLM_MODELS", json.dumps(MODELS))
    with override_settings(LLM_BACKEND="openai"), pytest.raises(ImproperlyConfiguredError, match="LLM_MODELS"):
        catalog.check()


def test_a_bad_llm_models_stops_the_server_at_start_up():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "LLM_MODELS": '{"a": {"base_url": "nope"}}'}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "environment variable LLM_MODELS" in done.stderr and "http(s) URL" in done.stderr


# ---- over HTTP -------------------------------------------------------------------------------------------------
class Upstreams:
    """Every upstream of LLM_MODELS, faked: records each request (URL, key, body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "key": request.headers.get("Authorization"), "model": body["model"]})
        chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "up"}}]}
        content = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        return httpx.Response(200, content=content, headers={"Content-Type": "text/event-stream"})


@pytest.fixture
def served(monkeypatch) -> Upstreams:
    monkeypatch.setenv("LLM_MODELS", json.dumps(MODELS))
    fake = Upstreams()
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    monkeypatch.setattr(backends, "http_client", lambda transport=None: client)
    return fake


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_v1_models_lists_every_model_and_each_answers_with_its_backend(token, served):
    client = BearerClient(token)
    listed = (await client.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["echo", "big", "org/small"]
    assert (await client.get("/v1/models/org/small")).json()["id"] == "org/small"
    missing = await client.get("/v1/models/gpt-nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"

    async def ask(model: str) -> Any:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
        return await client.post("/v1/chat/completions", json.dumps(body), content_type="application/json")

    assert (await ask("echo")).json()["choices"][0]["message"]["content"] == "hello there "
    big = (await ask("big")).json()
    assert big["model"] == "big" and big["choices"][0]["message"]["content"] == "up"
    assert (await ask("org/small")).json()["choices"][0]["message"]["content"] == "up"
    assert served.requests == [
        {"url": "http://big.test/v1/chat/completions", "key": "Bearer sk-big", "model": "gpt-big-2025"},
        {"url": "http://small.test/v1/chat/completions", "key": None, "model": "org/small"},
    ]
    unknown = await ask("gpt-nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    # The Responses API picks its model the same way.
    made = await client.post("/v1/responses", json.dumps({"model": "big", "input": "hi"}), content_type="application/json")
    assert made.json()["output"][0]["content"][0]["text"] == "up"
    refused = await client.post("/v1/responses", json.dumps({"model": "nope", "input": "hi"}), content_type="application/json")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_the_assistant_takes_a_model_and_defaults_to_the_first(token, served):
    client = BearerClient(token)

    async def say(**extra: Any) -> Any:
        body = {"message": "hello there", **extra}
        return await client.post("/api/assistant/stream", json.dumps(body), content_type="application/json")

    default = parse_events(await read_all(await say()))
    assert default[-1]["data"]["content"] == "hello there "
    big = parse_events(await read_all(await say(model="big")))
    assert big[-1]["data"]["content"] == "up" and served.requests[0]["model"] == "gpt-big-2025"
    unknown = await say(model="nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    wrong = await say(model=3)
    assert wrong.status_code == 400
