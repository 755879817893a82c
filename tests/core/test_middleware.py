"""Django's own middleware on an async request without a thread hop (core.middleware): each runs
its hooks on the event loop, in our ASGI handler, which loads them in place of the Django classes
settings.MIDDLEWARE names; the responses that may write to the database (a changed session, stored
messages) still go through the thread."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.messages import add_message, constants
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signals
from django.core.handlers import asgi as django_asgi
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.urls import path

from core import middleware

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def remember(request: HttpRequest) -> HttpResponse:
    await request.session.aset("seen", True)
    return HttpResponse("remembered")


def thread_name(request: HttpRequest) -> HttpResponse:
    """A sync view: Django runs it on the request's thread for sync code."""
    return HttpResponse(f"{threading.current_thread().name} {threading.get_ident()}")


meeting = threading.Barrier(2, timeout=5)


def meet(request: HttpRequest) -> HttpResponse:
    """A sync view that returns only once another request's sync view is running too."""
    meeting.wait()
    return HttpResponse(f"{threading.current_thread().name} {threading.get_ident()}")


connections_used: list[Any] = []


def uses_the_database(request: HttpRequest) -> HttpResponse:
    """A sync view that queries: its thread opens a database connection."""
    connections_used.append(connection)
    return HttpResponse(str(Session.objects.count()))


urlpatterns = [
    path("api/hello", hello),
    path("db", uses_the_database),
    path("hello", hello),
    path("remember", remember),
    path("thread", thread_name),
    path("meet", meet),
]


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the hooks sent to the thread for sync code: by ours, by Django's
    MiddlewareMixin, or by the handler (a sync ``process_view``, a sync view). Not Django's
    logging of an error response, which goes to a thread pool of its own."""
    sent: list[str] = []

    def counting_sync_to_async(function: Any, **kwargs: Any) -> Any:
        if kwargs.get("thread_sensitive", True):
            sent.append(getattr(function, "__name__", repr(function)))
        return sync_to_async(function, **kwargs)

    monkeypatch.setattr(middleware, "sync_to_async", counting_sync_to_async)
    monkeypatch.setattr("django.utils.deprecation.sync_to_async", counting_sync_to_async)
    monkeypatch.setattr("django.core.handlers.base.sync_to_async", counting_sync_to_async)
    return sent


async def request(method: str, path: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """One request through our ASGI handler, as daphne or uvicorn would make it."""
    headers = [(b"host", b"testserver"), *(headers or [])]
    communicator = HttpCommunicator(middleware.ASGIHandler(), method, path, headers=headers)
    response: dict[str, Any] = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=10)  # the handler's end (it closes the request's body)
    response["headers"] = [(name.decode().lower(), value.decode()) for name, value in response["headers"]]
    return response


def header(response: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in response["headers"] if key == name]


@pytest.mark.asyncio
async def test_a_request_through_every_django_middleware_takes_no_thread(hops: list[str]) -> None:
    response = await request("GET", "/hello")
    assert response["status"] == 200 and response["body"] == b"ok"
    assert hops == []
    # Each of Django's ran: security's and clickjacking's headers are there.
    assert header(response, "x-content-type-options") == ["nosniff"]
    assert header(response, "x-frame-options") == ["DENY"]
    assert header(response, "cross-origin-opener-policy") == ["same-origin"]


@pytest.mark.asyncio
async def test_csrf_is_checked_inline_and_still_refuses_a_post_without_its_token(hops: list[str]) -> None:
    # A request with a session cookie (one with none has no ambient credential to forge, and
    # accounts.middleware exempts it).
    refused = await request("POST", "/api/hello", headers=[(b"cookie", b"sessionid=abc")])
    assert refused["status"] == 403
    assert json.loads(refused["body"])["error"]["code"] == "csrf_failed"
    token = "a" * 32
    cookie = (b"cookie", f"sessionid=abc; csrftoken={token}".encode())
    accepted = await request("POST", "/api/hello", headers=[cookie, (b"x-csrftoken", token.encode())])
    assert accepted["status"] == 200
    assert hops == []


@pytest.mark.asyncio
async def test_a_changed_session_is_saved_through_the_thread(hops: list[str]) -> None:
    response = await request("GET", "/remember")
    assert response["status"] == 200
    assert hops == ["process_response", "close"]  # the session's, then the request's end on the thread it used
    cookies = header(response, "set-cookie")
    session_key = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("sessionid="))
    session = await Session.objects.aget(session_key=session_key)
    assert session.get_decoded() == {"seen": True}


def test_csrf_kept_in_the_session_stays_djangos(settings: Any) -> None:
    assert "django.middleware.csrf.CsrfViewMiddleware" in middleware.inline_forms()
    settings.CSRF_USE_SESSIONS = True
    assert "django.middleware.csrf.CsrfViewMiddleware" not in middleware.inline_forms()


def test_settings_name_each_inline_form_by_djangos_path(settings: Any) -> None:
    """So that `manage.py check --deploy` and the admin's checks find them."""
    for dotted_path, inline in middleware.inline_forms().items():
        assert dotted_path in settings.MIDDLEWARE
        assert f"{inline.__mro__[2].__module__}.{inline.__mro__[2].__name__}" == dotted_path


