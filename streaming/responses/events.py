"""A token stream's log, as OpenAI's Responses API sees it (docs/protocol.md, "Responses API").

Pure translation: each log event maps to Responses stream events on its own, numbered
from the log's seq alone, so every reader on every worker numbers them the same and a
reader resuming with ``starting_after`` gets exactly the rest. Log seq 0 (start) is
sequence numbers 0-3, a token at seq k is k + 3, the final event at seq f is f + 3 to
f + 6.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.eventlog import LogEvent

# The sequence numbers the start event takes before the first token's.
OPENING_EVENTS = 4
# The sequence numbers the final event takes.
CLOSING_EVENTS = 4


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """What a response was asked for (kept beside its log)."""

    stream_id: str
    model: str
    created_at: int
    instructions: str | None
    max_output_tokens: int | None
    background: bool
    previous_response_id: str | None
    input_tokens: int

    @property
    def id(self) -> str:
        return f"resp_{self.stream_id}"

    @property
    def item_id(self) -> str:
        return f"msg_{self.stream_id}"


def first_sequence(seq: int) -> int:
    """The first sequence number of log event ``seq``."""
    return 0 if seq == 0 else seq + OPENING_EVENTS - 1


def last_sequence(seq: int, kind: str) -> int:
    """The last sequence number of log event ``seq`` of ``kind``."""
    if seq == 0:
        return OPENING_EVENTS - 1
    return first_sequence(seq) + (CLOSING_EVENTS - 1 if kind in ("done", "error") else 0)


def log_after(starting_after: int) -> int:
    """The log position to read after for every event numbered above ``starting_after``."""
    if starting_after < OPENING_EVENTS - 1:
        return -1
    # Log event s ends at most at s + OPENING_EVENTS - 1 + CLOSING_EVENTS - 1: earlier ones are all seen.
    return max(-1, starting_after - (OPENING_EVENTS - 1) - (CLOSING_EVENTS - 1))


def _status(final: LogEvent | None) -> str:
    if final is None:
        return "in_progress"
    if final.kind == "error":
        return "failed"
    reason = final.data.get("finish_reason")
    if reason == "length":
        return "incomplete"
    if reason == "cancelled":
        return "cancelled"
    return "completed"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(head: ResponseHead, *, text: str, status: str, parts: bool = True) -> dict[str, Any]:
    return {
        "id": head.item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part(text)] if parts else [],
    }


def response_object(head: ResponseHead, *, text: str, final: LogEvent | None) -> dict[str, Any]:
    """The Response object: ``text`` the output so far, ``final`` the log's done or error event (None while running)."""
    status = _status(final)
    item_status = "completed" if status == "completed" else ("in_progress" if final is None else "incomplete")
    output_tokens = (
        int(final.data.get("usage", {}).get("completion_tokens", 0)) if final is not None and final.kind == "done" else 0
    )
    error = None
    if final is not None and final.kind == "error":
        error = {"code": "server_error", "message": f"{final.data['code']}: {final.data['detail']}"}
    return {
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "background": head.background,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": head.instructions,
        "max_output_tokens": head.max_output_tokens,
        "model": head.model,
        "output": [_message(head, text=text, status=item_status)] if text or final is not None else [],
        "parallel_tool_calls": False,
        "previous_response_id": head.previous_response_id,
        "store": True,
        "temperature": None,
        "top_p": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "truncation": "disabled",
        "metadata": {},
        "usage": None
        if final is None
        else {
            "input_tokens": head.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": head.input_tokens + output_tokens,
        },
    }


def stream_events(head: ResponseHead, event: LogEvent) -> list[dict[str, Any]]:
    """The Responses stream events of one log event, each with its ``sequence_number``."""
    n = first_sequence(event.seq)
    where = {"item_id": head.item_id, "output_index": 0, "content_index": 0}
    if event.kind == "start":
        running = response_object(head, text="", final=None)
        return [
            {"type": "response.created", "sequence_number": 0, "response": {**running, "status": "queued"}},
            {"type": "response.in_progress", "sequence_number": 1, "response": running},
            {
                "type": "response.output_item.added",
                "sequence_number": 2,
                "output_index": 0,
                "item": _message(head, text="", status="in_progress", parts=False),
            },
            {"type": "response.content_part.added", "sequence_number": 3, **where, "part": _text_part("")},
        ]
    if event.kind == "token":
        return [
            {"type": "response.output_text.delta", "sequence_number": n, **where, "delta": event.data["token"], "logprobs": []}
        ]
    if event.kind in ("done", "error"):
        text = str(event.data.get("content", ""))
        final = response_object(head, text=text, final=event)
        status = final["status"]
        item = final["output"][0]
        closing = {
            "completed": "response.completed",
            "incomplete": "response.incomplete",
            "failed": "response.failed",
        }.get(status, "response.completed")  # OpenAI streams no event of its own for a cancel
        return [
            {"type": "response.output_text.done", "sequence_number": n, **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", "sequence_number": n + 1, **where, "part": _text_part(text)},
            {"type": "response.output_item.done", "sequence_number": n + 2, "output_index": 0, "item": item},
            {"type": closing, "sequence_number": n + 3, "response": final},
        ]
    return []  # kinds this slice does not translate yet


def replay(head: ResponseHead, events: Iterable[LogEvent], *, starting_after: int) -> list[dict[str, Any]]:
    """Every stream event of ``events`` numbered above ``starting_after``, in order."""
    return [out for event in events for out in stream_events(head, event) if out["sequence_number"] > starting_after]


def summary(events: Iterable[LogEvent]) -> tuple[str, LogEvent | None]:
    """The output text so far and the final event (None while running)."""
    tokens: list[str] = []
    final = None
    for event in events:
        if event.kind == "token":
            tokens.append(event.data["token"])
        elif event.kind in ("done", "error"):
            final = event
    return (str(final.data.get("content", "")) if final is not None else "".join(tokens)), final


def head_from(stream_id: str, raw: Mapping[str, str]) -> ResponseHead:
    return ResponseHead(
        stream_id=stream_id,
        model=raw.get("model", ""),
        created_at=int(raw.get("created_at", "0")),
        instructions=raw.get("instructions") or None,
        max_output_tokens=int(raw["max_output_tokens"]) if raw.get("max_output_tokens") else None,
        background=raw.get("background") == "1",
        previous_response_id=raw.get("previous_response_id") or None,
        input_tokens=int(raw.get("input_tokens", "0")),
    )
