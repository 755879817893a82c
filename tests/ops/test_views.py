import pytest
from django.test import Client, override_settings

from accounts.origin import origin_allowed

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


def handshake(origin: bytes | None, *, host: bytes = b"localhost:8000", scheme: str = "ws", headers=()) -> dict:
    """A WebSocket scope as daphne or uvicorn gives it: the browser's Host and Origin."""
    sent = [(b"host", host), *([(b"origin", origin)] if origin is not None else []), *headers]
    return {"type": "websocket", "path": "/ws/rooms/lobby/", "scheme": scheme, "headers": sent}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # a script: judged by its token
        (b"http://localhost:8000", True),  # the page's own origin
        (b"http://localhost:9999", False),  # another port of an allowed host
        (b"http://localhost", False),
        (b"https://localhost:8000", False),  # another scheme
        (b"http://127.0.0.1:8000", False),  # another allowed host is another origin too
        (b"https://evil.example", False),
        (b"null", False),
        (b"file://", False),
        (b"http://localhost.evil.example", False),
        (b"garbage", False),
    ],
)
def test_origin_check_follows_the_contract(origin, allowed):
    """docs/protocol.md, "Authentication and the handshake": the handshake's own origin (scheme, host and port) or none at all."""
    with override_settings(ALLOWED_HOSTS=["localhost", "127.0.0.1"]):
        assert origin_allowed(handshake(origin)) is allowed


def test_origin_check_compares_scheme_and_port_with_the_request():
    with override_settings(ALLOWED_HOSTS=["127.0.0.1"]):
        plain = handshake(b"http://127.0.0.1", host=b"127.0.0.1")
        assert origin_allowed(plain)
        assert not origin_allowed(handshake(b"https://127.0.0.1", host=b"127.0.0.1")), "https page, http socket"
        assert not origin_allowed(handshake(b"http://127.0.0.1:9999", host=b"127.0.0.1")), "another port"
        assert origin_allowed(handshake(b"https://127.0.0.1", host=b"127.0.0.1", scheme="wss"))
        assert not origin_allowed(handshake(b"http://127.0.0.1", host=b"127.0.0.1", scheme="wss"))
        # A Host outside ALLOWED_HOSTS is not an origin of this site (DNS rebinding).
        assert not origin_allowed(handshake(b"http://evil.example", host=b"evil.example"))


def test_origin_check_takes_the_scheme_from_the_proxy_only_when_told_to():
    """As request.is_secure(): X-Forwarded-Proto counts only with SECURE_PROXY_SSL_HEADER."""
    proxied = [(b"x-forwarded-proto", b"https")]
    https_page = handshake(b"https://localhost", host=b"localhost", headers=proxied)
    http_page = handshake(b"http://localhost", host=b"localhost", headers=proxied)
    with override_settings(ALLOWED_HOSTS=["localhost"], SECURE_PROXY_SSL_HEADER=None):
        assert not origin_allowed(https_page) and origin_allowed(http_page)
    with override_settings(ALLOWED_HOSTS=["localhost"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert origin_allowed(https_page) and not origin_allowed(http_page)


def test_origin_check_accepts_csrf_trusted_origins():
    """Exact origins and Django's https://*.example.org form, as the CSRF check reads them."""
    trusted = ["https://app.example", "https://*.example.org"]
    with override_settings(ALLOWED_HOSTS=["localhost"], CSRF_TRUSTED_ORIGINS=trusted):
        for origin in (b"https://app.example", b"https://chat.example.org", b"https://example.org"):
            assert origin_allowed(handshake(origin)), origin
        for origin in (
            b"http://app.example",
            b"https://app.example:8443",
            b"http://chat.example.org",
            b"https://example.org.evil",
        ):
            assert not origin_allowed(handshake(origin)), origin
