"""A tool loop with the official ``openai`` SDK across three real workers (docs/protocol.md,
"Chat Completions parameters"): each round on another worker, and the first round's
stream replayed, tool call included, on a third."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.support.processes import Cluster
from tests.support.streams import auth, read_events

pytestmark = pytest.mark.multiworker

TOOLS: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


def test_a_tool_loop_across_workers_and_its_stream_replayed_elsewhere(cluster: Cluster):
    token = cluster.tokens["user2"]

    first, second = (
        openai.OpenAI(base_url=f"{cluster.http(worker)}/v1", api_key=token, max_retries=0, timeout=20) for worker in (0, 1)
    )

    messages: list[Any] = [{"role": "user", "content": "call get_weather"}]
    raw = first.chat.completions.with_raw_response.create(model="echo", messages=messages, tools=TOOLS, stream=True)
    stream_id = raw.headers["X-Stream-Id"]
    chunks = [chunk for chunk in raw.parse() if chunk.choices]
    pieces = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    call_id = pieces[0].id
    assert call_id and pieces[0].function and pieces[0].function.name == "get_weather"
    assert "".join(piece.function.arguments or "" for piece in pieces if piece.function) == "{}"

    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call_id, "content": "rain later"})
    with second.chat.completions.stream(model="echo", messages=messages, tools=TOOLS) as stream:
        answer = stream.get_final_completion()
    assert answer.choices[0].message.content == "rain later " and answer.choices[0].finish_reason == "stop"
    first.close()
    second.close()

    with httpx.stream("GET", f"{cluster.http(2)}/api/streams/{stream_id}/events", headers=auth(token), timeout=20) as resumed:
        replayed = read_events(resumed)
    assert [e["event"] for e in replayed] == ["start", "tool_call", "tool_call", "done"]
    assert replayed[1]["data"] == {"index": 0, "id": call_id, "name": "get_weather", "arguments": ""}
    assert replayed[2]["data"] == {"index": 0, "id": None, "name": None, "arguments": "{}"}
    done = replayed[-1]["data"]
    assert done["finish_reason"] == "tool_calls" and done["content"] == ""
    assert done["tool_calls"] == [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]


def chunk_events(lines: Iterator[str], *, until_contents: int | None = None) -> list[tuple[str | None, str]]:
    """(id, data) of the SSE events read from ``lines``, up to ``until_contents`` chunks with content."""
    events: list[tuple[str | None, str]] = []
    event_id, data = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data is not None:
            events.append((event_id, data))
            event_id, data = None, None
            contents = [d for _, d in events if d != "[DONE]" and '"content":"' in d]
            if until_contents is not None and len(contents) >= until_contents:
                break
    return events


def test_a_dropped_v1_stream_is_read_on_as_chunks_on_another_worker(cluster: Cluster):
    token = cluster.tokens["user2"]
    body = {"model": "echo", "messages": [{"role": "user", "content": "alpha beta gamma"}], "max_tokens": 40, "stream": True}
    headers = {**auth(token), "X-Stream-Event-Ids": "1"}  # ids on the live stream, to resume mid-way
    with httpx.stream("POST", f"{cluster.http(0)}/v1/chat/completions", json=body, headers=headers, timeout=20) as live:
        stream_id = live.headers["X-Stream-Id"]
        first = chunk_events(live.iter_lines(), until_contents=5)
    # The client dropped; it reads on elsewhere from the last chunk it has.
    last_id = first[-1][0]
    assert last_id and last_id.startswith(f"{stream_id}:")
    url = f"{cluster.http(1)}/api/streams/{stream_id}/events?format=openai"
    with httpx.stream("GET", url, headers={**auth(token), "Last-Event-ID": last_id}, timeout=20) as resumed:
        rest = chunk_events(resumed.iter_lines())
    assert rest[-1][1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(data) for _, data in first + rest[:-1]]
    assert [c.choices[0].delta.role for c in chunks].count("assistant") == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "".join(["alpha ", "beta ", "gamma "][i % 3] for i in range(40)), "every token once"
    assert chunks[-1].choices[0].finish_reason == "length"
