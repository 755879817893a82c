"""SSE endpoints of docs/protocol.md, "Token streams": async views whose bodies are async iterators
(Django buffers a sync iterator under ASGI), reading the stream log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accounts.connections import Reservation, get_connections
from accounts.credentials import Credential, credential_for_request
from core.http import async_api_view, error_response
from core.sse import KEEPALIVE, encode_comment, encode_event
from streaming import services
from streaming.backends import ChatTurn
from streaming.log import LogEvent

# A comment after this many idle seconds keeps proxies and browsers from timing out.
KEEPALIVE_SECONDS = 15.0
OPENING = encode_comment("stream open")
# Events are sent in chunks of about this size: big enough that a fast reader gets a
# burst in few writes, small enough that a stalled one leaves little in the buffer.
MAX_CHUNK_CHARS = 16 * 1024


def _user(request: HttpRequest) -> User:
    user: User | AnonymousUser = request.resolved_user  # type: ignore[attr-defined]
    assert isinstance(user, User)
    return user


def render_event(stream_id: str, event: LogEvent) -> str:
    """A log event as the SSE event of docs/protocol.md, "Token streams" (``id`` = ``<stream>:<seq>``)."""
    return encode_event(event=event.kind, data=event.data, id=f"{stream_id}:{event.seq}")


async def _opened(
    body: AsyncIterator[str], user_id: int, credential: Credential, reservation: Reservation | None
) -> AsyncIterator[str]:
    """The body, opened with a comment, and ended when the user's credentials change."""
    ended = False
    step: asyncio.Future[str] | None = None

    async def credentials_changed() -> None:
        # The body may be waiting (for tokens, a task, a notification): stop the wait
        # itself, so the response ends within the 2 seconds docs/protocol.md promises.
        nonlocal ended
        ended = True
        if step is not None:
            step.cancel()

    registry = get_connections()
    connection = await registry.open(
        user_id=user_id, credential=credential, on_change=credentials_changed, reservation=reservation
    )
    iterator = aiter(body)
    try:
        # Servers send the status line and headers with the first body bytes (daphne does),
        # so a stream with nothing to say yet would leave its client waiting for them.
        yield OPENING
        while not ended:
            step = asyncio.ensure_future(anext(iterator))
            try:
                chunk = await step
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if ended and current is not None and not current.cancelling():
                    return  # ours: the credentials changed
                raise
            finally:
                step = None
            yield chunk
    finally:
        if connection is not None:
            await registry.close(connection)


def sse_response(
    request: HttpRequest, body: AsyncIterator[str], *, stream_id: str | None = None, reservation: Reservation | None = None
) -> StreamingHttpResponse:
    """An SSE response for the request's user; it opens with a comment, so headers reach
    the client at once, and ends when the user's credentials change. ``reservation``: a
    reservation of accounts.connections (notification streams are capped per user)."""
    user_id = _user(request).pk
    credential = credential_for_request(request, user_id=user_id)
    response = StreamingHttpResponse(
        _opened(body, user_id, credential, reservation), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    if stream_id:
        response["X-Stream-Id"] = stream_id
    return response


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


async def sse_events(stream_id: str, after: int) -> AsyncIterator[str]:
    """The stream's events after ``after`` as SSE text, a read's events in few chunks."""
    idle_since = time.monotonic()
    async for events in services.stream_follow(stream_id=stream_id, after=after):
        if events:
            idle_since = time.monotonic()
            # A read returns up to 1000 events, megabytes with long tokens: sent as one chunk,
            # all of it would sit in a stalled client's write buffer. In chunks, the server's
            # flow control (core/servers/daphne.py, uvicorn's own) stops after the first.
            for chunk in in_chunks([render_event(stream_id, event) for event in events], limit=MAX_CHUNK_CHARS):
                yield chunk
        elif time.monotonic() - idle_since >= KEEPALIVE_SECONDS:
            idle_since = time.monotonic()
            yield KEEPALIVE


def _json(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise services.StreamRefusedError(400, "bad_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise services.StreamRefusedError(400, "bad_request", "request body must be a JSON object")
    return body


@async_api_view("POST")
async def assistant_stream(request: HttpRequest) -> HttpResponseBase:
    """POST /api/assistant/stream {"message", "conversation_id"?, "max_tokens"?} -> SSE."""
    body = _json(request)
    message, max_tokens = services.clean_request(message=body.get("message"), max_tokens=body.get("max_tokens"))
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise services.StreamRefusedError(400, "bad_request", "conversation_id must be a string")
    user_id = _user(request).pk
    started = await services.generation_start(
        user_id=user_id,
        turns=[ChatTurn("user", message)],
        conversation_id=conversation_id,
        max_tokens=max_tokens,
        credential=credential_for_request(request, user_id=user_id),
    )
    return sse_response(request, sse_events(started.stream_id, -1), stream_id=started.stream_id)


@async_api_view("GET")
async def stream_events(request: HttpRequest, stream_id: str) -> HttpResponseBase:
    """GET /api/streams/<id>/events with Last-Event-ID (or ?last_event_id=): resume."""
    if not await services.stream_owner_check(stream_id=stream_id, user_id=_user(request).pk):
        return error_response(404, "not_found", "no such stream (or it expired)")
    last = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    after = services.parse_last_event_id(last, stream_id=stream_id)
    return sse_response(request, sse_events(stream_id, after), stream_id=stream_id)


@async_api_view("POST")
async def stream_cancel(request: HttpRequest, stream_id: str) -> HttpResponseBase:
    """POST /api/streams/<id>/cancel -> 202; the producer stops within a second."""
    if not await services.stream_cancel(stream_id=stream_id, user_id=_user(request).pk):
        return error_response(404, "not_found", "no such stream (or it expired)")
    return JsonResponse({"stream_id": stream_id, "status": "cancelling"}, status=202)
