"""Cross-cutting HTTP behaviour: JSON errors under the API, and CORS for API clients."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from project.api import error_response, status_code_name

API_PREFIXES = ("/api/", "/v1/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _error_for(path: str, status: int) -> HttpResponse:
    """Our JSON error under /api/; OpenAI's error shape under /v1/."""
    name = status_code_name(status)
    if path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return JsonResponse(
            {"error": {"message": name.replace("_", " "), "type": kind, "param": None, "code": name}}, status=status
        )
    return error_response(status, name, "see the status code")


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
                response = _error_for(request.path, response.status_code)
        if allowed:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
            response["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response["Access-Control-Expose-Headers"] = "X-Stream-Id, Retry-After"
            response["Access-Control-Max-Age"] = "600"
            response["Vary"] = "Origin"
        return response
