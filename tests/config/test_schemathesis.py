"""schemathesis against the OpenAPI description that a running worker serves at /api/schema/.

Every operation, as an ordinary user and as staff, with inputs that fit the description
(positive) and inputs that break it (negative). Whatever comes in, the server answers
with a status the description declares, in the declared shape, never a 5xx; and a
request that breaks the description is refused with a 4xx (``negative_data_rejection``).

Bounded: a few examples per operation, derandomized (the same requests on every run), no
shrinking (a failure names the request to reproduce with curl anyway).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker

EXAMPLES_PER_OPERATION = 6
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Replies are generated at LLM_TOKEN_DELAY_MS a token: a few tokens exercise the same code.
MAX_TOKENS = 4
# An event stream is read until it ends, or until it has been quiet this long (the
# notification stream never ends; a queued task's stream idles).
SSE_QUIET_SECONDS = 0.3
SSE_FINAL_EVENT = re.compile(rb"^(event: (done|error|complete|failed)|data: \[DONE\])$", re.MULTILINE)


@dataclass(frozen=True)
class Target:
    base_url: str
    tokens: dict[str, str]  # role -> bearer token
    slug: str  # a room of the ordinary user's, with one message
    message_id: int


@pytest.fixture(scope="module")
def target(cluster: Cluster) -> Target:
    """Worker 0, a user and a staff member of their own (staff actions stay on them), and a
    room that generated requests sometimes name, so that they get past the 404."""
    tokens = {
        "user": cluster.mint_tokens("st-user")["st-user"],
        "staff": cluster.mint_tokens("st-staff", staff=True)["st-staff"],
    }
    base_url = cluster.http(0)
    headers = {"Authorization": f"Bearer {tokens['user']}"}
    response = httpx.post(
        f"{base_url}/api/rooms/", json={"slug": "st-room", "title": "schemathesis"}, headers=headers, timeout=10
    )
    assert response.status_code in (201, 409), response.text
    response = httpx.post(f"{base_url}/api/rooms/st-room/messages", json={"content": "hello"}, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return Target(base_url=base_url, tokens=tokens, slug="st-room", message_id=response.json()["id"])


def _is_sse(operation: Any) -> bool:
    return any("text/event-stream" in (r.get("content") or {}) for r in operation.definition.raw["responses"].values())


async def _stream_briefly(kwargs: dict[str, Any]) -> httpx.Response:
    """Send a request built for ``requests``; read the answer until its final event, or
    until it has been quiet for SSE_QUIET_SECONDS (a never-ending stream)."""
    headers = {name: value.encode("latin-1") if isinstance(value, str) else value for name, value in kwargs["headers"].items()}
    if kwargs.get("cookies"):
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in kwargs["cookies"].items()).encode("latin-1")
    body: dict[str, Any] = {"json": kwargs["json"]} if "json" in kwargs else {}
    if "data" in kwargs:
        body = {"content": kwargs["data"]}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"), **body) as response,
    ):
        content = b""
        chunks = response.aiter_bytes()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not SSE_FINAL_EVENT.search(content):
            try:
                content += await asyncio.wait_for(anext(chunks), SSE_QUIET_SECONDS)
            except (TimeoutError, StopAsyncIteration):
                break
    if b"\n\n" in content and response.headers.get("content-type", "").startswith("text/event-stream"):
        content = content[: content.rfind(b"\n\n") + 2]  # whole events only: the check sees no half event
    read = httpx.Response(response.status_code, headers=response.headers, content=content, request=response.request)
    read._elapsed = response.elapsed  # httpx sets it only on responses that went through a transport
    return read


def _call(case: Any, target: Target, headers: dict[str, str]) -> Any:
    if not _is_sse(case.operation):
        return case.call(base_url=target.base_url, headers=headers, timeout=10)
    return asyncio.run(_stream_briefly(case.as_transport_kwargs(base_url=target.base_url, headers=headers)))


def _clean_up(case: Any, response: Any, target: Target, headers: dict[str, str]) -> None:
    """Stop what a request started, so that nothing keeps running on the shared cluster:
    a generation (until abandoned) or a task (there is no task worker here, but another
    test may start one)."""
    if response.headers.get("X-Stream-Id"):
        httpx.post(f"{target.base_url}/api/streams/{response.headers['X-Stream-Id']}/cancel", headers=headers, timeout=10)
    if case.operation.label == "POST /api/tasks/" and response.status_code == 202:
        httpx.delete(f"{target.base_url}/api/tasks/{response.json()['id']}", headers=headers, timeout=10)


def _aim(case: Any, target: Target) -> None:
    """Point a valid request at the room that exists, and keep replies short."""
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = target.slug
    if "message_id" in (case.path_parameters or {}):
        case.path_parameters["message_id"] = target.message_id


def _limit_tokens(case: Any) -> None:
    if isinstance(case.body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            value = case.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
                case.body[name] = MAX_TOKENS


def _operations(base_url: str) -> Iterator[Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/", timeout=10)
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the description itself is valid
        yield result.ok()


def _run(operation: Any, mode: schemathesis.GenerationMode, role: str, target: Target, failures: list[str]) -> None:
    headers = {"Authorization": f"Bearer {target.tokens[role]}"}
    checks = [*CHECKS, negative_data_rejection] if mode == schemathesis.GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
    def test(case: Any, aim: bool) -> None:
        if aim and mode == schemathesis.GenerationMode.POSITIVE:
            _aim(case, target)
        _limit_tokens(case)
        response = _call(case, target, headers)
        try:
            case.validate_response(response, checks=checks)
        except Exception as failure:  # every failure is reported, not only the first
            failures.append(f"{operation.label} as {role} ({mode.value}):\n{failure}")
        finally:
            _clean_up(case, response, target, headers)

    test()


def test_every_operation_answers_as_described_and_never_with_a_5xx(target: Target) -> None:
    failures: list[str] = []
    operations = list(_operations(target.base_url))
    assert len(operations) >= 30  # every operation of the description, not a fraction
    started = time.monotonic()
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            for role in ("user", "staff"):
                _run(operation, mode, role, target, failures)
    assert not failures, "\n\n".join(failures[:10])
    assert time.monotonic() - started < 120  # bounded; about 20 s on a laptop
