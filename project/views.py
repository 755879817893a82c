"""Operations endpoints of CONTRACT §8."""

from __future__ import annotations

import hmac
import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from accounts.services import bearer_from_header
from project.redis_clients import redis_configured, shard_count, sync_redis_at

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
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
