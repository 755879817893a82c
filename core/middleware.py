"""Cross-cutting HTTP behaviour: JSON errors under the API (CORS is django-cors-headers')."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as django_auth
from django.contrib.messages import middleware as django_messages
from django.contrib.sessions import middleware as django_sessions
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers import asgi as django_asgi
from django.core.handlers import base as django_base
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware import clickjacking as django_clickjacking
from django.middleware import common as django_common
from django.middleware import csrf as django_csrf
from django.middleware import security as django_security
from django.urls import set_script_prefix

from core.http import error_response, openai_error_response, status_code_name

API_PREFIXES = ("/api/", "/v1/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _error_for(path: str, status: int) -> HttpResponse:
    """Our JSON error under /api/; OpenAI's error shape under /v1/."""
    name = status_code_name(status)
    if path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return openai_error_response(status, message=name.replace("_", " "), type=kind, code=name)
    return error_response(status, name, "see the status code")


class HybridMiddleware:
    """A middleware that runs on whichever side its request came in, sync or async,
    without a thread hop (Django's MiddlewareMixin runs its hooks through sync_to_async
    on every async request, so SSE views would pay a thread for each). Subclasses define
    ``__call__`` for sync requests and ``_acall`` for async ones."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        raise NotImplementedError


class ResponseMiddleware(HybridMiddleware):
    """A middleware that only rewrites responses. Subclasses implement
    ``process_response``, which runs once per response, on whichever side the request
    came in."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self.process_response(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self.process_response(request, await self.get_response(request))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        raise NotImplementedError


class ApiErrorMiddleware(ResponseMiddleware):
    """Turns every non-JSON error under the API (Django's 404/405/500 pages, CSRF
    failures) into the JSON error shape: ours under /api/, OpenAI's under /v1/.

    Runs just inside django-cors-headers' middleware, so those errors carry CORS headers
    for allowed origins too (a browser otherwise hides the status from the page).
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return _as_json_error(request, response) if is_api_path(request.path) else response


def _as_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
        return _error_for(request.path, response.status_code)
    return response


# ---- Django's own middleware, without a thread hop ------------------------------------------------
class InlineMiddleware:
    """Mixed in before one of Django's MiddlewareMixin middlewares whose hooks do no I/O:
    runs them inline on an async request.

    Django's MiddlewareMixin runs each hook of an async request through
    ``sync_to_async(thread_sensitive=True)``, and so does the handler for a ``process_view``:
    every request queues its hooks, one after the other, on a thread for sync code (and
    asgiref starts a new thread for each request that needs one). Django's middlewares made
    a dozen such hops per API request, on the path to a stream's first token
    (docs/performance.md, "Stream start"). Their hooks only read and set attributes,
    headers and cookies, so they run here on the event loop; a subclass names the
    responses whose hook may touch the database (``response_needs_thread``), and those
    still take the thread. Sync requests (the test client, WSGI) go through Django's own
    ``__call__``, unchanged.

    settings.MIDDLEWARE names Django's own classes, as its deploy and admin checks expect;
    our ASGI handler (``ASGIHandler`` below) loads these in their place.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        """MiddlewareMixin.__call__ calls this for an async request, in place of Django's."""
        hooks: Any = self
        response = hooks.process_request(request) if hasattr(hooks, "process_request") else None
        response = response or await hooks.get_response(request)
        if hasattr(hooks, "process_response"):
            if self.response_needs_thread(request, response):
                response = await sync_to_async(hooks.process_response, thread_sensitive=True)(request, response)
            else:
                response = hooks.process_response(request, response)
        return response

    def response_needs_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        """Whether this response's hook may do I/O (the database): then it runs in the thread."""
        return False


class SecurityMiddleware(InlineMiddleware, django_security.SecurityMiddleware):
    """HTTPS redirect, HSTS, nosniff, referrer and cross-origin opener policies: headers."""


class SessionMiddleware(InlineMiddleware, django_sessions.SessionMiddleware):
    """The session is loaded lazily (a view that reads it loads it, on its own terms); a
    response whose session must be saved takes the thread."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or bool(settings.SESSION_SAVE_EVERY_REQUEST))


class CsrfViewMiddleware(InlineMiddleware, django_csrf.CsrfViewMiddleware):
    """The token from its cookie, compared with the header or the form's field (a form is
    already in memory on an async request). Not used with CSRF_USE_SESSIONS, whose token
    lives in the session (the database)."""


class XFrameOptionsMiddleware(InlineMiddleware, django_clickjacking.XFrameOptionsMiddleware):
    """One header."""


class CommonMiddleware(InlineMiddleware, django_common.CommonMiddleware):
    """Disallowed user agents, APPEND_SLASH: the request's own data and the URLconf."""


