"""The Origin check of CONTRACT §1 for WebSocket handshakes.

Channels' AllowedHostsOriginValidator refuses a handshake without Origin; the contract
admits one (scripts send none and are judged by their token). So: no Origin, pass; an
Origin whose host is in ALLOWED_HOSTS, pass; any other Origin (``null`` included) is
refused before accept, the one refusal that may be an HTTP 403.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # what Django itself allows in DEBUG
    return allowed


def origin_allowed(origin: bytes | None) -> bool:
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.decode("latin-1"))
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if ":" in host:  # an IPv6 literal, as ALLOWED_HOSTS writes it
        host = f"[{host}]"
    return validate_host(host, _allowed_hosts())


class OriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = dict(scope.get("headers", [])).get(b"origin")
        if scope["type"] == "websocket" and not origin_allowed(origin):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
