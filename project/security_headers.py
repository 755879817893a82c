"""A Content-Security-Policy for every HTML page (docs/security.md, XSS).

The pages render user text only as text (template auto-escaping, ``textContent`` in
chat/static/chat/*.js); the policy is the second line: should markup ever slip through,
the browser runs no script that is not a file from this origin, loads nothing from
elsewhere and lets no other site frame the page. The pages need no more than this: one
stylesheet, ES modules, fetch/EventSource/WebSocket to their own origin, and no inline
script or style attribute (Django's admin neither).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",  # same-origin ws:/wss: included (CSP Level 3)
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _with_policy(response: HttpResponse) -> HttpResponse:
    if response.get("Content-Type", "").startswith("text/html") and "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the policy to HTML responses; JSON, SSE and static files are left as they are."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return _with_policy(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _with_policy(await self.get_response(request))
