"""The OpenAI-compatible API of docs/protocol.md, "Token streams": /v1/chat/completions and /v1/models.

Speaks the Chat Completions wire format closely enough that the official ``openai``
SDK works unchanged, streamed or not. A streamed reply is an ordinary stream of the
log, named by the ``X-Stream-Id`` header, so /api/streams/<id>/events can resume it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from accounts.credentials import credential_for_request
from core.text import is_storable_text
from streaming import services
from streaming.backends import ChatTurn
from streaming.views import sse_response

ROLES = {"system", "user", "assistant", "developer"}
# The largest request body read (docs/protocol.md, "Limits"): the largest valid request is
# MAX_PROMPT_CHARS characters, each at most 12 bytes as JSON (an emoji escaped as two
# \uXXXX), about 1.5 MB; 2 MiB leaves room for the rest of the body.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def openai_error(status: int, message: str, *, type: str, code: str | None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type, "param": None, "code": code}}, status=status)


def openai_view(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """Bearer authentication and errors in OpenAI's shape."""

    def decorator(view: AsyncView) -> AsyncView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return openai_error(405, f"use {', '.join(methods)}", type="invalid_request_error", code="method_not_allowed")
            user = await request.auser()
            if not user.is_authenticated:
                return openai_error(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")
            request.resolved_user = user  # type: ignore[attr-defined]
            try:
                return await view(request, *args, **kwargs)
            except services.StreamRefusedError as refused:
                kind = "rate_limit_error" if refused.status == 429 else "invalid_request_error"
                response = openai_error(refused.status, refused.detail, type=kind, code=refused.code)
                if refused.status == 429:
                    response["Retry-After"] = "1"
                return response

        return wrapper

    return decorator


def _model_name() -> str:
    return str(settings.LLM_MODEL) if settings.LLM_BACKEND == "openai" else "echo"


@openai_view("GET")
async def models(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(
        {"object": "list", "data": [{"id": _model_name(), "object": "model", "created": 0, "owned_by": "realtime-rooms"}]}
    )


def _body(request: HttpRequest) -> bytes:
    """The request body, at most MAX_REQUEST_BYTES (413 beyond, declared or sent)."""
    too_large = services.StreamRefusedError(
        413, "request_too_large", f"The request body is larger than {MAX_REQUEST_BYTES} bytes."
    )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_REQUEST_BYTES:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig:  # Django's own cap (DATA_UPLOAD_MAX_MEMORY_SIZE), if set lower
        raise too_large from None
    if len(body) > MAX_REQUEST_BYTES:  # sent without a Content-Length (chunked)
        raise too_large
    return body


def _parse(request: HttpRequest) -> tuple[list[ChatTurn], int | None, bool, bool, str]:
    bad = services.StreamRefusedError
    raw = _body(request)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise bad(400, "invalid_json", "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise bad(400, "invalid_request", "The body must be a JSON object.")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad(400, "invalid_messages", "'messages' must be a non-empty array.")
    turns: list[ChatTurn] = []
    for message in raw_messages:
        # A role that is a list or an object is unhashable: ``in ROLES`` would raise (a 500).
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in ROLES:
            raise bad(400, "invalid_messages", "Each message needs a role of system, developer, user or assistant.")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
            content = "".join(text for text in texts if isinstance(text, str)) if all(isinstance(t, str) for t in texts) else None
        if not isinstance(content, str):
            raise bad(400, "invalid_messages", "Each message's content must be a string.")
        if len(content) > services.MAX_MESSAGE_CHARS:  # the assistant's limit (docs/protocol.md, "Limits")
            raise bad(
                400,
                "string_above_max_length",
                f"Invalid 'messages[{len(turns)}].content': string too long. Expected a string with maximum length "
                f"{services.MAX_MESSAGE_CHARS}, but got a string with length {len(content)} instead.",
            )
        if not is_storable_text(content):  # a lone surrogate or NUL would fail the database write
            raise bad(400, "invalid_messages", "Each message's content must be Unicode text without NUL or lone surrogates.")
        role = "system" if message["role"] == "developer" else message["role"]
        turns.append(ChatTurn(role, content))
    if not any(t.role == "user" and t.content.strip() for t in turns):
        raise bad(400, "invalid_messages", "At least one user message with content is needed.")
    total = sum(len(t.content) for t in turns)
    if total > services.MAX_PROMPT_CHARS:
        raise bad(
            400,
            "context_length_exceeded",
            f"The messages have {total} characters in all; at most {services.MAX_PROMPT_CHARS} are accepted.",
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    # The content was checked above, message by message: only max_tokens is left to check.
    services.clean_request(message="x", max_tokens=max_tokens)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad(400, "invalid_request", "'stream' must be a boolean.")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad(400, "invalid_model", "'model' must be a non-empty string.")
    return turns, max_tokens, stream, include_usage, model


def _chunk(stream_id: str, model: str, created: int, *, delta: dict[str, Any] | None, finish: str | None = None) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    payload = {
        "id": f"chatcmpl-{stream_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _finish_reason(reason: str) -> str:
    # OpenAI knows stop and length; a cancelled reply simply stopped.
    return "length" if reason == "length" else "stop"


async def _stream_body(stream_id: str, model: str, include_usage: bool, prompt_tokens: int) -> AsyncIterator[str]:
    created = int(time.time())
    yield _chunk(stream_id, model, created, delta={"role": "assistant", "content": ""})
    async for events in services.stream_follow(stream_id=stream_id, after=0):
        tokens = "".join(e.data["token"] for e in events if e.kind == "token")
        out = _chunk(stream_id, model, created, delta={"content": tokens}) if tokens else ""
        last = events[-1] if events else None
        if last is not None and last.kind == "done":
            out += _chunk(stream_id, model, created, delta={}, finish=_finish_reason(last.data["finish_reason"]))
            if include_usage:
                completion = last.data["usage"]["completion_tokens"]
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                }
                payload = json.loads(_chunk(stream_id, model, created, delta=None)[6:])
                payload["usage"] = usage
                out += "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"
            out += "data: [DONE]\n\n"
        elif last is not None and last.kind == "error":
            error = {"error": {"message": last.data["detail"], "type": "server_error", "code": last.data["code"]}}
            out += "data: " + json.dumps(error, separators=(",", ":")) + "\n\n"
        if out:
            yield out


@openai_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    turns, max_tokens, stream, include_usage, model = _parse(request)
    user: User = request.resolved_user  # type: ignore[attr-defined]
    started = await services.generation_start(
        user_id=user.pk,
        turns=turns,
        conversation_id=None,
        max_tokens=max_tokens,
        credential=credential_for_request(request, user_id=user.pk),
    )
    prompt_tokens = sum(services.count_tokens(t.content) for t in turns)
    if stream:
        return sse_response(
            request, _stream_body(started.stream_id, model, include_usage, prompt_tokens), stream_id=started.stream_id
        )
    final = None
    async for events in services.stream_follow(stream_id=started.stream_id, after=0):
        if events and events[-1].kind in ("done", "error"):
            final = events[-1]
    if final is None or final.kind == "error":
        detail = final.data["detail"] if final else "the stream ended without a reply"
        return openai_error(502, detail, type="server_error", code=final.data["code"] if final else "no_reply")
    completion = final.data["usage"]["completion_tokens"]
    response = JsonResponse(
        {
            "id": f"chatcmpl-{started.stream_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": final.data["content"], "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(final.data["finish_reason"]),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }
    )
    response["X-Stream-Id"] = started.stream_id
    return response
