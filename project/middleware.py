"""Cross-cutting HTTP behaviour: JSON errors under the API, and CORS for API clients."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from project.api import error_response, status_code_name

API_PREFIXES = ("/api/", "/v1/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


class CorsMiddleware:
    """CORS for the API (CONTRACT §8): only origins in CORS_ALLOWED_ORIGINS get headers.

    Also the outermost middleware, so it turns every non-JSON error under the API
    (Django's 404/405/500 pages, CSRF failures) into the JSON error shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path):
            return self.get_response(request)
        origin = request.headers.get("Origin") or ""
        allowed = origin in settings.CORS_ALLOWED_ORIGINS
        if allowed and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = HttpResponse(status=204)
        else:
            response = self.get_response(request)
            if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
                response = error_response(response.status_code, status_code_name(response.status_code), "see the status code")
        if allowed:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
            response["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response["Access-Control-Expose-Headers"] = "X-Stream-Id, Retry-After"
            response["Access-Control-Max-Age"] = "600"
            response["Vary"] = "Origin"
        return response
