"""A tool loop with the official ``openai`` SDK across three real workers (docs/protocol.md,
"Chat Completions parameters"): each round on another worker, and the first round's
stream replayed, tool call included, on a third."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import Cluster
from tests.support.streams import auth, read_events

pytestmark = pytest.mark.multiworker

TOOLS: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


def test_a_tool_loop_across_workers_and_its_stream_replayed_elsewhere(cluster: Cluster):
    token = cluster.tokens["user2"]

    def sdk(worker: int) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{cluster.http(worker)}/v1", api_key=token, max_retries=0, timeout=20)

    messages: list[Any] = [{"role": "user", "content": "call get_weather"}]
    raw = sdk(0).chat.completions.with_raw_response.create(model="echo", messages=messages, tools=TOOLS, stream=True)
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
    with sdk(1).chat.completions.stream(model="echo", messages=messages, tools=TOOLS) as stream:
        answer = stream.get_final_completion()
    assert answer.choices[0].message.content == "rain later " and answer.choices[0].finish_reason == "stop"

    with httpx.stream("GET", f"{cluster.http(2)}/api/streams/{stream_id}/events", headers=auth(token), timeout=20) as resumed:
        replayed = read_events(resumed)
    assert [e["event"] for e in replayed] == ["start", "tool_call", "tool_call", "done"]
    assert replayed[1]["data"] == {"index": 0, "id": call_id, "name": "get_weather", "arguments": ""}
    assert replayed[2]["data"] == {"index": 0, "id": None, "name": None, "arguments": "{}"}
    done = replayed[-1]["data"]
    assert done["finish_reason"] == "tool_calls" and done["content"] == ""
    assert done["tool_calls"] == [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
