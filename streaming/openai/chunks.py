"""A token stream's log as Chat Completions chunks (docs/protocol.md, "Chat Completions
parameters"): what a streamed /v1/chat/completions sends, and what a reader resuming it
by its X-Stream-Id gets with ``?format=openai``, from any worker.

Each chunk carries ``id: <stream_id>:<seq>``, the seq of the last log event in it, so a
reader resumes with Last-Event-ID exactly as from the native events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.eventlog import LogEvent
from core.sse import encode_event
from streaming.openai.errors import error_chunk

# Meta fields of a /v1 stream, beside the log's own (core.eventlog.RedisLog.annotate).
PREFIX = "v1_"


def finish_reason(reason: str) -> str:
    # docs/protocol.md, "Token streams": a reply cancelled through /api/streams/<id>/cancel
    # ends with "cancelled", not "stop", so a client can tell it from a finished one; the
    # SDKs take finish_reason as a plain string.
    return reason if reason in ("length", "cancelled", "tool_calls", "content_filter") else "stop"


def _tool_call_delta(data: Any) -> dict[str, Any]:
    """A log ``tool_call`` event as an entry of OpenAI's ``delta.tool_calls``: id, type
    and name with the call's first piece, as the upstream sent them."""
    entry: dict[str, Any] = {"index": data["index"]}
    if data.get("id"):
        entry["id"] = data["id"]
        entry["type"] = "function"
    function: dict[str, Any] = {"arguments": data.get("arguments") or ""}
    if data.get("name"):
        function = {"name": data["name"], **function}
    entry["function"] = function
    return entry


def deltas(events: Iterable[LogEvent]) -> list[tuple[dict[str, Any], int]]:
    """The ``delta``s of a batch of log events, in order, each with the seq of its last
    event: a run of tokens is one content delta, a run of reasoning one
    ``reasoning_content`` delta (vLLM's name), a run of tool call pieces one
    ``tool_calls`` delta (a call's argument pieces joined)."""
    out: list[tuple[dict[str, Any], int]] = []
    for event in events:
        last = out[-1][0] if out else {}
        if event.kind == "token":
            if "content" in last:
                last["content"] += event.data["token"]
            else:
                out.append(({"content": event.data["token"]}, event.seq))
        elif event.kind == "reasoning":
            if "reasoning_content" in last:
                last["reasoning_content"] += event.data["text"]
            else:
                out.append(({"reasoning_content": event.data["text"]}, event.seq))
        elif event.kind == "tool_call":
            entry = _tool_call_delta(event.data)
            calls = last.get("tool_calls")
            if calls is None:
                out.append(({"tool_calls": [entry]}, event.seq))
            elif calls[-1]["index"] == entry["index"] and "id" not in entry and "name" not in entry["function"]:
                calls[-1]["function"]["arguments"] += entry["function"]["arguments"]
            else:
                calls.append(entry)
        else:
            continue
        out[-1] = (out[-1][0], event.seq)
    return out


def usage(done: LogEvent, prompt_tokens: int) -> dict[str, int]:
    """A reply's ``usage``: the upstream's counts when it reported them (in the ``done``
    event), else ours (``prompt_tokens`` our estimate of the request's messages)."""
    counts = done.data["usage"]
    prompt, completion = int(counts.get("prompt_tokens", prompt_tokens)), int(counts["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass(slots=True)
class ChunkWriter:
    """Renders batches of a stream's log events as chunks, for one reader."""

    stream_id: str
    model: str
    created: int
    include_usage: bool
    prompt_tokens: int
    # The role comes with the first delta, as at OpenAI: its content is null when the
    # reply starts with a tool call or reasoning (the SDKs then accumulate a null content).
    # A reader resuming after seq 1 or later has had it (ids are seqs, the first delta's >= 1).
    role_due: bool = True
    # The live /v1 stream keeps OpenAI's framing exactly unless asked (a block is one
    # `data:` line, and clients that parse blocks by hand rely on it); a reader resuming
    # with ?format=openai gets ids, for its next Last-Event-ID. docs/protocol.md, "Chat Completions parameters".
    with_ids: bool = True
    _id_prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self._id_prefix = f"{self.stream_id}:"

    @classmethod
    def resuming(cls, stream_id: str, extra: Mapping[str, str], *, after: int, default_model: str) -> ChunkWriter:
        """The writer of a reader resuming after seq ``after``, from the stream's meta data."""
        return cls(
            stream_id=stream_id,
            model=extra.get(f"{PREFIX}model") or default_model,
            created=int(extra.get(f"{PREFIX}created") or time.time()),
            include_usage=extra.get(f"{PREFIX}usage") == "1",
            prompt_tokens=int(extra.get(f"{PREFIX}prompt_tokens") or 0),
            role_due=after < 1,
        )

    def meta(self) -> dict[str, str]:
        """What ``resuming`` needs, kept beside the log."""
        return {
            f"{PREFIX}model": self.model,
            f"{PREFIX}created": str(self.created),
            f"{PREFIX}usage": "1" if self.include_usage else "0",
            f"{PREFIX}prompt_tokens": str(self.prompt_tokens),
        }

    def _chunk(self, seq: int | None, *, delta: dict[str, Any] | None, finish: str | None = None, **more: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        payload = {
            "id": f"chatcmpl-{self.stream_id}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **more,
        }
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return encode_event(data=text, id=None if seq is None or not self.with_ids else f"{self._id_prefix}{seq}")

    def render(self, events: Sequence[LogEvent]) -> list[str]:
        """The SSE texts of one batch of log events (start events give none)."""
        found = deltas(events)
        last = events[-1] if events else None
        final = last is not None and last.kind in ("done", "error")
        if self.role_due and (found or final):
            role = {"role": "assistant", "content": None}
            found = (
                [(role | found[0][0], found[0][1]), *found[1:]] if found else [(role | {"content": ""}, last.seq if last else 0)]
            )
            self.role_due = False
        out = [self._chunk(seq, delta=delta) for delta, seq in found]
        if last is not None and last.kind == "done":
            out.append(self._chunk(last.seq, delta={}, finish=finish_reason(last.data["finish_reason"])))
            if self.include_usage:
                out.append(self._chunk(None, delta=None, usage=usage(last, self.prompt_tokens)))
            out.append("data: [DONE]\n\n")
        elif last is not None and last.kind == "error":
            out.append(f"id: {self._id_prefix}{last.seq}\n" + error_chunk(code=last.data["code"], detail=last.data["detail"]))
        return out
