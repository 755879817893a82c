"""Authentication paths and token storage (docs/security.md): which credential decides
who a request or a handshake is, and when it stops working."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from accounts.services import token_create, token_revoke, user_for_token
from chat.hub import get_hub
from chat.writer import get_writer
from config.asgi import application
from tests.support.factories import make_room, make_user
from tests.support.processes import ROOT

TIMEOUT = 5


async def first_frame_or_close(headers: list[tuple[bytes, bytes]], path: str = "/ws/rooms/lobby/") -> object:
    """The handshake's outcome: "hello" when it authenticated, else the close code."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    output = await communicator.receive_output(timeout=TIMEOUT)
    if output["type"] == "websocket.close":
        return output["code"]
    await communicator.disconnect()
    return "hello"


def session_cookie(client: Client) -> tuple[bytes, bytes]:
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())


def bearer(raw: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {raw}".encode())


@pytest.mark.django_db
def test_a_bad_bearer_token_never_falls_back_to_the_session():
    """A request that names a token is that token's user or nobody: a stolen session
    cookie plus a junk header does not pass, and a revoked token is simply refused."""
    alice = make_user("alice")
    browser = Client()
    browser.force_login(alice)
    assert browser.get("/api/rooms/").status_code == 200
    for header in ("Bearer rt_not-a-real-token", "Bearer ", "Bearer"):
        response = browser.get("/api/rooms/", headers={"Authorization": header})
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated", header
    token, raw = token_create(user=alice)
    assert Client().get("/api/rooms/", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    token_revoke(token=token)
    assert Client().get("/api/rooms/", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_handshakes_follow_the_same_rules_as_http():
    """Bearer first (a bad one is nobody, session or not); else a session that Django
    still recognises: not forged, not logged out, not from before a password change."""

    def setup():
        make_room()
        alice = make_user("alice")
        token, raw = token_create(user=alice)
        browser = Client()
        browser.force_login(alice)
        return alice, token, raw, browser

    alice, token, raw, browser = await database_sync_to_async(setup)()
    try:
        await _handshake_rules(alice, token, raw, browser)
    finally:
        await get_hub().close()
        await get_writer().close()


async def _handshake_rules(alice, token, raw, browser) -> None:
    cookie = session_cookie(browser)
    assert await first_frame_or_close([bearer(raw)]) == "hello"
    assert await first_frame_or_close([cookie]) == "hello"
    assert await first_frame_or_close([cookie, bearer("rt_forged")]) == 4001, "no fallback to the session"
    assert await first_frame_or_close([(b"cookie", f"{settings.SESSION_COOKIE_NAME}=forged0session0key".encode())]) == 4001

    await database_sync_to_async(token_revoke)(token=token)
    assert await first_frame_or_close([bearer(raw)]) == 4001, "a revoked token opens no socket"

    def change_password():
        alice.set_password("a-brand-new-passphrase-7")
        alice.save()

    await database_sync_to_async(change_password)()
    assert await first_frame_or_close([cookie]) == 4001, "sessions from before a password change are void"

    def log_in_again_then_out() -> tuple[bytes, bytes]:
        again = Client()
        again.force_login(alice)
        kept = session_cookie(again)
        again.post("/accounts/logout/")
        return kept

    assert await first_frame_or_close([await database_sync_to_async(log_in_again_then_out)()]) == 4001, "logged out"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_cross_site_page_cannot_use_the_session_cookie_on_a_socket():
    """Cross-site WebSocket hijacking: a hostile page's handshake carries the victim's
    cookie and the page's Origin; it is refused before accept, on both sockets."""

    def setup():
        make_room()
        browser = Client()
        browser.force_login(make_user("alice"))
        return session_cookie(browser)

    cookie = await database_sync_to_async(setup)()
    try:
        for path in ("/ws/rooms/lobby/", "/ws/assistant/"):
            for origin in (b"https://evil.example", b"null", b"http://localhost.evil.example"):
                communicator = WebsocketCommunicator(application, path, headers=[cookie, (b"origin", origin)])
                connected, _ = await communicator.connect(timeout=TIMEOUT)
                assert not connected, (path, origin)
        site = [cookie, (b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]
        assert await first_frame_or_close(site) == "hello", "the site itself"
    finally:
        await get_hub().close()
        await get_writer().close()


@pytest.mark.django_db
def test_what_is_stored_cannot_be_used_as_a_token():
    """The database holds the SHA-256 and the first 10 characters (rt_ + 7): neither is a credential."""
    token, raw = token_create(user=make_user())
    assert raw.startswith("rt_") and len(raw) == 46 and token.prefix == raw[:10]
    assert user_for_token(raw=token.token_hash) is None
    assert user_for_token(raw=token.prefix) is None
    assert user_for_token(raw=raw) is not None


@pytest.mark.django_db
def test_tokens_never_reach_the_logs(caplog):
    """Neither a good nor a bad token is written to any log, at any level."""
    make_room()
    _, raw = token_create(user=make_user())
    forged = "rt_" + "f" * 43
    with caplog.at_level(logging.DEBUG):
        assert Client().get("/api/rooms/", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
        assert Client().get("/api/rooms/", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        assert Client().get("/api/no-such-route", headers={"Authorization": f"Bearer {raw}"}).status_code == 404
    logged = "\n".join(f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records)
    assert caplog.records, "the check needs something logged to look through"
    assert raw not in logged and forged not in logged and raw[10:] not in logged


def test_production_refuses_to_start_without_a_secret_key():
    """DEBUG off and no DJANGO_SECRET_KEY: settings fail with the variable's name (no default key)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DEBUG="0")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr
