"""POST /api/assistant/stream {"message", "max_tokens"} -> the SSE events the project sends for the
same request (start, one token event per word of the message repeated up to max_tokens, done), made
up on the spot: no stream log, no Redis, no database, no authentication.

The tokens go out in chunks of 32, as the project's echo backend batches them with no delay, each
batch after an `asyncio.sleep(0)` as there; the framing is that of core/sse.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

BATCH = 32


def event(kind: str, data: Any, id: str) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\nid: {id}\n\n"


async def events(stream_id: str, conversation_id: str, words: list[str], max_tokens: int, finish: str) -> AsyncIterator[str]:
    yield event("start", {"stream_id": stream_id, "conversation_id": conversation_id}, f"{stream_id}:0")
    tokens: list[str] = []
    index = 0
    while index < max_tokens:
        await asyncio.sleep(0)
        end = min(max_tokens, index + BATCH)
        batch = [words[i % len(words)] + " " for i in range(index, end)]
        tokens.extend(batch)
        yield "".join(event("token", {"index": i, "token": t}, f"{stream_id}:{i + 1}") for i, t in enumerate(batch, index))
        index = end
    done = {"finish_reason": finish, "content": "".join(tokens), "usage": {"completion_tokens": len(tokens)}}
    yield event("done", done, f"{stream_id}:{index + 1}")


async def assistant_stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if request.method != "POST":
        return JsonResponse({"error": {"code": "method_not_allowed"}}, status=405)
    try:
        body = json.loads(request.body or b"{}")
        words = str(body["message"]).split() or [""]
        max_tokens = int(body.get("max_tokens") or len(words))
        finish = "length" if body.get("max_tokens") else "stop"
    except (ValueError, TypeError, KeyError):
        return JsonResponse({"error": {"code": "bad_request"}}, status=400)
    stream_id = uuid.uuid4().hex
    response = StreamingHttpResponse(
        events(stream_id, str(uuid.uuid4()), words, max_tokens, finish), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["X-Stream-Id"] = stream_id
    return response
