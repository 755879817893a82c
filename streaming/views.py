"""SSE endpoints of docs/protocol.md, "Token streams": thin async views over streaming.services;
the response and its follow loop are core.sse's."""

from __future__ import annotations

from functools import partial

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accounts.connections import credential_watch
from accounts.credentials import credential_for_request
from core import sse
from core.eventlog import LogEvent
from core.http import api_view, error_response, json_body, signed_in_user
from streaming import services
from streaming.backends import ChatTurn
from streaming.openai import views as openai_views


def render_event(stream_id: str, event: LogEvent) -> str:
    """A log event as the SSE event of docs/protocol.md, "Token streams" (``id`` = ``<stream>:<seq>``)."""
    return sse.encode_event(event=event.kind, data=event.data, id=f"{stream_id}:{event.seq}")


def stream_response(request: HttpRequest, *, stream_id: str, after: int) -> StreamingHttpResponse:
    """The SSE response of a token stream from ``after``: named by X-Stream-Id, ended when
    the user's credentials change."""
    return sse.sse_response(
        body=sse.follow(
            batches=services.stream_follow(stream_id=stream_id, after=after), render=partial(render_event, stream_id)
        ),
        headers={"X-Stream-Id": stream_id},
        watch=credential_watch(request, user_id=signed_in_user(request).pk),
    )


@api_view("POST")
async def assistant_stream(request: HttpRequest) -> HttpResponseBase:
    """POST /api/assistant/stream {"message", "conversation_id"?, "max_tokens"?, "model"?} -> SSE."""
    body = json_body(request)
    message, max_tokens = services.clean_request(message=body.get("message"), max_tokens=body.get("max_tokens"))
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise services.StreamRefusedError("bad_request", "conversation_id must be a string")
    user_id = signed_in_user(request).pk
    started = await services.generation_start(
        user_id=user_id,
        turns=[ChatTurn("user", message)],
        conversation_id=conversation_id,
        max_tokens=max_tokens,
        credential=credential_for_request(request, user_id=user_id),
        model=services.model_name(body.get("model")),
    )
    return stream_response(request, stream_id=started.stream_id, after=-1)


@api_view("GET")
async def stream_events(request: HttpRequest, stream_id: str) -> HttpResponseBase:
    """GET /api/streams/<id>/events with Last-Event-ID ``<id>:<n>`` (or ?last_event_id=):
    resume after event n; without one, from the start. ``?format=openai``: as the chunks
    of a streamed /v1/chat/completions."""
    start = await services.stream_reader_start(stream_id=stream_id, user_id=signed_in_user(request).pk)
    if start is None:
        return error_response(404, "not_found", "no such stream (or it expired)")
    after = sse.parse_last_event_id(sse.last_event_id(request), prefix=f"{stream_id}:", example=f"{stream_id}:3")
    # A reader that has the final event gets 204, so an EventSource stops reconnecting
    # (docs/protocol.md, "After the end"); one that missed it gets the rest and the end.
    if (ended := sse.after_the_end(end=start.end, after=after)) is not None:
        return ended
    if request.GET.get("format") == "openai":  # a /v1 stream, read on as Chat Completions chunks
        return await openai_views.resume(request, stream_id=stream_id, after=-1 if after is None else after)
    return stream_response(request, stream_id=stream_id, after=-1 if after is None else after)


@api_view("POST")
async def stream_cancel(request: HttpRequest, stream_id: str) -> HttpResponseBase:
    """POST /api/streams/<id>/cancel -> 202; the producer stops within a second."""
    if not await services.stream_cancel(stream_id=stream_id, user_id=signed_in_user(request).pk):
        return error_response(404, "not_found", "no such stream (or it expired)")
    return JsonResponse({"stream_id": stream_id, "status": "cancelling"}, status=202)
