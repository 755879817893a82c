"""The Responses events of a log (streaming.responses.events): numbered from the log alone,
so a reader resuming after any sequence number gets exactly the rest."""

from __future__ import annotations

import pytest

from core.eventlog import LogEvent
from streaming.responses.events import ResponseHead, log_after, replay

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


def test_resuming_after_any_number_reads_from_a_log_position_that_gives_exactly_the_rest():
    log = a_log([f"t{i} " for i in range(9)], done(10, "", "stop"))
    everything = replay(HEAD, log, starting_after=-1)
    for n in range(-1, len(everything)):
        position = log_after(n)
        rest = replay(HEAD, [e for e in log if e.seq > position], starting_after=n)
        assert rest == everything[n + 1 :], n
