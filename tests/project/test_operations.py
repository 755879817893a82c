import pytest
from django.test import Client, override_settings

from project.origin import origin_allowed

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_unconfigured_redis():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "db": "ok", "redis": "not configured"}


@override_settings(REDIS_SHARDS=[{"url": "redis://127.0.0.1:1/0"}])
def test_healthz_is_503_when_redis_is_down():
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["redis"] == "down"


def test_metrics_are_prometheus_text():
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "# TYPE chat_messages_created_total counter" in body and "chat_websocket_connections " in body


@override_settings(METRICS_TOKEN="s3cret")
def test_metrics_need_the_token_when_one_is_set():
    assert Client().get("/metrics").status_code == 401
    assert Client(headers={"Authorization": "Bearer wrong"}).get("/metrics").status_code == 401
    assert Client(headers={"Authorization": "Bearer s3cret"}).get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (b"http://localhost:8000", True),
        (b"https://127.0.0.1", True),
        (b"https://evil.example", False),
        (b"null", False),
        (b"file://", False),
        (b"http://localhost.evil.example", False),
        (b"garbage", False),
    ],
)
def test_origin_check_follows_the_contract(origin, allowed):
    with override_settings(ALLOWED_HOSTS=["localhost", "127.0.0.1"]):
        assert origin_allowed(origin) is allowed
