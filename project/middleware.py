"""Cross-cutting HTTP behaviour: JSON errors under the API, and CORS for API clients."""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
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
        if not is_api_path(request.path):
            return self.get_response(request)
        if _preflight(request):
            return _with_cors(request, HttpResponse(status=204))
        return _with_cors(request, _as_json_error(request, self.get_response(request)))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path):
            return await self.get_response(request)
        if _preflight(request):
            return _with_cors(request, HttpResponse(status=204))
        return _with_cors(request, _as_json_error(request, await self.get_response(request)))


def _allowed_origin(request: HttpRequest) -> str | None:
    origin = request.headers.get("Origin") or ""
    return origin if origin in settings.CORS_ALLOWED_ORIGINS else None


def _preflight(request: HttpRequest) -> bool:
    return bool(_allowed_origin(request)) and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _as_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
        return _error_for(request.path, response.status_code)
    return response


def _with_cors(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    origin = _allowed_origin(request)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
        response["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        response["Access-Control-Expose-Headers"] = "X-Stream-Id, Retry-After"
        response["Access-Control-Max-Age"] = "600"
        response["Vary"] = "Origin"
    return response
