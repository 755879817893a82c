"""Errors in OpenAI's shape: the one place /v1 answers a refusal (core.errors.DomainError)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from core.errors import DomainError
from core.http import openai_error, openai_error_response

AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def refusal_response(error: DomainError) -> JsonResponse:
    """A service's refusal as /v1 answers it: the kind's status, OpenAI's error type for it
    (the SDK picks its exception class by the status), and Retry-After when it applies."""
    kind = "rate_limit_error" if error.kind == "rate_limited" else "invalid_request_error"
    return openai_error_response(
        error.http_status, message=error.detail, type=kind, code=error.code, headers=error.http_headers()
    )


def error_chunk(*, code: str, detail: str) -> str:
    """A streamed reply's failure, as the SSE data line OpenAI sends mid-stream."""
    return "data: " + json.dumps(openai_error(message=detail, type="server_error", code=code), separators=(",", ":")) + "\n\n"


def openai_view(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """Method check, bearer authentication and refusals, all in OpenAI's shape."""

    def decorator(view: AsyncView) -> AsyncView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return openai_error_response(
                    405, message=f"use {', '.join(methods)}", type="invalid_request_error", code="method_not_allowed"
                )
            user = await request.auser()
            if not user.is_authenticated:
                return openai_error_response(
                    401, message="Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key"
                )
            request.resolved_user = user  # type: ignore[attr-defined]
            try:
                return await view(request, *args, **kwargs)
            except DomainError as refused:
                return refusal_response(refused)

        return wrapper

    return decorator
