"""The Origin check of CONTRACT §1 for WebSocket handshakes (used by
accounts.middleware.WebSocketAuthMiddleware).

Channels' AllowedHostsOriginValidator refuses a handshake without Origin; the contract
admits one (scripts send none and are judged by their token). So: no Origin, pass; an
Origin whose host is in ALLOWED_HOSTS, pass; any other Origin (``null`` included) is
refused before accept, the one refusal that may be an HTTP 403.
"""

from __future__ import annotations

from urllib.parse import urlsplit

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
