"""Backends against a faked upstream (httpx.MockTransport): no network."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from django.test import override_settings

from streaming.backends import (
    BackendError,
    ChatTurn,
    EchoBackend,
    OpenAIBackend,
    ReasoningDelta,
    Source,
    Sources,
    Status,
    ToolCallDelta,
    ToolResult,
)

pytestmark = pytest.mark.asyncio

MESSAGES = [ChatTurn("system", "be brief"), ChatTurn("user", "hello there")]


def sse_chunks(*contents: str, finish: str = "stop") -> bytes:
    lines = []
    for content in contents:
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
        lines.append(f"data: {json.dumps(chunk)}\n\n")
    lines.append(f"data: {json.dumps({'id': 'x', 'choices': [{'index': 0, 'delta': {}, 'finish_reason': finish}]})}\n\n")
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


async def collect(backend, max_tokens=None):
    generation = backend.generate(messages=MESSAGES, max_tokens=max_tokens)
    tokens = []
    async for batch in generation:
        tokens.extend(batch)
    return tokens, generation.finish_reason


@override_settings(LLM_BACKEND="openai", LLM_BASE_URL="http://upstream.test/v1", LLM_API_KEY="sk-test", LLM_MODEL="gpt-test")
async def test_openai_backend_streams_tokens_and_sends_the_request_openai_expects():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["Authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200, content=sse_chunks("Hel", "lo", finish="length"), headers={"Content-Type": "text/event-stream"}
        )

    tokens, finish = await collect(OpenAIBackend(transport=httpx.MockTransport(handler)), max_tokens=2)
    assert tokens == ["Hel", "lo"] and finish == "length"
    assert seen["url"] == "http://upstream.test/v1/chat/completions" and seen["auth"] == "Bearer sk-test"
    assert seen["body"] == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "stream": True,
        "max_tokens": 2,
    }


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(500, text="boom"), "upstream_error"),
        (httpx.Response(200, content=b"data: {not json}\n\n"), "upstream_malformed"),
        (httpx.Response(200, content=b'data: {"choices": "nope"}\n\n'), "upstream_malformed"),
        (httpx.Response(200, content=b'data: {"choices":[{"delta":{"content":5}}]}\n\n'), "upstream_malformed"),
        (httpx.Response(200, content=b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'), "upstream_error"),  # no [DONE]
    ],
)
@override_settings(LLM_BACKEND="openai")
async def test_openai_backend_failures_end_with_a_code(response, code):
    backend = OpenAIBackend(transport=httpx.MockTransport(lambda request: response))
    with pytest.raises(BackendError) as raised:
        await collect(backend)
    assert raised.value.code == code


@override_settings(LLM_BACKEND="openai", LLM_TIMEOUT_SECONDS=0.2)
async def test_openai_backend_time_out_is_an_error_not_a_hang():
    def handler(request):
        raise httpx.ReadTimeout("upstream too slow", request=request)

    with pytest.raises(BackendError) as raised:
        await collect(OpenAIBackend(transport=httpx.MockTransport(handler)))
    assert raised.value.code == "upstream_timeout"


@override_settings(LLM_BACKEND="openai", LLM_TIMEOUT_SECONDS=0.2)
async def test_openai_backend_upstream_that_hangs_mid_stream_times_out():
    async def body():
        yield b'data: {"choices":[{"delta":{"content":"first"}}]}\n\n'
        await asyncio.sleep(30)  # then nothing, ever

    def handler(request):
        return httpx.Response(200, content=body())

    started = asyncio.get_running_loop().time()
    with pytest.raises(BackendError) as raised:
        await collect(OpenAIBackend(transport=httpx.MockTransport(handler)))
    assert raised.value.code == "upstream_timeout"
    assert asyncio.get_running_loop().time() - started < 2


@override_settings(LLM_BACKEND="openai")
async def test_openai_backend_unreachable_upstream():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(BackendError) as raised:
        await collect(OpenAIBackend(transport=httpx.MockTransport(handler)))
    assert raised.value.code == "upstream_unavailable"


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_one_pass_without_max_tokens():
    tokens, finish = await collect(EchoBackend())
    assert tokens == ["hello ", "there "] and finish == "stop"


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_repeats_cyclically_up_to_max_tokens():
    tokens, finish = await collect(EchoBackend(), max_tokens=5)
    assert tokens == ["hello ", "there ", "hello ", "there ", "hello "] and finish == "length"


@override_settings(LLM_TOKEN_DELAY_MS=30)
async def test_echo_paces_tokens():
    started = asyncio.get_running_loop().time()
    tokens, _ = await collect(EchoBackend(), max_tokens=4)
    assert len(tokens) == 4
    assert asyncio.get_running_loop().time() - started >= 0.11


async def collect_pieces(backend, messages, params=None):
    generation = backend.generate(messages=messages, max_tokens=None, params=params)
    pieces = []
    async for batch in generation.pieces():
        pieces.extend(batch)
    return pieces, generation.finish_reason


@override_settings(LLM_BACKEND="openai")
async def test_openai_backend_parses_tool_calls_and_reasoning_and_iterating_gives_only_text():
    chunks = [
        {"choices": [{"delta": {"reasoning_content": "hmm"}}]},
        {"choices": [{"delta": {"reasoning": "...", "content": "ok"}}]},  # OpenRouter's name
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},  # no index: its position
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    backend = OpenAIBackend(transport=httpx.MockTransport(lambda request: httpx.Response(200, text=body)))
    pieces, finish = await collect_pieces(backend, MESSAGES)
    assert pieces == [
        ReasoningDelta("hmm"),
        ReasoningDelta("..."),
        "ok",
        ToolCallDelta(0, "c1", "f", ""),
        ToolCallDelta(0, None, None, "{}"),
    ]
    assert finish == "tool_calls"
    assert await collect(backend) == (["ok"], "tool_calls")


@pytest.mark.parametrize(
    "delta",
    [
        {"tool_calls": {"index": 0}},
        {"tool_calls": ["x"]},
        {"tool_calls": [{"index": "0"}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": {}}}]},
        {"reasoning_content": 5},
        "text",
    ],
)
@override_settings(LLM_BACKEND="openai")
async def test_openai_backend_malformed_tool_calls_or_reasoning(delta):
    body = f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\ndata: [DONE]\n\n"
    backend = OpenAIBackend(transport=httpx.MockTransport(lambda request: httpx.Response(200, text=body)))
    with pytest.raises(BackendError) as raised:
        await collect_pieces(backend, MESSAGES)
    assert raised.value.code == "upstream_malformed"


TOOLS = {"tools": [{"type": "function", "function": {"name": "lookup"}}]}


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_calls_an_offered_tool_and_echoes_a_tools_result():
    pieces, finish = await collect_pieces(EchoBackend(), [ChatTurn("user", "call lookup please")], TOOLS)
    assert finish == "tool_calls" and len(pieces) == 2
    assert pieces[0].name == "lookup" and pieces[0].id.startswith("call_") and pieces[0].arguments == ""
    assert pieces[1] == ToolCallDelta(0, None, None, "{}")
    result = [ChatTurn("user", "call lookup"), ChatTurn("assistant", ""), ChatTurn("tool", "found it")]
    assert await collect_pieces(EchoBackend(), result, TOOLS) == (["found ", "it "], "stop")
    assert await collect_pieces(EchoBackend(), [ChatTurn("user", "call lookup")], {}) == (["call ", "lookup "], "stop")


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_streams_status_sources_and_reasoning_before_its_words_when_asked():
    """docs/protocol.md, "Events": "/sources" streams a ``thinking`` status then sources,
    "/think" reasoning, before the echoed words (the prefixes are not echoed)."""
    pieces, finish = await collect_pieces(EchoBackend(), [ChatTurn("user", "/sources /think tea cake tea")])
    assert finish == "stop"
    assert pieces[0] == Status("thinking")
    reasoning = [p for p in pieces if isinstance(p, ReasoningDelta)]
    assert "".join(p.text for p in reasoning) == "Echoing these words: tea cake tea "
    assert pieces[1 : 1 + len(reasoning)] == reasoning, "reasoning comes after the status"
    sources = pieces[1 + len(reasoning)]
    assert sources == Sources(
        (
            Source("Results for tea", "https://example.com/search?q=tea"),
            Source("Results for cake", "https://example.com/search?q=cake"),
        )
    )
    assert pieces[2 + len(reasoning) :] == ["tea ", "cake ", "tea "]
    assert await collect(EchoBackend(), max_tokens=None) == (["hello ", "there "], "stop"), "text only when iterated"
    only_think, _ = await collect_pieces(EchoBackend(), [ChatTurn("user", "/think hi")])
    assert only_think == [*(ReasoningDelta(w) for w in ("Echoing ", "these ", "words: ", "hi ")), "hi "]
    plain, _ = await collect_pieces(EchoBackend(), [ChatTurn("user", "hi /think")])
    assert plain == ["hi ", "/think "], "a prefix only at the start"


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_echo_logs_the_tool_result_it_answers():
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    turns = [
        ChatTurn("user", "call lookup"),
        ChatTurn("assistant", "", {"role": "assistant", "content": None, "tool_calls": [call]}),
        ChatTurn("tool", "found it", {"role": "tool", "tool_call_id": "call_1", "content": "found it"}),
    ]
    pieces, finish = await collect_pieces(EchoBackend(), turns, TOOLS)
    assert pieces == [ToolResult("call_1", "lookup", "found it"), "found ", "it "] and finish == "stop"


@override_settings(LLM_BACKEND="openai")
async def test_openai_backend_batches_what_one_read_brings_and_takes_a_last_line_without_a_break():
    """Each read of the upstream is one batch (one log append), however many chunks it holds;
    a read may end mid-line, and the [DONE] line may have no line break before the close."""
    chunks = [{"choices": [{"delta": {"content": f"t{i} "}}]} for i in range(5)]
    text = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks) + "data: [DONE]"
    reads = [text[:30].encode(), text[30:].encode()]  # the first read ends mid-line

    async def stream():
        for read in reads:
            yield read

    backend = OpenAIBackend(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=stream())))
    generation = backend.generate(messages=MESSAGES, max_tokens=None)
    batches = [batch async for batch in generation.pieces()]
    assert batches == [["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]]
    cut = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)  # no [DONE]: an error, not a hang
    closed = OpenAIBackend(transport=httpx.MockTransport(lambda request: httpx.Response(200, text=cut)))
    with pytest.raises(BackendError, match="before"):
        await collect_pieces(closed, MESSAGES)
