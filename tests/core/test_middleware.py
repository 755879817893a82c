"""Django's own middleware on an async request without a thread hop (core.middleware.InlineMiddleware):
each of the three runs its hooks on the event loop, and the one response that may write to the
database (stored messages, which may go to the session) still goes through the thread. The
session's, CSRF's, security's and clickjacking's stay Django's (their deploy checks look for
them by name), so the session is given to the request here as Django's middleware would."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.messages import add_message, constants
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from core import middleware

pytestmark = pytest.mark.django_db(transaction=True)

INLINE = [
    middleware.CommonMiddleware,
    middleware.AuthenticationMiddleware,
    middleware.MessageMiddleware,
]


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the hooks sent to the thread, by ours or by Django's MiddlewareMixin."""
    sent: list[str] = []

    def counting_sync_to_async(function: Any, **kwargs: Any) -> Any:
        sent.append(getattr(function, "__name__", repr(function)))
        return sync_to_async(function, **kwargs)

    monkeypatch.setattr(middleware, "sync_to_async", counting_sync_to_async)
    monkeypatch.setattr("django.utils.deprecation.sync_to_async", counting_sync_to_async)
    return sent


def chain(view: Any) -> Any:
    """The three around an async view, in the order of settings.MIDDLEWARE (innermost last)."""
    handler = view
    for cls in reversed(INLINE):
        handler = cls(handler)
    return handler


@pytest.mark.asyncio
async def test_an_api_request_through_all_three_takes_no_thread(hops: list[str]) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    request = RequestFactory().get("/api/rooms/", HTTP_AUTHORIZATION="Bearer x")
    request.session = SessionStore()
    response = await chain(view)(request)
    assert response.status_code == 200
    assert hops == []


@pytest.mark.asyncio
async def test_added_messages_are_stored_through_the_thread(hops: list[str]) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        add_message(request, constants.INFO, "saved")
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.session = SessionStore()
    response = await chain(view)(request)
    assert response.status_code == 200
    assert hops == ["process_response"]  # the messages'
    assert response.cookies["messages"].value, "the message was stored (signed) for the next page"


def test_the_admin_still_finds_the_middleware_it_needs() -> None:
    from django.core import checks

    assert [e for e in checks.run_checks() if (e.id or "").startswith("admin.")] == []
