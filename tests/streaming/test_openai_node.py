"""The official ``openai`` npm package (package.json; tests/support/node.py) against three
real daphne workers (docs/protocol.md, "Chat Completions parameters" and "Responses
API"): chat completions streamed and not, a two-round tool loop with the echo model with
each round on another worker, and responses.create streamed: text, a function tool
answered on another worker, and a background response resumed elsewhere with
starting_after."""

from __future__ import annotations

import pytest

from streaming.services import count_tokens
from tests.support.node import run_node
from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker

SCRIPT = """
import OpenAI from "openai";
const { urls, token } = INPUT;
const client = (i) => new OpenAI({ baseURL: urls[i] + "/v1", apiKey: token, maxRetries: 0, timeout: 20000 });
const out = {};

const plain = await client(0).chat.completions.create({
  model: "echo", messages: [{ role: "user", content: "hello from node" }],
});
out.plain = { content: plain.choices[0].message.content, finish: plain.choices[0].finish_reason,
              object: plain.object, usage: plain.usage };

const stream = await client(1).chat.completions.create({
  model: "echo", messages: [{ role: "user", content: "one two three" }], stream: true,
  stream_options: { include_usage: true },
});
const deltas = [];
let finish = null, usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  if (!chunk.choices.length) continue;
  if (chunk.choices[0].delta.content) deltas.push(chunk.choices[0].delta.content);
  finish = chunk.choices[0].finish_reason ?? finish;
}
out.streamed = { deltas, finish, usage };

// A tool loop: the first round on worker 0 streamed (the SDK's own accumulator), the second on worker 2.
const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } }];
const messages = [{ role: "user", content: "call get_weather please" }];
const runner = client(0).chat.completions.stream({ model: "echo", messages, tools });
const first = await runner.finalChatCompletion();
const call = first.choices[0].message.tool_calls[0];
out.first = { finish: first.choices[0].finish_reason, content: first.choices[0].message.content,
              name: call.function.name, args: call.function.arguments, id: call.id };
messages.push(first.choices[0].message);
messages.push({ role: "tool", tool_call_id: call.id, content: "sunny and warm" });
const second = await client(2).chat.completions.create({ model: "echo", messages, tools });
out.second = { finish: second.choices[0].finish_reason, content: second.choices[0].message.content };

// The same loop driven by the SDK's runTools helper, which calls the function itself.
const looped = client(1).chat.completions.runTools({
  model: "echo",
  messages: [{ role: "user", content: "call get_weather" }],
  tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} },
                                          function: () => "cloudy", parse: JSON.parse } }],
});
out.runTools = await looped.finalContent();

const events = [];
const responseStream = await client(2).responses.create({ model: "echo", input: "stream this reply", stream: true });
for await (const event of responseStream) events.push(event);
out.responses = {
  types: events.map((e) => e.type),
  sequence: events.map((e) => e.sequence_number),
  text: events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
  final: events.at(-1).response,
};

// Responses with a function tool: the call streamed on worker 0, its output answered on worker 1.
const rtools = [{ type: "function", name: "get_weather", parameters: { type: "object", properties: {} } }];
const asked = await client(0).responses.create({ model: "echo", input: "call get_weather", tools: rtools, stream: true });
const askedEvents = [];
for await (const event of asked) askedEvents.push(event);
const fc = askedEvents.at(-1).response.output.find((item) => item.type === "function_call");
const answered = await client(1).responses.create({
  model: "echo", tools: rtools, previous_response_id: askedEvents.at(-1).response.id,
  input: [{ type: "function_call_output", call_id: fc.call_id, output: "snow tonight" }],
});
out.responseTools = {
  types: askedEvents.map((e) => e.type), name: fc.name, args: fc.arguments, answer: answered.output_text,
};

// A background response read part-way on worker 0, then resumed with starting_after on worker 2.
const started = await client(0).responses.create({
  model: "echo", input: "a b c d e f g h", background: true, stream: true, max_output_tokens: 30,
});
const head = [];
for await (const event of started) { head.push(event); if (head.length === 8) break; }
const rest = [];
const resumed = await client(2).responses.retrieve(head[0].response.id, {
  stream: true, starting_after: head.at(-1).sequence_number,
});
for await (const event of resumed) rest.push(event);
const all = [...head, ...rest];
out.resumed = {
  sequence: all.map((e) => e.sequence_number),
  text: all.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
  status: all.at(-1).response.status,
};
console.log(JSON.stringify(out));
"""


def test_the_openai_npm_package_against_three_workers(cluster: Cluster):
    out = run_node(SCRIPT, input={"urls": [cluster.http(i) for i in range(3)], "token": cluster.tokens["user7"]}, timeout=60)

    assert out["plain"]["object"] == "chat.completion"
    assert out["plain"]["content"] == "hello from node " and out["plain"]["finish"] == "stop"
    assert out["plain"]["usage"]["completion_tokens"] == count_tokens("hello from node ")

    assert out["streamed"]["deltas"] == ["one ", "two ", "three "] and out["streamed"]["finish"] == "stop"
    assert out["streamed"]["usage"]["completion_tokens"] == count_tokens("one two three ")

    first = out["first"]
    assert first["finish"] == "tool_calls" and first["content"] is None
    assert first["name"] == "get_weather" and first["args"] == "{}" and first["id"].startswith("call_")
    assert out["second"] == {"finish": "stop", "content": "sunny and warm "}
    assert out["runTools"] == "cloudy "

    responses = out["responses"]
    assert responses["types"] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert responses["sequence"] == list(range(len(responses["types"])))
    assert responses["text"] == "stream this reply "
    final = responses["final"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "stream this reply "
    assert final["usage"]["output_tokens"] == count_tokens("stream this reply ")

    tools = out["responseTools"]
    assert tools["types"] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert (tools["name"], tools["args"], tools["answer"]) == ("get_weather", "{}", "snow tonight ")

    resumed = out["resumed"]
    assert resumed["sequence"] == list(range(len(resumed["sequence"]))), "nothing lost or doubled"
    assert resumed["text"] == "".join(f"{w} " for w in "abcdefgh" * 4)[: 2 * 30] and resumed["status"] == "incomplete"
