"""The typed events of docs/protocol.md, "Events" (``status``, ``reasoning``, ``sources``,
``tool_result``) across three real workers: a stream dropped among them resumes on another
worker with each event once; /v1 Chat Completions leaves out what it has no delta for;
the Responses API carries sources as url_citation annotations, resumed elsewhere too.

The echo model makes them with no upstream: "/sources" streams a ``thinking`` status and
sources before its words, "/think" reasoning, and a tool message it answers is logged as a
``tool_result``."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support.processes import Cluster
from tests.support.sse_parsing import parse_events
from tests.support.streams import auth, read_events, start_stream

pytestmark = pytest.mark.multiworker

USER = "user8"


def read_all(cluster: Cluster, worker: int, stream_id: str, token: str, last_event_id: str | None = None) -> list[dict]:
    headers = auth(token) | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    with httpx.stream("GET", f"{cluster.http(worker)}/api/streams/{stream_id}/events", headers=headers, timeout=20) as response:
        assert response.status_code == 200
        return read_events(response)


def test_a_stream_dropped_among_its_typed_events_resumes_on_another_worker_with_each_once(cluster: Cluster):
    token = cluster.tokens[USER]
    response = start_stream(cluster, 0, token, message="/sources /think tea cake", max_tokens=6)
    stream_id = response.headers["X-Stream-Id"]
    first: list[dict] = []
    deadline = time.monotonic() + 10
    while not any(e.get("event") == "reasoning" for e in first):  # dropped after the status, within the reasoning
        assert time.monotonic() < deadline and not any(e.get("event") == "done" for e in first), first
        first += read_events(response, until=0)  # what one read of the response brought
    response.close()
    assert first[0]["event"] == "start" and first[1]["event"] == "status" and first[1]["data"] == {"status": "thinking"}

    rest = read_all(cluster, 1, stream_id, token, last_event_id=first[-1]["id"])
    whole = read_all(cluster, 2, stream_id, token)
    assert [e["id"] for e in first + rest] == [e["id"] for e in whole], "every event once, in order, across two workers"
    assert [e["event"] for e in whole] == ["start", "status", *["reasoning"] * 5, "sources", *["token"] * 6, "done"]
    assert whole[7]["data"] == {
        "sources": [
            {"title": "Results for tea", "url": "https://example.com/search?q=tea"},
            {"title": "Results for cake", "url": "https://example.com/search?q=cake"},
        ]
    }
    assert "".join(e["data"]["text"] for e in whole if e["event"] == "reasoning") == "Echoing these words: tea cake "
    assert whole[-1]["data"]["content"] == "tea cake tea cake tea cake "
    ended = httpx.get(
        f"{cluster.http(0)}/api/streams/{stream_id}/events", headers=auth(token) | {"Last-Event-ID": whole[-1]["id"]}, timeout=10
    )
    assert ended.status_code == 204


def test_chat_completions_leave_out_status_sources_and_tool_results(cluster: Cluster):
    token = cluster.tokens[USER]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "call lookup"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "/sources found it"},
    ]
    body = {"model": "echo", "stream": True, "messages": messages, "tools": [tool]}
    with httpx.stream("POST", f"{cluster.http(0)}/v1/chat/completions", json=body, headers=auth(token), timeout=20) as response:
        assert response.status_code == 200
        stream_id = response.headers["X-Stream-Id"]
        text = response.read().decode()
    chunks = [e["data"] for e in parse_events(text)]
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [{"role": "assistant", "content": "/sources "}, {"content": "found "}, {"content": "it "}, {}]
    native = read_all(cluster, 1, stream_id, token)
    assert [e["event"] for e in native] == ["start", "tool_result", "token", "token", "token", "done"]
    assert native[1]["data"] == {"tool_call_id": "call_1", "name": "lookup", "content": "/sources found it"}

    client = openai.OpenAI(base_url=f"{cluster.http(2)}/v1", api_key=token, max_retries=0, timeout=20)
    reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "/sources /think tea"}])
    message = reply.choices[0].message
    assert message.content == "tea " and (message.model_extra or {})["reasoning_content"] == "Echoing these words: tea "


def test_responses_carry_sources_as_url_citations_resumed_on_another_worker(cluster: Cluster):
    token = cluster.tokens[USER]
    first = openai.OpenAI(base_url=f"{cluster.http(0)}/v1", api_key=token, max_retries=0, timeout=20)
    events = [e.model_dump() for e in first.responses.create(model="echo", input="/sources tea cake", stream=True)]
    types = [e["type"] for e in events]
    assert types.count("response.output_text.annotation.added") == 2
    assert types.index("response.output_text.annotation.added") < types.index("response.output_text.delta")
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "tea cake "
    citations = [(a["type"], a["title"], a["url"]) for a in final["output"][0]["content"][0]["annotations"]]
    assert citations == [
        ("url_citation", "Results for tea", "https://example.com/search?q=tea"),
        ("url_citation", "Results for cake", "https://example.com/search?q=cake"),
    ]
    other = openai.OpenAI(base_url=f"{cluster.http(2)}/v1", api_key=token, max_retries=0, timeout=20)
    resumed = [e.model_dump() for e in other.responses.retrieve(final["id"], stream=True, starting_after=3)]
    assert resumed == events[4:], "exactly the rest, elsewhere"
