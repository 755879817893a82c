"""Operations endpoints of docs/protocol.md, "Other endpoints"."""

from __future__ import annotations

import hmac
import logging
import os

import redis
from django.conf import settings
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf, defaults
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from accounts.services import bearer_from_header
from core.http import error_response, openai_error_response
from core.middleware import is_api_path
from core.redis_clients import redis_configured, shard_count, sync_redis_at

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer, 503 naming the one that does not."""
    body = {"status": "ok", "db": "ok", "redis": "not configured"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        logger.warning("health check: database down: %s", exc)
        body.update(status="error", db="down")
    if redis_configured():
        try:
            for shard in range(shard_count()):
                sync_redis_at(shard).ping()
            body["redis"] = "ok"
        except (redis.RedisError, OSError) as exc:
            logger.warning("health check: redis down: %s", exc)
            body.update(status="error", redis="down")
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    expected = settings.METRICS_TOKEN
    if expected:
        given = bearer_from_header(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            response = HttpResponse("metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = "Bearer"
            return response
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # every worker's values, summed
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: under the API, a JSON 403 that says what is missing (a session's
    write needs the csrftoken cookie's value in X-CSRFToken; scripts send a bearer token
    instead); Django's own page elsewhere."""
    if is_api_path(request.path):
        detail = (
            f"CSRF check failed ({reason}): a request authenticated by the session cookie must send the "
            "csrftoken cookie's value in the X-CSRFToken header; scripts send Authorization: Bearer <token> instead"
        )
        return error_response(403, "csrf_failed", detail)
    return csrf.csrf_failure(request, reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: runs when a request raised an exception nothing else handled.

    While the database is unreachable (PostgreSQL restarting) that is no bug but an
    outage: 503 with ``Retry-After`` and, under the API, the JSON error ``unavailable``
    (docs/reliability.md). Anything else is Django's 500, which CorsMiddleware turns
    into JSON under the API."""
    if _database_reachable():
        return defaults.server_error(request)
    detail = "the database is unavailable; nothing was stored, try again shortly"
    if request.path.startswith("/v1/"):
        response: HttpResponse = openai_error_response(503, message=detail, type="server_error", code="unavailable")
    elif request.path.startswith("/api/"):
        response = error_response(503, "unavailable", detail)
    else:
        response = HttpResponse(f"Service unavailable: {detail}.\n", status=503, content_type="text/plain")
    response["Retry-After"] = "1"
    return response


def _database_reachable() -> bool:
    database = connections["default"]
    database.close()  # a connection broken by the outage is not evidence either way
    try:
        database.ensure_connection()
    except Exception:
        return False
    finally:
        database.close()
    return True