class AuthenticationMiddleware(InlineMiddleware, django_auth.AuthenticationMiddleware):
    """Sets request.user and request.auser lazily: nothing is read until a view asks."""


class MessageMiddleware(InlineMiddleware, django_messages.MessageMiddleware):
    """Messages that were read or added may be stored in the session (loaded from the
    database): that response takes the thread."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


# ---- the ASGI handler that loads them ---------------------------------------------------------------
def inline_forms() -> dict[str, type[InlineMiddleware]]:
    """Django's middlewares by their dotted paths in settings.MIDDLEWARE, and the inline form
    the ASGI handler loads for each."""
    forms: dict[str, type[InlineMiddleware]] = {
        "django.middleware.security.SecurityMiddleware": SecurityMiddleware,
        "django.contrib.sessions.middleware.SessionMiddleware": SessionMiddleware,
        "django.middleware.common.CommonMiddleware": CommonMiddleware,
        "django.contrib.auth.middleware.AuthenticationMiddleware": AuthenticationMiddleware,
        "django.contrib.messages.middleware.MessageMiddleware": MessageMiddleware,
        "django.middleware.clickjacking.XFrameOptionsMiddleware": XFrameOptionsMiddleware,
    }
    if not settings.CSRF_USE_SESSIONS:
        forms["django.middleware.csrf.CsrfViewMiddleware"] = CsrfViewMiddleware
    return forms


class RequestThreads:
    """Single-thread executors for the thread-sensitive calls of one request each, kept for
    the next request once idle.

    Django gives every request a thread of its own for its sync code (a sync view, the
    response's ``close``, a changed session), as asgiref's ThreadSensitiveContext does
    without an executor: a thread started at the request's first such call, and another
    started at its end to join the first. Every request makes at least one such call (the
    handler closes each response through it), so that was two threads started per request,
    a tenth of a worker's event loop under 50 simultaneous token-stream starts
    (docs/performance.md, "Stream start"). Here a request gets an executor no other
    running request has, as before, but its thread is one an earlier request used.

    An executor is kept again only once everything sent to it has run (a no-op sent last
    has run), so a request never queues behind another's sync code, a hung call included.
    Beyond ``KEEP`` idle executors, one that comes back is let go."""

    # Idle threads kept: a burst of this many simultaneous requests reuses them all.
    KEEP = 64

    def __init__(self) -> None:
        self._idle: list[RequestExecutor] = []
        self._lock = threading.Lock()

    def take(self) -> RequestExecutor:
        with self._lock:
            executor = self._idle.pop() if self._idle else RequestExecutor()
        executor.used = False
        return executor

    def give_back(self, executor: RequestExecutor) -> None:
        """After the request: the executor is kept once its queue has drained, on its own
        thread (at once if the request sent it nothing)."""
        if not executor.used:
            self._keep(executor)
            return
        executor.submit(_nothing).add_done_callback(lambda _: self._keep(executor))

    def _keep(self, executor: RequestExecutor) -> None:
        with self._lock:
            if len(self._idle) < self.KEEP:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)  # on its own thread: no join, it ends after this callback

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


def _nothing() -> None:
    pass


class RequestExecutor(ThreadPoolExecutor):
    """A request's one thread for its sync code, noting whether the request sent it anything."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request-sync")
        self.used = False

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self.used:
            return super().submit(fn, *args, **kwargs)
        self.used = True
        return super().submit(_hygiene_then, fn, *args, **kwargs)


def _hygiene_then(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """A request's first call on its thread: what ``request_started`` did there when it
    was sent to the thread (``_request_started``), then the call."""
    reset_queries()
    close_old_connections()
    return fn(*args, **kwargs)


# Receivers of a request's start and end that act on the calling thread's database and cache
# connections (django.db's and django.core.cache's; CONN_MAX_AGE is 0): sent to a request
# thread that ran nothing, they have nothing to do.
_THREAD_HYGIENE = frozenset({reset_queries, close_old_connections, close_caches})
# One that resets the request's URLconf, a context variable: it runs as well on the event loop.
_CONTEXT_RESETS = frozenset({reset_urlconf})


def _without_the_thread(signal: Signal, sender: Any) -> list[Any] | None:
    """The receivers of ``signal`` to call on the event loop, if none needs the request's
    thread (only those above listen); None if one may."""
    sync_receivers, async_receivers = signal._live_receivers(sender)
    if async_receivers or not all(r in _THREAD_HYGIENE or r in _CONTEXT_RESETS for r in sync_receivers):
        return None
    return [r for r in sync_receivers if r in _CONTEXT_RESETS]


async def _request_started(sender: Any, scope: dict[str, Any]) -> None:
    """``request_started``, without a hop to the request's thread when only django.db
    listens: at a request's start its thread holds no connection (each request that ran
    anything there closed them as it finished, see ``_response_close``), and should the
    request run something there, django.db's receivers run first (``RequestExecutor``)."""
    if _without_the_thread(signals.request_started, sender) is None:
        await signals.request_started.asend(sender=sender, scope=scope)


async def _response_close(response: HttpResponseBase, executor: RequestExecutor, sender: Any) -> None:
    """``response.close()``, which sends ``request_finished``, on the request's thread as
    Django does when the request ran anything there, the response has something to
    release or another receiver listens; otherwise on the event loop, without the
    connection hygiene meant for a thread that ran nothing."""
    closers = response._resource_closers  # type: ignore[attr-defined]
    inline = None
    # The closer Django adds to every response is its request's close: the request body's
    # spooled file, closed as well here.
    if not executor.used and type(response).close is HttpResponseBase.close and all(_closes_a_request(c) for c in closers):
        inline = _without_the_thread(signals.request_finished, sender)
    if inline is None:
        await sync_to_async(response.close)()
        return
    for closer in closers:  # what HttpResponseBase.close does, but for the hygiene above
        with contextlib.suppress(Exception):
            closer()
    closers.clear()
    response.closed = True
    for receiver in inline:
        receiver(signal=signals.request_finished, sender=sender)


def _closes_a_request(closer: Any) -> bool:
    return isinstance(getattr(closer, "__self__", None), HttpRequest) and getattr(closer, "__name__", "") == "close"


request_threads = RequestThreads()


class ASGIHandler(django_asgi.ASGIHandler):
    """Django's ASGI handler, with Django's own middlewares in their inline form.

    ``load_middleware`` is Django's: it looks each entry of settings.MIDDLEWARE up by its
    dotted path, and while it runs, the paths of ``inline_forms`` resolve to ours (Django
    reads the setting itself, so the lookup is where one can step in). A middleware's
    ``process_view`` is called by the handler, which would send it to the thread: ours are
    called inline."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's, with the request's thread-sensitive calls on a reused thread (RequestThreads)."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = request_threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self._handle(scope, receive, send, executor)
        finally:
            request_threads.give_back(executor)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any, executor: RequestExecutor) -> None:
        """Django 5.2's ``ASGIHandler.handle``, statement for statement, but for its two hops to the
        request's thread, which every request made whatever it ran: the ``request_started``
        signal (django.db's sync receivers) and ``response.close()``. A thread hop costs
        about 145 µs of CPU here, both together 7 % of a short token stream's
        (docs/performance.md, "Ninth step"); ``_request_started`` and ``_response_close`` hop
        only when something there needs the thread. tests/core/test_middleware.py checks that
        Django's method is still the one copied."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        # Request is complete and can be served.
        set_script_prefix(django_asgi.get_script_prefix(scope))
        await _request_started(self.__class__, scope)
        # Get the request and check for basic issues.
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # create_request returns one or the other
            body_file.close()
            await self.send_response(error_response, send)
            await _response_close(error_response, executor, self.__class__)
            return

        async def process_request(request: HttpRequest, send: Any) -> HttpResponseBase:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client disconnected during send_response
                await self.send_response(response, send)

            return response

        # Try to catch a disconnect while getting response.
        tasks = [
            # Check the status of these tasks and (optionally) terminate them
            # in this order. The listen_for_disconnect() task goes first
            # because it should not raise unexpected errors that would prevent
            # us from cancelling process_request().
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Now wait on both tasks (they may have both finished by now).
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    # Ignore client disconnects.
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                # Allow views to handle cancellation.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):  # re-raised, as expected
                    await task

        try:
            response: HttpResponseBase = tasks[1].result()  # type: ignore[assignment]
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await _response_close(response, executor, self.__class__)

        body_file.close()

    def load_middleware(self, is_async: bool = False) -> None:
        forms = inline_forms() if is_async else {}
        import_string = django_base.import_string  # type: ignore[attr-defined]

        def resolve(path: str) -> Any:
            return forms.get(path) or import_string(path)

        django_base.import_string = resolve  # type: ignore[attr-defined]
        try:
            super().load_middleware(is_async)
        finally:
            django_base.import_string = import_string  # type: ignore[attr-defined]

    def adapt_method_mode(
        self, is_async: bool, method: Any, method_is_async: bool | None = None, debug: bool = False, name: str | None = None
    ) -> Any:
        """Called by ``load_middleware`` for each hook it calls itself (``process_view``):
        a sync one of ours runs inline on an async request."""
        if is_async and isinstance(getattr(method, "__self__", None), InlineMiddleware) and not iscoroutinefunction(method):

            async def inline(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **kwargs)

            return inline
        return super().adapt_method_mode(is_async, method, method_is_async, debug, name)
