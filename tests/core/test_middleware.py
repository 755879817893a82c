"""Django's own middleware on an async request without a thread hop (core.middleware.InlineMiddleware):
each of the seven runs its hooks on the event loop, and the one response that may write to the
database (a changed session, stored messages) still goes through the thread."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.messages import add_message, constants
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from core import middleware

pytestmark = pytest.mark.django_db(transaction=True)

INLINE = [
    middleware.SecurityMiddleware,
    middleware.SessionMiddleware,
    middleware.CommonMiddleware,
    middleware.CsrfViewMiddleware,
    middleware.AuthenticationMiddleware,
    middleware.MessageMiddleware,
    middleware.XFrameOptionsMiddleware,
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
    """The seven around an async view, in the order of settings.MIDDLEWARE (innermost last)."""
    handler = view
    for cls in reversed(INLINE):
        handler = cls(handler)
    return handler


async def run_view_hooks(handler: Any, request: HttpRequest, view: Any) -> None:
    layer = handler
    while hasattr(layer, "get_response"):
        if (hook := getattr(layer, "process_view", None)) is not None:
            assert await hook(request, view, (), {}) is None
        layer = layer.get_response


@pytest.mark.asyncio
async def test_an_api_request_through_all_seven_takes_no_thread(hops: list[str]) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    handler = chain(view)
    request = RequestFactory().get("/api/rooms/", HTTP_AUTHORIZATION="Bearer x")
    await run_view_hooks(handler, request, view)
    response = await handler(request)
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert hops == []


@pytest.mark.asyncio
async def test_a_changed_session_and_added_messages_are_saved_through_the_thread(hops: list[str]) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        request.session["seen"] = True
        add_message(request, constants.INFO, "saved")
        return HttpResponse("ok")

    response = await chain(view)(RequestFactory().get("/"))
    assert response.status_code == 200
    assert hops == ["process_response", "process_response"]  # the messages', then the session's
    assert response.cookies["sessionid"].value, "the session was saved and its cookie set"


def test_the_admin_still_finds_the_middleware_it_needs() -> None:
    from django.core import checks

    assert [e for e in checks.run_checks() if (e.id or "").startswith("admin.")] == []
