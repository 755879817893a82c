"""Errors in OpenAI's shape: the one place /v1 answers a refusal (core.errors.DomainError)."""

from __future__ import annotations

import json

from django.http import HttpResponse

from core.http import ErrorShape, openai_error, openai_error_response


class OpenAIErrors(ErrorShape):
    """/v1's answers in OpenAI's shape: the SDKs pick their exception class by the status
    and read ``error.code``; a 401 says what OpenAI says of a bad key."""

    def method_not_allowed(self, methods: tuple[str, ...]) -> HttpResponse:
        return openai_error_response(
            405, message=f"use {', '.join(methods)}", type="invalid_request_error", code="method_not_allowed"
        )

    def not_authenticated(self) -> HttpResponse:
        return openai_error_response(
            401, message="Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key"
        )

    def refused(self, status: int, code: str, detail: str, headers: dict[str, str]) -> HttpResponse:
        kind = "rate_limit_error" if status == 429 else "invalid_request_error"
        return openai_error_response(status, message=detail, type=kind, code=code, headers=headers)


OPENAI_ERRORS = OpenAIErrors()


def error_chunk(*, code: str, detail: str) -> str:
    """A streamed reply's failure, as the SSE data line OpenAI sends mid-stream."""
    return "data: " + json.dumps(openai_error(message=detail, type="server_error", code=code), separators=(",", ":")) + "\n\n"
