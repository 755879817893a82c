"""Bearer-token authentication for HTTP requests and WebSocket handshakes."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import Error as DatabaseError
from django.http import HttpRequest, HttpResponse
from django.http.cookie import parse_cookie
from django.urls import URLPattern

from accounts import token_cache
from accounts.credentials import Credential
from accounts.models import ApiToken
from accounts.origin import origin_allowed
from accounts.services import bearer_from_header, token_authenticate, token_hash
from core.db_thread import in_db_thread
from core.middleware import HybridMiddleware, is_api_path


class BearerTokenMiddleware(HybridMiddleware):
    """An ``Authorization: Bearer`` header decides who the request is, whatever the session.

    Bearer requests cannot be forged cross-site (browsers do not add the header), so
    they skip the CSRF check that session-authenticated POSTs get. A bad token makes
    the request anonymous rather than falling back to the session.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        raw = _bearer(request)
        if raw is not None:
            _authenticate(request, token_authenticate(raw=raw) if raw else None)
        else:
            _without_credentials(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        raw = _bearer(request)
        if raw is not None:
            _authenticate(request, await token_authenticate_async(raw=raw) if raw else None)
        else:
            _without_credentials(request)
        return await self.get_response(request)


async def token_authenticate_async(*, raw: str) -> ApiToken | None:
    """``token_authenticate`` from the event loop: from memory for a token seen in the last
    few seconds (accounts.token_cache), else on the database thread."""
    key = token_hash(raw)
    token = token_cache.remembered(key)
    if token is None:
        await token_cache.listen()
        since = token_cache.forgets()
        token = await in_db_thread(token_authenticate, raw=raw)
        token_cache.remember(key, token, since=since)
    return token


def _without_credentials(request: HttpRequest) -> None:
    """An API call with neither a bearer token nor a session cookie carries nothing a
    forged cross-site request could ride on: CSRF has nothing to protect, so the view
    answers 401 saying what to send (docs/protocol.md), not CSRF's 403."""
    if is_api_path(request.path) and settings.SESSION_COOKIE_NAME not in request.COOKIES:
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]


def _bearer(request: HttpRequest) -> str | None:
    """None without a bearer header; "" for a malformed one; else the token."""
    header = request.headers.get("Authorization")
    if header is None or not header.lower().startswith("bearer"):
        return None
    return bearer_from_header(header) or ""


def _authenticate(request: HttpRequest, token: ApiToken | None) -> None:
    user = token.user if token is not None else None
    resolved: User | AnonymousUser = user or AnonymousUser()
    request.user = resolved

    async def auser() -> User | AnonymousUser:
        return resolved

    request.auser = auser
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    request.bearer_authenticated = user is not None  # type: ignore[attr-defined]
    # Which token, for connections that outlive the request (accounts.credentials).
    request.api_token_id = token.pk if token is not None else None  # type: ignore[attr-defined]


async def authenticate_handshake(headers: dict[bytes, bytes]) -> tuple[User | AnonymousUser, Credential | None]:
    """The user of a WebSocket handshake and what proved it: its bearer token if it has
    one, else its session cookie (verified the way Django verifies a request's session)."""
    authorization = headers.get(b"authorization")
    if authorization is not None:
        raw = bearer_from_header(authorization.decode("latin-1"))
        # From the database, not accounts.token_cache: a handshake is not a hot path, and
        # while the database is down a new socket must hear "try again later" (4503)
        # rather than open on a remembered token and fail at its first action.
        token = await in_db_thread(token_authenticate, raw=raw) if raw else None
        if token is None:
            return AnonymousUser(), None
        return token.user, Credential(user_id=token.user_id, token_id=token.pk)
    cookies = parse_cookie(headers.get(b"cookie", b"").decode("latin-1"))
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return AnonymousUser(), None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": session})  # Channels' check: backend, id and session hash
    if not user.is_authenticated:
        return user, None
    return user, Credential(user_id=user.pk, session_key=session_key)


class WebSocketAuthMiddleware:
    """Origin check and authentication for WebSocket handshakes, in one layer, around each
    route's consumer (``authenticated``).

    A hostile Origin is refused before accept (docs/protocol.md, "Authentication and the handshake": the one refusal that may be
    an HTTP 403). Everything else reaches the consumer with ``scope["user"]`` set, an
    AnonymousUser when the handshake proved nobody, for the consumer to close with 4001.

    One layer instead of Channels' AuthMiddlewareStack (three layers, each keeping its
    own copy of the scope alive for the connection's whole life), inside the URL router
    rather than around it: the inner application gets a small scope without headers or
    cookies, and it is the only copy made (the router's is dropped here), so a consumer
    that shrinks its scope in place once it no longer needs the user frees it all. An idle
    connection should cost as little memory as possible (docs/performance.md).
    """

    def __init__(self, application: Any) -> None:
        self.application = application
        # A consumer's as_asgi() application: instantiated here as it would (one coroutine
        # frame less per connection).
        self.consumer_class = getattr(application, "consumer_class", None)
        self.consumer_initkwargs = getattr(application, "consumer_initkwargs", {})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", ()))
        if not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        database_unavailable = False
        try:
            user, credential = await authenticate_handshake(headers)
        except DatabaseError:
            # The database is down (a restart): the consumer accepts and closes with 4503
            # "try again later" instead of the handshake failing with an HTTP 500.
            user, credential, database_unavailable = AnonymousUser(), None, True
        inner = {
            "type": scope["type"],
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "query_string": scope.get("query_string", b""),
            "client": scope.get("client"),
            "url_route": scope.get("url_route", {"args": (), "kwargs": {}}),
            "user": user,
            "credential": credential,
            "database_unavailable": database_unavailable,
        }
        # Nothing of the handshake stays in this frame for the connection's life (the user
        # is in ``inner``, which the consumer shrinks in place once it has joined).
        del headers, scope, user, credential
        if self.consumer_class is not None:  # as_asgi's app, without its frame
            return await self.consumer_class(**self.consumer_initkwargs)(inner, receive, send)
        return await self.application(inner, receive, send)


def authenticated(patterns: list[URLPattern]) -> list[URLPattern]:
    """The WebSocket routes, each consumer behind WebSocketAuthMiddleware (for
    ``URLRouter``: config.asgi)."""
    return [URLPattern(p.pattern, WebSocketAuthMiddleware(p.callback), p.default_args, p.name) for p in patterns]