@pytest.mark.asyncio
async def test_added_messages_are_stored_through_the_thread(hops: list[str]) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        add_message(request, constants.INFO, "saved")
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.session = SessionStore()
    response = await middleware.MessageMiddleware(view)(request)  # type: ignore[misc]  # async, since the view is
    assert response.status_code == 200
    assert hops == ["process_response"]  # the messages'
    assert response.cookies["messages"].value, "the message was stored (signed) for the next page"


def test_the_admin_still_finds_the_middleware_it_needs() -> None:
    from django.core import checks

    assert [e for e in checks.run_checks() if (e.id or "").startswith("admin.")] == []


async def _idle_threads_at_least(count: int) -> None:
    for _ in range(500):  # 5 s
        if middleware.request_threads.idle() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{middleware.request_threads.idle()} idle request threads after 5 s, expected {count}")


@pytest.mark.asyncio
async def test_a_requests_sync_code_runs_on_a_thread_an_earlier_request_used() -> None:
    idle = middleware.request_threads.idle()
    first = await request("GET", "/thread")
    await _idle_threads_at_least(max(idle, 1))  # the first request's executor is back, on top
    started = threading.active_count()
    second = await request("GET", "/thread")
    assert first["status"] == second["status"] == 200
    assert second["body"] == first["body"] and first["body"].startswith(b"request-sync"), (first["body"], second["body"])
    assert threading.active_count() == started, "no thread started for the second request"


@pytest.mark.asyncio
async def test_requests_running_at_once_never_share_a_thread_for_sync_code() -> None:
    # Were the two on one thread, the first would wait for the second, which waits behind it:
    # the barrier would break after 5 s and both views fail.
    meeting.reset()
    first, second = await asyncio.gather(request("GET", "/meet"), request("GET", "/meet"))
    assert first["status"] == second["status"] == 200
    assert first["body"] != second["body"]


# ---- the request's start and end without a thread hop, unless the thread is needed ----------------
@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was sent to a request's executor (any call, the handler's own included), by name."""
    sent: list[str] = []
    submit = middleware.RequestExecutor.submit

    def counting(self: middleware.RequestExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(middleware.RequestExecutor, "submit", counting)
    return sent


@pytest.mark.asyncio
async def test_a_request_that_runs_nothing_on_its_thread_never_wakes_it(submitted: list[str]) -> None:
    response = await request("GET", "/hello")
    assert response["status"] == 200
    assert submitted == [], "no request_started, response.close or hand-back on the thread"


@pytest.mark.asyncio
async def test_a_request_that_used_its_thread_ends_there_and_its_connection_is_closed(submitted: list[str]) -> None:
    connections_used.clear()
    response = await request("GET", "/db")
    assert response["status"] == 200 and response["body"] == b"0"
    [used] = connections_used
    assert "HttpResponseBase.close" in submitted[-2], "response.close on the thread"
    assert submitted[-1] == "_nothing", "then the hand-back, once the thread is done"
    assert used.connection is None, "request_finished closed the thread's connection (CONN_MAX_AGE is 0)"


@pytest.mark.asyncio
async def test_other_receivers_of_the_start_and_end_are_sent_as_django_sends_them(submitted: list[str]) -> None:
    heard: list[tuple[str, str]] = []

    def started(**kwargs: Any) -> None:
        heard.append(("started", threading.current_thread().name))

    def finished(**kwargs: Any) -> None:
        heard.append(("finished", threading.current_thread().name))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        response = await request("GET", "/hello")
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert response["status"] == 200
    assert [what for what, _ in heard] == ["started", "finished"]
    assert all(thread.startswith("request-sync") for _, thread in heard), heard


def test_the_handler_copies_djangos_handle_as_it_is() -> None:
    # core.middleware.ASGIHandler._handle is Django 5.2's ASGIHandler.handle with two calls
    # replaced. If Django changes its method, copy it again, keeping the two replacements.
    source = inspect.getsource(django_asgi.ASGIHandler.handle)
    assert hashlib.sha256(source.encode()).hexdigest() == "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323"


@pytest.mark.asyncio
async def test_a_requests_first_call_on_its_thread_starts_with_djangos_hygiene(monkeypatch: pytest.MonkeyPatch) -> None:
    # request_started's django.db receivers were not sent to the thread: they run before the
    # first call there, once per request.
    reset: list[str] = []
    monkeypatch.setattr(middleware, "reset_queries", lambda: reset.append(threading.current_thread().name))
    assert (await request("GET", "/thread"))["status"] == 200
    assert (await request("GET", "/hello"))["status"] == 200
    assert len(reset) == 1 and reset[0].startswith("request-sync"), reset
