"""A Content-Security-Policy for every HTML page (docs/security.md, XSS).

The pages render user text only as text (template auto-escaping, ``textContent`` in
web/static/web/*.js); the policy is the second line: should markup ever slip through,
the browser runs no script that is not a file from this origin, loads nothing from
elsewhere and lets no other site frame the page. The pages need no more than this: one
stylesheet, ES modules, fetch/EventSource/WebSocket to their own origin, and no inline
script or style attribute (Django's admin neither).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from core.middleware import ResponseMiddleware

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


class ContentSecurityPolicyMiddleware(ResponseMiddleware):
    """Adds the policy to HTML responses; JSON, SSE and static files are left as they are."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return _with_policy(response)
