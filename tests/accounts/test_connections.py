"""Every long-lived channel ends when its user's credentials change, and is capped per
user (accounts.connections), in process: room and assistant sockets, SSE responses of
token streams and notifications, and running generations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings

from accounts.connections import get_connections, until_credentials_change
from accounts.credentials import Credential
from accounts.models import ApiToken
from accounts.services import token_revoke
from chat import protocol
from chat.hub import get_hub
from config.asgi import application
from core.redis_clients import reset_in_process
from streaming.models import ConversationMessage
from tests.support.asgi_client import BearerClient, read_all
from tests.support.factories import make_token, make_user
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
TIMEOUT = 5
# docs/protocol.md: a changed credential ends every channel within 2 seconds.
ENDS_WITHIN = 2.5


@pytest_asyncio.fixture(autouse=True)
async def _fresh_registries():
    reset_in_process()
    yield
    await get_connections().aclose()
    await get_hub().close()


@pytest.fixture
def alice(transactional_db) -> User:
    return make_user("alice")


def assistant_socket(*, token: str | None = None, session: str | None = None) -> WebsocketCommunicator:
    headers = []
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if session:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return WebsocketCommunicator(application, "/ws/assistant/", headers=headers)


async def close_code(ws: WebsocketCommunicator, timeout: float = TIMEOUT) -> int:
    async with asyncio.timeout(timeout):
        while True:
            output = await ws.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return int(output["code"])


async def opened(response):
    """The response once its body has started, as a server starts it at once (the test
    client only starts it when read)."""
    assert response.status_code == 200, response
    first = await anext(aiter(response.streaming_content))
    assert first.startswith(b": stream open")
    return response


async def start_reply(client: AsyncClient, *, max_tokens: int = 400):
    """A reply of ``max_tokens`` tokens at LLM_TOKEN_DELAY_MS each: still running for seconds."""
    return await opened(
        await client.post(
            "/api/assistant/stream", json.dumps({"message": "word", "max_tokens": max_tokens}), content_type="application/json"
        )
    )


async def notification_stream(client: AsyncClient):
    return await opened(await client.get("/api/notifications/stream"))


async def stored_reply(stream_id: str, timeout: float = TIMEOUT) -> ConversationMessage:
    async with asyncio.timeout(timeout):
        while True:
            found = await ConversationMessage.objects.filter(stream_id=stream_id).afirst()
            if found is not None:
                return found
            await asyncio.sleep(0.05)


async def ended(response, timeout: float = ENDS_WITHIN) -> str:
    """The rest of a streamed body; fails if it is still open after ``timeout``."""
    try:
        return await read_all(response, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"the response was still open {timeout} s after the change") from None


async def session_client(user: User) -> tuple[AsyncClient, str]:
    client = AsyncClient()
    await client.aforce_login(user)
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


# ---- a revoked token --------------------------------------------------------------------------------
@override_settings(LLM_TOKEN_DELAY_MS=20)
async def test_revoking_a_token_ends_its_sockets_and_streams_and_stops_its_generation(alice):
    raw = await database_sync_to_async(make_token)(alice)
    client = BearerClient(raw)
    ws = assistant_socket(token=raw)
    assert (await ws.connect())[0]
    notifications = await notification_stream(client)
    reply = await start_reply(client)
    stream_id = reply["X-Stream-Id"]
    await asyncio.sleep(0.3)

    token = await ApiToken.objects.aget(user=alice)
    await database_sync_to_async(token_revoke)(token=token)

    assert await close_code(ws, ENDS_WITHIN) == protocol.CLOSE_REAUTHENTICATE
    await ended(notifications)
    events = parse_events(await ended(reply))
    stored = await stored_reply(stream_id)
    assert stored.finish_reason == "cancelled", "the generation the revoked token started was stopped"
    assert 0 < len(stored.content.split()) < 400
    assert all(e.get("event") != "done" or e["data"]["finish_reason"] == "cancelled" for e in events)
    # The reconnect decides again: the token is no good any more.
    assert (await client.get("/api/notifications/stream")).status_code == 401
    again = assistant_socket(token=raw)
    await again.connect()
    assert await close_code(again) == protocol.CLOSE_UNAUTHENTICATED


@override_settings(LLM_TOKEN_DELAY_MS=10)
async def test_a_generation_whose_own_token_still_holds_runs_on_and_can_be_resumed(alice):
    revoked_raw, kept_raw = await database_sync_to_async(lambda: (make_token(alice), make_token(alice)))()
    kept = BearerClient(kept_raw)
    reply = await start_reply(kept, max_tokens=100)
    stream_id = reply["X-Stream-Id"]
    await asyncio.sleep(0.2)
    revoked = await ApiToken.objects.aget(prefix=revoked_raw[:10])
    await database_sync_to_async(token_revoke)(token=revoked)
    await ended(reply)  # every SSE response of the user ends; the client resumes
    resumed = await kept.get(f"/api/streams/{stream_id}/events", headers={"Last-Event-ID": f"{stream_id}:0"})
    events = parse_events(await read_all(resumed, timeout=10))
    assert events[-1]["event"] == "done" and events[-1]["data"]["finish_reason"] == "length"
    assert len([e for e in events if e.get("event") == "token"]) == 100


# ---- a log-out, a new password, a deactivated account ---------------------------------------------------
@override_settings(LLM_TOKEN_DELAY_MS=20)
async def test_logging_out_ends_the_sessions_channels_and_stops_its_generation(alice):
    client, session = await session_client(alice)
    ws = assistant_socket(session=session)
    assert (await ws.connect())[0]
    notifications = await notification_stream(client)
    reply = await start_reply(client)
    await asyncio.sleep(0.3)
    assert (await client.post("/accounts/logout/")).status_code == 302  # the log-out page, as a browser does
    assert await close_code(ws, ENDS_WITHIN) == protocol.CLOSE_REAUTHENTICATE
    await ended(notifications)
    await ended(reply)
    assert (await stored_reply(reply["X-Stream-Id"])).finish_reason == "cancelled"


@override_settings(LLM_TOKEN_DELAY_MS=20)
async def test_a_new_password_ends_every_channel_and_stops_what_the_old_session_started(alice):
    client, session = await session_client(alice)
    raw = await database_sync_to_async(make_token)(alice)
    by_token = await start_reply(BearerClient(raw), max_tokens=60)
    ws = assistant_socket(session=session)
    assert (await ws.connect())[0]
    notifications = await notification_stream(client)
    by_session = await start_reply(client)
    await asyncio.sleep(0.3)

    alice.set_password("a-new-Passphrase-77")
    await alice.asave()

    assert await close_code(ws, ENDS_WITHIN) == protocol.CLOSE_REAUTHENTICATE
    await ended(notifications)
    await ended(by_session)
    await ended(by_token)
    assert (await stored_reply(by_session["X-Stream-Id"])).finish_reason == "cancelled"
    # The token is not the password: what it started runs to its end.
    assert (await stored_reply(by_token["X-Stream-Id"], timeout=10)).finish_reason == "length"


@override_settings(LLM_TOKEN_DELAY_MS=20)
async def test_deactivating_an_account_ends_everything_it_had_open(alice):
    raw = await database_sync_to_async(make_token)(alice)
    client = BearerClient(raw)
    ws = assistant_socket(token=raw)
    assert (await ws.connect())[0]
    notifications = await notification_stream(client)
    reply = await start_reply(client)
    await asyncio.sleep(0.3)
    alice.is_active = False
    await alice.asave()
    assert await close_code(ws, ENDS_WITHIN) == protocol.CLOSE_REAUTHENTICATE
    await ended(notifications)
    await ended(reply)
    assert (await stored_reply(reply["X-Stream-Id"])).finish_reason == "cancelled"


async def test_a_change_lost_in_a_redis_blip_is_caught_when_the_worker_reconnects(alice):
    raw, other = await database_sync_to_async(lambda: (make_token(alice), make_token(make_user("bob"))))()
    revoked_socket, kept_socket = assistant_socket(token=raw), assistant_socket(token=other)
    assert (await revoked_socket.connect())[0] and (await kept_socket.connect())[0]
    # Revoked without the publish (as if it had been lost): nobody is told...
    await ApiToken.objects.filter(user=alice).aupdate(revoked_at="2026-01-01T00:00:00Z")
    assert await revoked_socket.receive_nothing(0.3)
    # ...until the worker's subscriber (re)connects and re-checks what it holds.
    await get_connections()._on_reconnect()
    assert await close_code(revoked_socket) == protocol.CLOSE_REAUTHENTICATE
    assert await kept_socket.receive_nothing(0.3), "a valid credential is left alone"
    await kept_socket.disconnect()


# ---- caps and idle time-outs ------------------------------------------------------------------------
@override_settings(ASSISTANT_MAX_SOCKETS_PER_USER=2)
async def test_assistant_sockets_are_capped_per_user(alice):
    raw = await database_sync_to_async(make_token)(alice)
    first, second, third = (assistant_socket(token=raw) for _ in range(3))
    assert (await first.connect())[0] and (await second.connect())[0]
    await third.connect()
    assert await close_code(third) == protocol.CLOSE_TOO_MANY_CONNECTIONS
    await first.disconnect()
    fourth = assistant_socket(token=raw)
    assert (await fourth.connect())[0]
    await fourth.send_json_to({"type": "ping"})
    assert await fourth.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}, "a closed socket frees its slot"
    await fourth.disconnect()
    await second.disconnect()


@override_settings(NOTIFICATIONS_MAX_STREAMS_PER_USER=2, NOTIFICATIONS_STREAM_IDLE_SECONDS=1.0)
async def test_notification_streams_are_capped_per_user(alice):
    client = BearerClient(await database_sync_to_async(make_token)(alice))
    first = await client.get("/api/notifications/stream")
    second = await client.get("/api/notifications/stream")
    assert first.status_code == second.status_code == 200
    refused = await client.get("/api/notifications/stream")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_connections" and refused["Retry-After"]
    other = BearerClient(await database_sync_to_async(lambda: make_token(make_user("bob")))())
    assert (await other.get("/api/notifications/stream")).status_code == 200, "the cap is per user"
    await read_all(first, timeout=4)  # idle for a second: ended by itself
    await read_all(second, timeout=4)
    assert (await client.get("/api/notifications/stream")).status_code == 200, "an ended stream frees its slot"


@override_settings(WS_HEARTBEAT_SECONDS=0.3)
async def test_a_silent_assistant_socket_is_pinged_then_closed_4000(alice):
    raw = await database_sync_to_async(make_token)(alice)
    silent, answering = assistant_socket(token=raw), assistant_socket(token=raw)
    assert (await silent.connect())[0] and (await answering.connect())[0]
    pings = 0
    async with asyncio.timeout(TIMEOUT):
        while True:
            output = await silent.receive_output(timeout=TIMEOUT)
            if output["type"] == "websocket.close":
                break
            assert json.loads(output["text"]) == {"type": "ping"}
            pings += 1
            frame = await answering.receive_json_from(timeout=TIMEOUT)
            assert frame == {"type": "ping"}
            await answering.send_json_to({"type": "pong"})
    assert output["code"] == protocol.CLOSE_IDLE and pings >= 2
    await answering.send_json_to({"type": "ping"})
    frames = [await answering.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
    assert {"type": "pong"} in frames, "a client that answers stays open"
    await answering.disconnect()


@override_settings(NOTIFICATIONS_STREAM_IDLE_SECONDS=1.0)
async def test_an_idle_notification_stream_ends_by_itself(alice):
    client = BearerClient(await database_sync_to_async(make_token)(alice))
    stream = await client.get("/api/notifications/stream")
    started = asyncio.get_running_loop().time()
    body = await read_all(stream, timeout=4)
    assert 0.9 < asyncio.get_running_loop().time() - started < 3, "ended by itself after the idle time-out"
    assert body.startswith(": stream open")


# ---- the body of an SSE response, directly ----------------------------------------------------------
async def _waits_forever() -> AsyncIterator[str]:
    yield "first"
    await asyncio.Event().wait()
    yield "never"


async def _next(body: AsyncIterator[str]) -> str:
    return await anext(body)


async def test_a_body_waiting_when_the_credentials_change_ends_and_its_reader_runs_on(alice):
    body = until_credentials_change(_waits_forever(), user_id=alice.pk, credential=Credential(user_id=alice.pk))
    assert await anext(body) == "first"
    reader = asyncio.create_task(_next(body))
    await asyncio.sleep(0.05)  # waiting in the body
    await get_connections().changed(alice.pk)
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(TIMEOUT):
            await reader
    assert not reader.cancelled() and reader.cancelling() == 0, "the reading task was not left cancelled"
    assert not get_connections().by_user, "the connection is closed"


async def test_a_body_whose_reader_is_cancelled_as_the_credentials_change_passes_the_cancel_on(alice):
    body = until_credentials_change(_waits_forever(), user_id=alice.pk, credential=Credential(user_id=alice.pk))
    assert await anext(body) == "first"
    reader = asyncio.create_task(_next(body))
    await asyncio.sleep(0.05)
    reader.cancel()  # the client went away, say, in the same turn of the loop
    await get_connections().changed(alice.pk)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(TIMEOUT):
            await reader
    assert reader.cancelled()
    await body.aclose()
