"""Bearer-token authentication for HTTP requests and WebSocket handshakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from accounts.services import bearer_from_header, user_for_token


class BearerTokenMiddleware:
    """An ``Authorization: Bearer`` header decides who the request is, whatever the session.

    Bearer requests cannot be forged cross-site (browsers do not add the header), so
    they skip the CSRF check that session-authenticated POSTs get. A bad token makes
    the request anonymous rather than falling back to the session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = request.headers.get("Authorization")
        if header is not None and header.lower().startswith("bearer"):
            raw = bearer_from_header(header)
            user = user_for_token(raw=raw) if raw else None
            request.user = user or AnonymousUser()
            request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
            request.bearer_authenticated = user is not None  # type: ignore[attr-defined]
        return self.get_response(request)


class WebSocketBearerMiddleware(BaseMiddleware):
    """Sets scope["user"] from ``Authorization: Bearer`` when the handshake carries one."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        header = headers.get(b"authorization")
        if header is not None:
            raw = bearer_from_header(header.decode("latin-1"))
            user = await database_sync_to_async(user_for_token)(raw=raw) if raw else None
            scope = dict(scope, user=user or AnonymousUser())
        return await super().__call__(scope, receive, send)
