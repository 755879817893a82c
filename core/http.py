"""Small helpers shared by the JSON API views: errors, bodies, authentication."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from inspect import iscoroutinefunction
from typing import Any, ParamSpec, TypeVar, cast

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from core.errors import DomainError
from core.text import is_storable_text

P = ParamSpec("P")

# The largest id a database integer column holds (signed 64 bits). A larger number names
# nothing, and handing it to the database driver fails (OverflowError on SQLite).
MAX_ID = 2**63 - 1


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "detail": detail}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def openai_error(*, message: str, type: str, code: str | None) -> dict[str, Any]:
    """OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``: the only
    place it is built (the /v1 API, its streamed errors, the API middleware and the outage
    page under /v1). It is a shape, like ``error_response``'s, so core keeps it where the
    middleware can reach it without importing an app."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def openai_error_response(
    status: int, *, message: str, type: str, code: str | None, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse(openai_error(message=message, type=type, code=code), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def signed_in_user(request: HttpRequest) -> User:
    """The request's user, in a view that ``api_view``, ``async_api_view`` or the /v1
    decorator has already made sign-in only. In async views it is the user those
    decorators resolved (``request.user`` would be a synchronous database lookup)."""
    user = request.__dict__.get("resolved_user") or request.user
    assert isinstance(user, User), "the API decorators let only signed-in users through"
    return user


def parse_id(raw: str | None) -> int | None:
    """A non-negative id written in ASCII digits (a query parameter, a Last-Event-ID), or
    None for anything else.

    ``str.isdigit`` alone is not enough: it accepts "²" and other digits ``int`` refuses,
    and a number above MAX_ID would reach the database driver."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw.lstrip("0")) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def _storable(value: Any) -> bool:
    """Whether every string in a parsed JSON value (keys included) can be stored and sent."""
    if isinstance(value, str):
        return is_storable_text(value)
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; 400 ``bad_json`` or ``bad_request`` otherwise.

    JSON can spell a lone surrogate (``"\\ud800"``) and carry NUL, which no database
    stores (PostgreSQL refuses NUL, nothing encodes a lone surrogate): a body with either,
    anywhere, is refused here, once, rather than failing in whichever field reaches the
    database (found by tests/config/test_schemathesis.py)."""
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    try:
        storable = _storable(data)
    except RecursionError:  # deeper than json.loads itself allows: not reached in practice
        storable = False
    if not storable:
        raise ApiError(400, "bad_request", "strings in the request body must be Unicode text without NUL or lone surrogates")
    return data


class ErrorShape:
    """How an API answers what its decorator refuses: our JSON errors (``REST``), or a
    shape of another API's (the /v1 API's is OpenAI's, streaming.openai.errors)."""

    def method_not_allowed(self, methods: tuple[str, ...]) -> HttpResponse:
        response = error_response(405, "method_not_allowed", f"use {', '.join(methods)}")
        response["Allow"] = ", ".join(methods)
        return response

    def not_authenticated(self) -> HttpResponse:
        return error_response(401, "not_authenticated", "log in or send Authorization: Bearer <token>")

    def refused(self, status: int, code: str, detail: str, headers: dict[str, str]) -> HttpResponse:
        return error_response(status, code, detail, headers)


REST = ErrorShape()


def _refusal(shape: ErrorShape, error: Exception) -> HttpResponse:
    """The one mapping of what views and services raise to an answer."""
    if isinstance(error, DomainError):
        return shape.refused(error.http_status, error.code, error.detail, error.http_headers())
    if isinstance(error, ApiError):
        return shape.refused(error.status, error.code, error.detail, error.headers)
    assert isinstance(error, ValidationError)
    return shape.refused(400, "invalid", "; ".join(error.messages), {})


_REFUSALS = (DomainError, ApiError, ValidationError)
View = TypeVar("View", bound=Callable[..., Any])


def api_view(*methods: str, login_required: bool = True, errors: ErrorShape = REST) -> Callable[[View], View]:
    """Every API view's decorator, sync or async: the method check (405), authentication
    (401) and refusals (a DomainError, ApiError or ValidationError) answered in ``errors``'
    shape. An async view finds its user with ``signed_in_user`` (``request.user`` would be
    a synchronous database lookup there)."""

    def decorator(view: View) -> View:
        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                if request.method not in methods:
                    return errors.method_not_allowed(methods)
                if login_required:
                    user = await request.auser()
                    if not user.is_authenticated:
                        return errors.not_authenticated()
                    request.resolved_user = user  # type: ignore[attr-defined]
                try:
                    return await view(request, *args, **kwargs)
                except _REFUSALS as error:
                    return _refusal(errors, error)

            return cast(View, async_wrapper)

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return errors.method_not_allowed(methods)
            if login_required and not request.user.is_authenticated:
                return errors.not_authenticated()
            try:
                return view(request, *args, **kwargs)
            except _REFUSALS as error:
                return _refusal(errors, error)

        return cast(View, wrapper)

    return decorator


def status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"
