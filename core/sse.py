"""Server-Sent Events framing: one pure function, golden-string tested."""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = ": keepalive\n\n"


def encode_event(*, data: Any, event: str | None = None, id: str | None = None) -> str:
    """One SSE event. ``data`` that is not a string is sent as compact JSON.

    A string containing newlines becomes several ``data:`` lines (the client joins them
    back with newlines), so no value can end the event early or forge a field.
    """
    text = data if isinstance(data, str) else compact_json(data)
    lines = []
    if event is not None:
        lines.append(f"event: {_single_line(event)}")
    lines.extend(f"data: {line}" for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    if id is not None:
        lines.append(f"id: {_single_line(id)}")
    return "\n".join(lines) + "\n\n"


def compact_json(data: Any) -> str:
    """``data`` as compact JSON that always has a UTF-8 form (for SSE and the stream log).

    A lone surrogate (JSON can spell one, and an upstream model may send one) has no
    UTF-8 form: a response would die on it mid-stream and Redis would refuse it. Escaped
    as \\udXXX it decodes to the same value (found by tests/core/test_sse_properties.py).
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if text.isascii():  # the common case, checked without copying
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text


def encode_comment(text: str) -> str:
    return "".join(f": {line}\n" for line in _lines(text)) + "\n"


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _single_line(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("SSE event names and ids must be single lines without NUL")
    return value
