"""The Responses events of a log (streaming.responses.events): numbered from the log alone,
so a reader resuming after any sequence number gets exactly the rest."""

from __future__ import annotations

import pytest

from core.eventlog import LogEvent
from streaming.responses.events import ResponseHead, replay, translate

HEAD = ResponseHead(
    stream_id="0" * 32,
    model="echo",
    created_at=0,
    instructions=None,
    max_output_tokens=None,
    background=False,
    previous_response_id=None,
    input_tokens=1,
)


def a_log(tokens: list[str], final: LogEvent | None) -> list[LogEvent]:
    events = [LogEvent(0, "start", {"stream_id": HEAD.stream_id})]
    events += [LogEvent(i + 1, "token", {"index": i, "token": t}) for i, t in enumerate(tokens)]
    return events + ([final] if final is not None else [])


def done(seq: int, content: str, reason: str) -> LogEvent:
    return LogEvent(seq, "done", {"finish_reason": reason, "content": content, "usage": {"completion_tokens": 2}})


@pytest.mark.parametrize(
    ("reason", "closing", "status"),
    [
        ("stop", "response.completed", "completed"),
        ("length", "response.incomplete", "incomplete"),
        ("cancelled", "response.completed", "cancelled"),
    ],
)
def test_every_log_becomes_contiguous_numbered_events_ending_as_it_ended(reason: str, closing: str, status: str):
    log = a_log(["a ", "b "], done(3, "a b ", reason))
    events = replay(HEAD, log, starting_after=-1)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == closing and events[-1]["response"]["status"] == status
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "a b "


def test_an_error_fails_the_response_with_its_partial_output():
    log = a_log(["a "], LogEvent(2, "error", {"code": "producer_lost", "detail": "gone", "content": "a "}))
    last = replay(HEAD, log, starting_after=-1)[-1]
    assert last["type"] == "response.failed" and last["response"]["error"]["code"] == "server_error"


def test_resuming_after_any_number_gives_exactly_the_rest():
    log = a_log([f"t{i} " for i in range(9)], done(10, "", "stop"))
    everything = replay(HEAD, log, starting_after=-1)
    for n in range(-1, len(everything)):
        assert replay(HEAD, log, starting_after=n) == everything[n + 1 :], n


def test_reasoning_and_tool_calls_become_output_items_as_openai_streams_them():
    log = [
        LogEvent(0, "start", {"stream_id": HEAD.stream_id}),
        LogEvent(1, "reasoning", {"text": "The user "}),
        LogEvent(2, "reasoning", {"text": "wants rain."}),
        LogEvent(3, "token", {"index": 2, "token": "Checking."}),
        LogEvent(4, "tool_call", {"index": 0, "id": "call_a", "name": "get_weather", "arguments": ""}),
        LogEvent(5, "tool_call", {"index": 0, "id": None, "name": None, "arguments": '{"city":'}),
        LogEvent(6, "tool_call", {"index": 1, "id": "call_b", "name": "get_time", "arguments": "{}"}),
        LogEvent(7, "tool_call", {"index": 0, "id": None, "name": None, "arguments": '"Oslo"}'}),
        done(8, "Checking.", "tool_calls"),
    ]
    events = replay(HEAD, log, starting_after=-1)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [(e["type"], e.get("output_index")) for e in events] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.reasoning_text.delta", 0),
        ("response.reasoning_text.delta", 0),
        ("response.output_item.added", 1),
        ("response.content_part.added", 1),
        ("response.output_text.delta", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.output_item.added", 3),
        ("response.function_call_arguments.delta", 3),
        ("response.function_call_arguments.delta", 2),
        ("response.reasoning_text.done", 0),
        ("response.output_item.done", 0),
        ("response.output_text.done", 1),
        ("response.content_part.done", 1),
        ("response.output_item.done", 1),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.function_call_arguments.done", 3),
        ("response.output_item.done", 3),
        ("response.completed", None),
    ]
    added = events[8]["item"]
    assert added == {
        "id": f"fc_{HEAD.stream_id}_0",
        "type": "function_call",
        "call_id": "call_a",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "function_call"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "The user wants rain."}]
    assert output[1]["content"][0]["text"] == "Checking."
    assert (output[2]["call_id"], output[2]["arguments"]) == ("call_a", '{"city":"Oslo"}')
    assert (output[3]["call_id"], output[3]["name"], output[3]["arguments"]) == ("call_b", "get_time", "{}")
    assert events[-1]["response"]["status"] == "completed"
    assert translate(HEAD, log).response() == events[-1]["response"], "the Response object is the stream's last word"
    assert translate(HEAD, log[:5]).response()["output"][2]["status"] == "in_progress"


def test_sources_become_url_citations_of_the_message_and_status_and_tool_results_are_left_out():
    """docs/protocol.md, "Responses API": OpenAI has no status or tool-result output of a
    function tool the server ran; sources are what its url_citation annotations carry."""
    sources = [{"title": "Tea", "url": "https://example.com/tea"}, {"title": "Cake", "url": "https://example.com/cake"}]
    log = [
        LogEvent(0, "start", {"stream_id": HEAD.stream_id}),
        LogEvent(1, "status", {"status": "thinking"}),
        LogEvent(2, "tool_result", {"tool_call_id": "call_a", "name": "search", "content": "tea, cake"}),
        LogEvent(3, "sources", {"sources": sources}),
        LogEvent(4, "token", {"index": 3, "token": "tea "}),
        done(5, "tea ", "stop"),
    ]
    events = replay(HEAD, log, starting_after=-1)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.annotation.added",
        "response.output_text.annotation.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    citations = [
        {"type": "url_citation", "start_index": 0, "end_index": 0, "url": s["url"], "title": s["title"]} for s in sources
    ]
    assert [(e["annotation_index"], e["annotation"]) for e in events[4:6]] == list(enumerate(citations))
    assert events[4]["item_id"] == HEAD.item_id and events[4]["output_index"] == 0 and events[4]["content_index"] == 0
    assert events[8]["part"]["annotations"] == citations
    assert events[-1]["response"]["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "tea ",
        "annotations": citations,
        "logprobs": [],
    }
    for n in range(-1, len(events)):
        assert replay(HEAD, log, starting_after=n) == events[n + 1 :], n
