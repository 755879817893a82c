"""Server-Sent Events: the framing (pure functions, golden-string tested), the response
every SSE view returns, and the one loop that turns batches of events into its body.

Core imports no app: what ends a response early (accounts ends it when the user's
credentials change) comes in as a ``watch`` wrapper around the body.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from core.errors import DomainError
from core.http import parse_id

T = TypeVar("T")

KEEPALIVE = ": keepalive\n\n"
# A comment after this many idle seconds keeps proxies and browsers from timing out.
KEEPALIVE_SECONDS = 15.0
# Events are sent in chunks of about this size: big enough that a fast reader gets a
# burst in few writes, small enough that a stalled one leaves little in the buffer.
MAX_CHUNK_CHARS = 16 * 1024

# Wraps a response's whole body (the opening comment included), e.g. to end it early.
BodyWatch = Callable[[AsyncIterator[str]], AsyncIterator[str]]


def encode_event(*, data: Any, event: str | None = None, id: str | None = None) -> str:
    """One SSE event. ``data`` that is not a string is sent as compact JSON.

    A string containing newlines becomes several ``data:`` lines (the client joins them
    back with newlines), so no value can end the event early or forge a field.
    """
    if isinstance(data, str):
        body = "\n".join(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    else:
        # JSON escapes every line break, so it is one line: no splitting (this runs for
        # every token a reader sends: docs/performance.md, "Per token").
        body = "data: " + compact_json(data)
    head = "" if event is None else f"event: {_single_line(event)}\n"
    tail = "" if id is None else f"id: {_single_line(id)}\n"
    return f"{head}{body}\n{tail}\n"


def compact_json(data: Any) -> str:
    """``data`` as compact JSON that always has a UTF-8 form (for SSE and the stream log).

    orjson's, since every token a reader sends goes through here: json.dumps with these
    options took 3 µs a call against orjson's 0.2 (a tenth of a token's server CPU in
    bench-sse). What orjson refuses goes through the standard library, as before: a lone
    surrogate (JSON can spell one, and an upstream model may send one) has no UTF-8 form,
    so a response would die on it mid-stream and Redis would refuse it; escaped as \\udXXX
    it decodes to the same value (found by tests/core/test_sse_properties.py). Integers
    past 64 bits and non-string keys take the same way. Infinity and NaN, which JSON cannot
    spell, become null.
    """
    try:
        return orjson.dumps(data).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        pass
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


OPENING = encode_comment("stream open")


# ---- the body ------------------------------------------------------------------------------------
def in_chunks(texts: list[str], *, limit: int) -> list[str]:
    """Whole events joined into chunks of about ``limit`` characters (an event larger than
    that is a chunk of its own)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for text in texts:
        if current and size + len(text) > limit:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text)
    if current:
        chunks.append("".join(current))
    return chunks


async def follow(
    *, batches: AsyncIterable[Sequence[T]], render: Callable[[T], str], keepalive_seconds: float = KEEPALIVE_SECONDS
) -> AsyncIterator[str]:
    """The one SSE follow loop: each batch of events as SSE text (``render`` makes one
    event's), in chunks; a keepalive comment once the body has been silent for
    ``keepalive_seconds``. ``batches`` yields an empty batch whenever it waited without
    news (at least every few seconds), which is when a keepalive may go out; the body
    ends when ``batches`` does."""
    idle_since = time.monotonic()
    async for batch in batches:
        if batch:
            idle_since = time.monotonic()
            # A read returns up to 1000 events, megabytes with long tokens: sent as one chunk,
            # all of it would sit in a stalled client's write buffer. In chunks, the server's
            # flow control (core/servers/daphne.py, uvicorn's own) stops after the first.
            for chunk in in_chunks([render(item) for item in batch], limit=MAX_CHUNK_CHARS):
                yield chunk
        elif time.monotonic() - idle_since >= keepalive_seconds:
            idle_since = time.monotonic()
            yield KEEPALIVE


async def _opened(body: AsyncIterator[str]) -> AsyncIterator[str]:
    # Servers send the status line and headers with the first body bytes (daphne does),
    # so a stream with nothing to say yet would leave its client waiting for them.
    yield OPENING
    async for chunk in body:
        yield chunk


def sse_response(
    *, body: AsyncIterator[str], headers: Mapping[str, str] | None = None, watch: BodyWatch | None = None
) -> StreamingHttpResponse:
    """The response of every SSE view: ``body`` (an async iterator: Django buffers a sync
    one under ASGI) after an opening comment, so headers reach the client at once.

    ``watch`` wraps the whole body, opening included, so that it is in place before the
    client hears anything (accounts.connections.credential_watch ends a response when
    the user's credentials change)."""
    opened = _opened(body)
    # The charset given, not only named in the content type: Django otherwise parses it out
    # of the Content-Type header again for every chunk it encodes.
    response = StreamingHttpResponse(
        watch(opened) if watch is not None else opened,
        content_type="text/event-stream; charset=utf-8",
        charset="utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# ---- where a reader resumes, and the end -----------------------------------------------------------
class LastEventIdError(DomainError):
    """A Last-Event-ID (or ?last_event_id=) that names no position of the stream: a 400
    whose detail shows a valid one, rather than a replay from the start that the client
    did not ask for (docs/protocol.md, "After the end")."""

    kind = "invalid"


def last_event_id(request: HttpRequest) -> str | None:
    """The position a reader sent: the Last-Event-ID header (an EventSource sends it on
    every reconnect) or ``?last_event_id=`` (a new EventSource cannot set headers); None
    when neither is there or it is empty (an EventSource that has seen no id sends none)."""
    return request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None


def parse_last_event_id(raw: str | None, *, prefix: str = "", example: str) -> int | None:
    """``<prefix><n>`` -> n, None when there is no Last-Event-ID; anything else is a
    LastEventIdError whose detail shows ``example``, a valid id for this stream."""
    if raw is None:
        return None
    after = parse_id(raw.removeprefix(prefix)) if raw.startswith(prefix) else None
    if after is None:
        raise LastEventIdError(
            "invalid_last_event_id", f"Last-Event-ID must be the id of an event of this stream, such as {example!r}"
        )
    return after


def after_the_end(*, end: int | None, after: int | None) -> HttpResponse | None:
    """204 for a reader at or past ``end``, the id of the final event of a stream that has
    ended (None while it runs): the HTML spec's way to tell an EventSource to stop
    reconnecting. None otherwise: the view streams what the reader missed, the end
    included, and closes, so that the reader's next reconnect lands here."""
    if end is None or after is None or after < end:
        return None
    response = HttpResponse(status=204)
    response["Cache-Control"] = "no-cache"
    return response
