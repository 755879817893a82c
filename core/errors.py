"""The one error type services raise (docs/architecture.md, "Errors").

A service says *what* was refused, in its own words: a stable ``code`` (the error code
clients see on every interface), a ``detail`` for people, the ``kind`` of refusal and,
where waiting helps, ``retry_after`` seconds. It never says how an interface answers:
REST maps the kind to an HTTP status here (``http_status``), the OpenAI-compatible API to
OpenAI's error shape, WebSocket consumers to an ``error`` frame, each in one place.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal[
    "invalid", "unauthenticated", "forbidden", "not_found", "conflict", "locked", "too_large", "rate_limited", "unavailable"
]

# The HTTP status of each kind, for every REST and SSE view (core.http maps it once).
HTTP_STATUS: dict[Kind, int] = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "locked": 423,  # the resource is closed to changes for now (a locked room)
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}


class DomainError(Exception):
    """A request a service refuses. Subclass it per app to name the app's refusals; set
    ``kind`` on the subclass (or per instance) to say what sort of refusal it is."""

    kind: Kind = "invalid"

    def __init__(self, code: str, detail: str, *, kind: Kind | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if kind is not None:
            self.kind = kind
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]

    def http_headers(self) -> dict[str, str]:
        """Retry-After, in whole seconds rounded up, when the refusal says when to retry."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, -int(-self.retry_after // 1)))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.detail!r}, kind={self.kind!r})"
