"""The OpenAI-compatible API of docs/protocol.md, "Token streams": /v1/chat/completions and /v1/models.

Speaks the Chat Completions wire format closely enough that the official ``openai``
SDK works unchanged, streamed or not. A streamed reply is an ordinary stream of the
log, named by the ``X-Stream-Id`` header, so /api/streams/<id>/events can resume it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from accounts.connections import credential_watch
from accounts.credentials import credential_for_request
from core.eventlog import LogEvent
from core.http import api_view, openai_error_response, signed_in_user
from core.sse import sse_response
from streaming import services
from streaming.openai.errors import OPENAI_ERRORS, error_chunk
from streaming.openai.parsing import parse_chat_request


def _model_name() -> str:
    return str(settings.LLM_MODEL) if settings.LLM_BACKEND == "openai" else "echo"


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "realtime-rooms"}


def _model_not_found(name: str) -> services.StreamRefusedError:
    # docs/protocol.md, "Chat Completions parameters": OpenAI's answer to an unknown model.
    return services.StreamRefusedError(
        "model_not_found", f"The model '{name}' does not exist; GET /v1/models lists ours.", kind="not_found"
    )


@api_view("GET", errors=OPENAI_ERRORS)
async def models(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse({"object": "list", "data": [_model_object(_model_name())]})


@api_view("GET", errors=OPENAI_ERRORS)
async def model(request: HttpRequest, model_id: str) -> HttpResponseBase:
    if model_id != _model_name():
        raise _model_not_found(model_id)
    return JsonResponse(_model_object(model_id))


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


def deltas(events: Iterable[LogEvent]) -> list[dict[str, Any]]:
    """The ``delta``s of a batch of log events, in order: a run of tokens is one content
    delta, a run of reasoning one ``reasoning_content`` delta (vLLM's name), a run of tool
    call pieces one ``tool_calls`` delta (a call's argument pieces joined)."""
    out: list[dict[str, Any]] = []
    for event in events:
        last = out[-1] if out else {}
        if event.kind == "token":
            if "content" in last:
                last["content"] += event.data["token"]
            else:
                out.append({"content": event.data["token"]})
        elif event.kind == "reasoning":
            if "reasoning_content" in last:
                last["reasoning_content"] += event.data["text"]
            else:
                out.append({"reasoning_content": event.data["text"]})
        elif event.kind == "tool_call":
            entry = _tool_call_delta(event.data)
            calls = last.get("tool_calls")
            if calls is None:
                out.append({"tool_calls": [entry]})
            elif calls[-1]["index"] == entry["index"] and "id" not in entry and "name" not in entry["function"]:
                calls[-1]["function"]["arguments"] += entry["function"]["arguments"]
            else:
                calls.append(entry)
    return out


async def _stream_body(stream_id: str, model: str, include_usage: bool, prompt_tokens: int) -> AsyncIterator[str]:
    created = int(time.time())
    # The role comes with the first delta, as at OpenAI: its content is null when the
    # reply starts with a tool call or reasoning (the SDKs then accumulate a null content).
    role: dict[str, Any] | None = {"role": "assistant", "content": None}
    async for events in services.stream_follow(stream_id=stream_id, after=0):
        found = deltas(events)
        if role is not None and (found or events):
            found = [role | found[0], *found[1:]] if found else [role | {"content": ""}]
            role = None
        out = "".join(_chunk(stream_id, model, created, delta=delta) for delta in found)
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
            out += error_chunk(code=last.data["code"], detail=last.data["detail"])
        if out:
            yield out


@api_view("POST", errors=OPENAI_ERRORS)
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    turns, max_tokens, stream, include_usage, model, params = parse_chat_request(request)
    if model != _model_name():
        raise _model_not_found(model)
    user = signed_in_user(request)
    started = await services.generation_start(
        user_id=user.pk,
        turns=turns,
        conversation_id=None,
        max_tokens=max_tokens,
        credential=credential_for_request(request, user_id=user.pk),
        params=params,
    )
    prompt_tokens = sum(services.count_tokens(t.content) for t in turns)
    if stream:
        return sse_response(
            body=_stream_body(started.stream_id, model, include_usage, prompt_tokens),
            headers={"X-Stream-Id": started.stream_id},
            watch=credential_watch(request, user_id=user.pk),
        )
    final = None
    async for events in services.stream_follow(stream_id=started.stream_id, after=0):
        if events and events[-1].kind in ("done", "error"):
            final = events[-1]
    if final is None or final.kind == "error":
        detail = final.data["detail"] if final else "the stream ended without a reply"
        return openai_error_response(502, message=detail, type="server_error", code=final.data["code"] if final else "no_reply")
    completion = final.data["usage"]["completion_tokens"]
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
