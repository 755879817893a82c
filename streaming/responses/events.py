"""A token stream's log, as OpenAI's Responses API sees it (docs/protocol.md, "Responses API").

Pure translation: a Translator reads the log from its start, event by event, and turns it
into Responses stream events numbered 0, 1, 2, ... and into the Response object. The
numbering is a function of the log alone, so every reader on every worker numbers them
the same, and a reader resuming with ``starting_after`` translates the log from its start
and keeps the events numbered above it.

Output items open as the log first needs them, in OpenAI's shapes: a ``message`` with
one ``output_text`` part at the first token, a ``reasoning`` item (its text as a
``reasoning_text`` part) at the first reasoning piece, a ``function_call`` item at each
tool call's first piece (its arguments then follow as
``response.function_call_arguments.delta``). The log's ``sources`` become ``url_citation``
annotations of the message's text (opening the message if need be), announced with
``response.output_text.annotation.added``; ``status`` and ``tool_result`` events have no
counterpart in OpenAI's stream and are left out. The final event closes every item, in
output order, then ends the response. A reply with no output at all gets an empty
message, so a finished response always has one item.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.eventlog import LogEvent


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
    tools: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"resp_{self.stream_id}"

    @property
    def item_id(self) -> str:
        return f"msg_{self.stream_id}"

    @property
    def reasoning_id(self) -> str:
        return f"rs_{self.stream_id}"

    def call_item_id(self, index: int) -> str:
        return f"fc_{self.stream_id}_{index}"


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


def _text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": list(annotations or []), "logprobs": []}


def _citation(source: Mapping[str, Any]) -> dict[str, Any]:
    """A source as OpenAI's url_citation. The sources back the whole reply and come before
    its text, so the cited span is empty, at the start."""
    return {"type": "url_citation", "start_index": 0, "end_index": 0, "url": source["url"], "title": source["title"]}


class Translator:
    """Log events in, Responses stream events out (``feed``), numbered from 0; ``response()``
    is the Response object as of the events fed so far."""

    def __init__(self, head: ResponseHead) -> None:
        self.head = head
        self.item_id = head.item_id  # the message's, on every text delta
        self.next = 0  # the next sequence number
        self.items: list[dict[str, Any]] = []  # output items, in output order (each with "_text" while open)
        self.message: int | None = None  # output index of the message
        self.reasoning: int | None = None  # output index of the reasoning item
        self.calls: dict[int, int] = {}  # a tool call's index in the log -> its output index
        self.final: LogEvent | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.next, **fields}
        self.next += 1
        return event

    # ---- items ---------------------------------------------------------------------------------------------
    def _item(self, index: int, *, status: str | None = None) -> dict[str, Any]:
        """Output item ``index`` in OpenAI's shape."""
        item = self.items[index]
        done_status = status or "in_progress"
        if item["type"] == "message":
            return {
                "id": item["id"],
                "type": "message",
                "role": "assistant",
                "status": done_status,
                "content": [_text_part("".join(item["_text"]), item["_annotations"])] if item["_parts"] else [],
            }
        if item["type"] == "reasoning":
            return {
                "id": item["id"],
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "".join(item["_text"])}],
                "status": done_status,
            }
        return {
            "id": item["id"],
            "type": "function_call",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": "".join(item["_text"]),
            "status": done_status,
        }

    def _open(self, item: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        index = len(self.items)
        self.items.append({**item, "_text": [], "_parts": False, "_annotations": []})
        return index, [self._event("response.output_item.added", output_index=index, item=self._item(index))]

    def _open_message(self) -> tuple[int, list[dict[str, Any]]]:
        index, out = self._open({"id": self.head.item_id, "type": "message"})
        self.message = index
        self.items[index]["_parts"] = True
        where = {"item_id": self.head.item_id, "output_index": index, "content_index": 0}
        out.append(self._event("response.content_part.added", **where, part=_text_part("")))
        return index, out

    def _close(self, index: int, status: str) -> list[dict[str, Any]]:
        item = self.items[index]
        text = "".join(item["_text"])
        where = {"item_id": item["id"], "output_index": index}
        out = []
        if item["type"] == "message":
            out.append(self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            part = _text_part(text, item["_annotations"])
            out.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        elif item["type"] == "reasoning":
            out.append(self._event("response.reasoning_text.done", **where, content_index=0, text=text))
        else:
            out.append(self._event("response.function_call_arguments.done", **where, name=item["name"], arguments=text))
        out.append(self._event("response.output_item.done", output_index=index, item=self._item(index, status=status)))
        return out

    # ---- the log ----------------------------------------------------------------------------------------------
    def feed(self, event: LogEvent) -> list[dict[str, Any]]:
        """The stream events of one log event (none for kinds not translated)."""
        if event.kind == "start":
            running = self.response()
            return [
                self._event("response.created", response={**running, "status": "queued"}),
                self._event("response.in_progress", response=running),
            ]
        if event.kind == "token":
            # The one event per token, so built in one step (bench-sse: a third of a Responses
            # stream's cost per token was this translation and its JSON).
            out: list[dict[str, Any]] = [] if self.message is not None else self._open_message()[1]
            assert self.message is not None
            token = event.data["token"]
            self.items[self.message]["_text"].append(token)
            delta = {
                "type": "response.output_text.delta",
                "sequence_number": self.next,
                "item_id": self.item_id,
                "output_index": self.message,
                "content_index": 0,
                "delta": token,
                "logprobs": [],
            }
            self.next += 1
            out.append(delta)
            return out
        if event.kind == "reasoning":
            out = []
            if self.reasoning is None:
                self.reasoning, out = self._open({"id": self.head.reasoning_id, "type": "reasoning"})
            self.items[self.reasoning]["_text"].append(event.data["text"])
            where = {"item_id": self.head.reasoning_id, "output_index": self.reasoning, "content_index": 0}
            return [*out, self._event("response.reasoning_text.delta", **where, delta=event.data["text"])]
        if event.kind == "tool_call":
            return self._tool_call(event.data)
        if event.kind == "sources":
            return self._sources(event.data["sources"])
        if event.kind in ("done", "error"):
            return self._end(event)
        return []

    def _sources(self, sources: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.message is None:
            _, out = self._open_message()
        assert self.message is not None
        annotations = self.items[self.message]["_annotations"]
        where = {"item_id": self.head.item_id, "output_index": self.message, "content_index": 0}
        for source in sources:
            annotations.append(_citation(source))
            out.append(
                self._event(
                    "response.output_text.annotation.added",
                    **where,
                    annotation_index=len(annotations) - 1,
                    annotation=annotations[-1],
                )
            )
        return out

    def _tool_call(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        log_index = int(data["index"])
        if log_index not in self.calls:
            item = {
                "id": self.head.call_item_id(log_index),
                "type": "function_call",
                "call_id": data.get("id") or f"call_{self.head.stream_id}_{log_index}",
                "name": data.get("name") or "",
            }
            self.calls[log_index], out = self._open(item)
        index = self.calls[log_index]
        if data.get("arguments"):
            self.items[index]["_text"].append(data["arguments"])
            where = {"item_id": self.items[index]["id"], "output_index": index}
            out.append(self._event("response.function_call_arguments.delta", **where, delta=data["arguments"]))
        return out

    def _end(self, event: LogEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.items:  # no output at all: an empty message, as a text-only reply would have had
            _, out = self._open_message()
        self.final = event
        status = _status(event)
        for index in range(len(self.items)):
            item_status = "completed" if status == "completed" or self.items[index]["type"] == "function_call" else "incomplete"
            out += self._close(index, item_status)
        final = self.response()
        closing = {
            "completed": "response.completed",
            "incomplete": "response.incomplete",
            "failed": "response.failed",
        }.get(status, "response.completed")  # OpenAI streams no event of its own for a cancel
        out.append(self._event(closing, response=final))
        return out

    def response(self) -> dict[str, Any]:
        """The Response object as of the events fed so far."""
        head, final = self.head, self.final
        status = _status(final)
        if final is None:
            output = [self._item(i) for i in range(len(self.items))]
        else:
            output = [
                self._item(
                    i,
                    status="completed" if status == "completed" or item["type"] == "function_call" else "incomplete",
                )
                for i, item in enumerate(self.items)
            ]
        usage = final.data.get("usage", {}) if final is not None and final.kind == "done" else {}
        output_tokens = int(usage.get("completion_tokens", 0))
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
            "output": output,
            "parallel_tool_calls": bool(head.tools),
            "previous_response_id": head.previous_response_id,
            "store": True,
            "temperature": None,
            "top_p": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto" if head.tools else "none",
            "tools": head.tools,
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

    def text(self) -> str:
        """The message's text so far."""
        return "".join(self.items[self.message]["_text"]) if self.message is not None else ""

    def tool_calls(self) -> list[dict[str, Any]]:
        """The function calls so far, as Chat Completions tool_calls."""
        return [
            {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": "".join(item["_text"])}}
            for item in self.items
            if item["type"] == "function_call"
        ]


def translate(head: ResponseHead, events: Iterable[LogEvent]) -> Translator:
    """A Translator fed ``events`` (a log from its start)."""
    translator = Translator(head)
    for event in events:
        translator.feed(event)
    return translator


def replay(head: ResponseHead, events: Iterable[LogEvent], *, starting_after: int) -> list[dict[str, Any]]:
    """Every stream event of a log (from its start) numbered above ``starting_after``, in order."""
    translator = Translator(head)
    return [out for event in events for out in translator.feed(event) if out["sequence_number"] > starting_after]


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
        tools=json.loads(raw["tools"]) if raw.get("tools") else [],
    )
