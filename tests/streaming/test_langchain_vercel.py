"""Clients nobody here wrote, against three real daphne workers (docs/protocol.md,
"Chat Completions parameters" and "Responses API"): LangChain's ChatOpenAI (invoke,
stream, bind_tools and a tool round trip) and the Vercel AI SDK (streamText with the
openai-compatible provider, with a tool, and with the openai provider's default
Responses API, with a tool too)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.support.node import run_node
from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker


@tool
def get_weather() -> str:
    """The weather where the user is."""
    return "rain later"


def chat(cluster: Cluster, worker: int, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="echo",
        base_url=f"{cluster.http(worker)}/v1",
        api_key=SecretStr(cluster.tokens["user8"]),
        max_retries=0,
        timeout=20,
        **options,
    )


def test_langchain_chat_openai_invoke_stream_and_a_tool_round_trip(cluster: Cluster):
    assert chat(cluster, 0).invoke("hello langchain").content == "hello langchain "
    pieces = [chunk.content for chunk in chat(cluster, 1).stream("one two three")]
    assert "".join(str(p) for p in pieces) == "one two three " and len([p for p in pieces if p]) == 3

    messages: list[Any] = [HumanMessage("call get_weather")]
    asked = chat(cluster, 2).bind_tools([get_weather]).invoke(messages)
    assert [call["name"] for call in asked.tool_calls] == ["get_weather"]
    assert asked.tool_calls[0]["args"] == {} and asked.response_metadata["finish_reason"] == "tool_calls"
    call_id = asked.tool_calls[0]["id"]
    messages += [asked, ToolMessage(get_weather.invoke({}), tool_call_id=call_id)]
    answered = chat(cluster, 0).bind_tools([get_weather]).invoke(messages)
    assert answered.content == "rain later " and not answered.tool_calls

    # Streamed, the call's pieces are put back together by LangChain.
    streamed: Any = None
    for chunk in chat(cluster, 1, streaming=True).bind_tools([get_weather]).stream([HumanMessage("call get_weather")]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and [c["name"] for c in streamed.tool_calls] == ["get_weather"]


VERCEL = """
import { streamText, tool, jsonSchema, stepCountIs } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { createOpenAI } from "@ai-sdk/openai";
const { urls, token } = INPUT;
const out = {};

const compatible = createOpenAICompatible({ name: "rooms", baseURL: urls[0] + "/v1", apiKey: token });
const plain = streamText({ model: compatible("echo"), prompt: "hello vercel" });
const pieces = [];
for await (const piece of plain.textStream) pieces.push(piece);
out.plain = { pieces, finish: await plain.finishReason };

const calls = [];
const looped = streamText({
  model: createOpenAICompatible({ name: "rooms", baseURL: urls[1] + "/v1", apiKey: token })("echo"),
  prompt: "call get_weather",
  tools: {
    get_weather: tool({
      description: "The weather where the user is",
      inputSchema: jsonSchema({ type: "object", properties: {} }),
      execute: async (input) => { calls.push(input); return "rain later"; },
    }),
  },
  stopWhen: stepCountIs(3),
});
out.tools = { text: await looped.text, calls, steps: (await looped.steps).map((s) => s.finishReason) };

// The default provider speaks the Responses API.
const openai = createOpenAI({ baseURL: urls[2] + "/v1", apiKey: token });
const responses = streamText({ model: openai("echo"), prompt: "responses from vercel" });
const parts = [];
for await (const piece of responses.textStream) parts.push(piece);
out.responses = { parts, finish: await responses.finishReason };

// A tool round trip through the Responses provider: function_call, then function_call_output.
const responseCalls = [];
const responseLoop = streamText({
  model: createOpenAI({ baseURL: urls[0] + "/v1", apiKey: token })("echo"),
  prompt: "call get_weather",
  tools: {
    get_weather: tool({
      description: "The weather where the user is",
      inputSchema: jsonSchema({ type: "object", properties: {} }),
      execute: async (input) => { responseCalls.push(input); return "dry all day"; },
    }),
  },
  stopWhen: stepCountIs(3),
});
out.responseTools = {
  text: await responseLoop.text, calls: responseCalls, steps: (await responseLoop.steps).map((s) => s.finishReason),
};
console.log(JSON.stringify(out));
"""


def test_the_vercel_ai_sdk_streams_text_and_tools(cluster: Cluster):
    out = run_node(VERCEL, input={"urls": [cluster.http(i) for i in range(3)], "token": cluster.tokens["user9"]}, timeout=60)
    assert "".join(out["plain"]["pieces"]) == "hello vercel " and out["plain"]["finish"] == "stop"
    assert out["tools"]["calls"] == [{}], "the SDK ran the tool the echo model called"
    assert out["tools"]["steps"] == ["tool-calls", "stop"] and out["tools"]["text"] == "rain later "
    assert "".join(out["responses"]["parts"]) == "responses from vercel " and out["responses"]["finish"] == "stop"
    assert out["responseTools"] == {"text": "dry all day ", "calls": [{}], "steps": ["tool-calls", "stop"]}
