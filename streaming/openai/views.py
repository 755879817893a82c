"""The OpenAI-compatible API of docs/protocol.md, "Token streams": /v1/chat/completions and /v1/models.

Speaks the Chat Completions wire format closely enough that the official ``openai``
SDK works unchanged, streamed or not. A streamed reply is an ordinary stream of the
log, named by the ``X-Stream-Id`` header, so /api/streams/<id>/events can resume it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accounts.connections import credential_watch
from accounts.credentials import credential_for_request
from core.eventlog import get_log
from core.http import api_view, openai_error_response, signed_in_user
from core.sse import follow, sse_response
from streaming import catalog, services
from streaming.openai.chunks import ChunkWriter, finish_reason, usage
from streaming.openai.errors import OPENAI_ERRORS
from streaming.openai.parsing import parse_chat_request

# A client that will resume a dropped stream mid-way asks for SSE ids on the live stream
# with this header; without it the framing is OpenAI's own (docs/protocol.md, "Chat Completions parameters").
EVENT_IDS_HEADER = "X-Stream-Event-Ids"


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "realtime-rooms"}


@api_view("GET", errors=OPENAI_ERRORS)
async def models(request: HttpRequest) -> HttpResponseBase:
    """Every served model (LLM_MODELS; docs/protocol.md, "Models"), the default first."""
    return JsonResponse({"object": "list", "data": [_model_object(spec.name) for spec in catalog.models()]})


@api_view("GET", errors=OPENAI_ERRORS)
async def model(request: HttpRequest, model_id: str) -> HttpResponseBase:
    return JsonResponse(_model_object(services.model_spec(model_id).name))


async def _batches(stream_id: str, writer: ChunkWriter, *, after: int) -> AsyncIterator[list[str]]:
    async for events in services.stream_follow(stream_id=stream_id, after=after):
        yield writer.render(events)


def chunk_stream(request: HttpRequest, *, stream_id: str, writer: ChunkWriter, after: int) -> StreamingHttpResponse:
    """The SSE response of a /v1 stream from ``after``, as Chat Completions chunks: a
    keepalive comment after 15 idle seconds, ended when the user's credentials change."""
    return sse_response(
        body=follow(batches=_batches(stream_id, writer, after=after), render=str),
        headers={"X-Stream-Id": stream_id},
        watch=credential_watch(request, user_id=signed_in_user(request).pk),
    )


async def resume(request: HttpRequest, *, stream_id: str, after: int) -> StreamingHttpResponse:
    """GET /api/streams/<id>/events?format=openai: the rest of a stream as the chunks a
    streamed /v1/chat/completions sends (docs/protocol.md, "Chat Completions parameters")."""
    meta = await get_log().meta(stream_id)
    extra = meta.extra if meta is not None else {}
    writer = ChunkWriter.resuming(stream_id, extra, after=after, default_model=catalog.default().name)
    return chunk_stream(request, stream_id=stream_id, writer=writer, after=after)


@api_view("POST", errors=OPENAI_ERRORS)
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    turns, max_tokens, stream, include_usage, model, params = parse_chat_request(request)
    services.model_spec(model)  # 404 model_not_found before anything else
    user = signed_in_user(request)
    started = await services.generation_start(
        user_id=user.pk,
        turns=turns,
        conversation_id=None,
        max_tokens=max_tokens,
        credential=credential_for_request(request, user_id=user.pk),
        params=params,
        model=model,
    )
    prompt_tokens = sum(services.count_tokens(t.content) for t in turns)
    writer = ChunkWriter(
        stream_id=started.stream_id,
        model=model,
        created=int(time.time()),
        include_usage=include_usage,
        prompt_tokens=prompt_tokens,
        with_ids=request.headers.get(EVENT_IDS_HEADER) == "1",
    )
    # Kept beside the log, so a reader resuming with ?format=openai gets the same chunks.
    await get_log().annotate(started.stream_id, writer.meta())
    if stream:
        return chunk_stream(request, stream_id=started.stream_id, writer=writer, after=0)
    final = None
    async for events in services.stream_follow(stream_id=started.stream_id, after=0):
        if events and events[-1].kind in ("done", "error"):
            final = events[-1]
    if final is None or final.kind == "error":
        detail = final.data["detail"] if final else "the stream ended without a reply"
        return openai_error_response(502, message=detail, type="server_error", code=final.data["code"] if final else "no_reply")
    tool_calls = final.data.get("tool_calls")
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI's content is null for a reply that is only tool calls.
        "content": final.data["content"] if final.data["content"] or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if final.data.get("reasoning"):
        message["reasoning_content"] = final.data["reasoning"]
    response = JsonResponse(
        {
            "id": f"chatcmpl-{started.stream_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(final.data["finish_reason"]),
                }
            ],
            "usage": usage(final, prompt_tokens),
        }
    )
    response["X-Stream-Id"] = started.stream_id
    return response
