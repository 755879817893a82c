"""The Origin check of docs/protocol.md, "Authentication and the handshake" for WebSocket handshakes (used by
accounts.middleware.WebSocketAuthMiddleware), judged as Django's CSRF middleware judges
the Origin of a POST (``CsrfViewMiddleware._origin_verified``).

Channels' AllowedHostsOriginValidator refuses a handshake without Origin, and compares
only the host of one that has it; the contract admits a handshake without Origin
(scripts send none and are judged by their token) and wants the whole origin. So: no
Origin, pass; the origin of the handshake itself (scheme, host and port, as the request
would give them to Django: ``request.is_secure()`` and ``request.get_host()``, so
``SECURE_PROXY_SSL_HEADER`` and ``ALLOWED_HOSTS`` apply), pass; an origin listed in
``CSRF_TRUSTED_ORIGINS`` (exactly, or by its ``https://*.example.com`` form), pass.
Anything else (another port or scheme of an allowed host, ``null``) is refused before
accept, the one refusal that may be an HTTP 403.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain


def _as_request(scope: dict[str, Any]) -> ASGIRequest:
    """The handshake as Django would see it as an HTTP request (META from its headers
    and server address). ws is http, wss is https."""
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return ASGIRequest({**scope, "method": "GET", "scheme": scheme}, io.BytesIO())


def _own_origin(request: ASGIRequest) -> str | None:
    try:
        host = request.get_host()  # the Host header, validated against ALLOWED_HOSTS
    except DisallowedHost:
        return None
    return f"{'https' if request.is_secure() else 'http'}://{host}"


def _trusted(origin: str) -> bool:
    if origin in settings.CSRF_TRUSTED_ORIGINS and "*" not in origin:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in trusted:
            pattern = urlsplit(trusted)
            if pattern.scheme == parts.scheme and is_same_domain(parts.netloc, pattern.netloc.lstrip("*")):
                return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether a WebSocket handshake's Origin may open a socket (docs/protocol.md, "Authentication and the handshake")."""
    if not any(name == b"origin" for name, _ in scope.get("headers", ())):
        return True
    request = _as_request(scope)
    origin = request.META.get("HTTP_ORIGIN", "")  # several Origin headers: joined, so refused
    return origin == _own_origin(request) or _trusted(origin)
