"""Bounds on slow and stalled clients for asyncio servers (uvicorn), whose ``send`` waits
while the client is not reading (its transport's high-water mark, 64 KiB); core.servers
chooses this module at start-up. For HTTP responses, a time limit on each send; for
WebSocket sends, an ``Outbox``.

There the memory a stalled reader costs is already bounded, but its response is not:
an SSE stream nobody reads would hold its task, its stream reader and its socket for as
long as the client stays connected. After ``HTTP_SEND_TIMEOUT_SECONDS`` without taking
anything (60 s, nginx's send_timeout), the response ends and the server closes the
connection; the client resumes with ``Last-Event-ID``. Under daphne,
core.servers.daphne does the same with Twisted's producers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from django.conf import settings

from core import drain
from core.aio import spawn

logger = logging.getLogger(__name__)


def drain_on_sigterm() -> None:
    """uvicorn, told to stop, closes every socket at once (1012) and exits; so SIGTERM now
    drains the worker first (core.drain: the sockets' goodbyes spread over DRAIN_SECONDS,
    generations finished or handed over), then hands the signal to uvicorn's own handler,
    which closes what is left and exits. A second SIGTERM goes to uvicorn at once. Runs
    after uvicorn installed its handlers (lifespan start-up happens inside them)."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # the server handles no signals: nothing to put first
        return
    loop = asyncio.get_running_loop()
    asked = False

    def on_sigterm(number: int, frame: FrameType | None) -> None:
        nonlocal asked
        if asked:
            previous(number, frame)
            return
        asked = True

        async def drain_then_stop() -> None:
            try:
                await drain.drain(float(settings.DRAIN_SECONDS))
            finally:
                previous(number, frame)

        loop.call_soon_threadsafe(spawn, drain_then_stop())

    signal.signal(signal.SIGTERM, on_sigterm)


class ClientStalledError(Exception):
    """The client took nothing of the response for HTTP_SEND_TIMEOUT_SECONDS."""


class SendTimeoutMiddleware:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.application(scope, receive, send)
            return
        timeout = float(settings.HTTP_SEND_TIMEOUT_SECONDS)

        async def send_within_timeout(message: dict[str, Any]) -> None:
            try:
                # asyncio.timeout is a timer handle, not a task: cheap enough for every chunk.
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalledError from None

        try:
            await self.application(scope, receive, send_within_timeout)
        except ClientStalledError:
            logger.info("cut off %s: its client read nothing for %.0f s", scope.get("path"), timeout)


class Outbox:
    """A WebSocket's guard under asyncio servers (core.servers.SocketGuard), such as
    uvicorn, whose ``send`` waits while the transport's buffer is above its high-water
    mark: awaited from the hub's fan-out, one stalled client would hold up the whole room.
    A frame that would make ``send`` wait goes to this outbox instead, which a task of this
    connection drains; frames after it queue behind it, in order."""

    closes_gracefully = False  # a close frame would wait behind everything queued

    def __init__(self, transport: Any, send: Any) -> None:
        self.transport = transport
        self.send = send
        self.frames: collections.deque[str] = collections.deque()
        self.waiting_bytes = 0
        self.waiting_since: float | None = None  # since when frames have been waiting
        self.writer: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, send: Any) -> Outbox | None:
        """An outbox on an asyncio transport (``send`` a bound method of the server's
        protocol, as in uvicorn); None for any other ``send``."""
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        # Duck-typed: uvloop's transports have asyncio's methods without its base classes.
        if not all(hasattr(transport, name) for name in ("get_write_buffer_size", "get_write_buffer_limits", "abort")):
            return None
        return cls(transport, send)

    def hold(self, text: str) -> bool:
        if not self._would_wait(len(text)):
            return False
        self.frames.append(text)
        self.waiting_bytes += len(text)
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        if self.writer is None:
            self.writer = spawn(self._drain(), name="socket-outbox")
        return True

    def _would_wait(self, size: int) -> bool:
        if self.frames or self.writer is not None:
            return True
        low_water, high_water = self.transport.get_write_buffer_limits()
        buffered = self.transport.get_write_buffer_size()
        # Above the low-water mark the transport may still be paused from an earlier
        # burst (it resumes only at or below it); past the high-water mark this write
        # would pause it. Frame headers are a few bytes: the margin covers them.
        return buffered > low_water or buffered + size + 64 > high_water

    async def _drain(self) -> None:
        try:
            while self.frames:
                text = self.frames.popleft()
                self.waiting_bytes -= len(text)
                await self.send({"type": "websocket.send", "text": text})
        except Exception:  # the connection went away; its consumer is told by receive()
            logger.debug("outbox writer stopped", exc_info=True)
        finally:
            self.writer = None
            self.waiting_since = None
            self.waiting_bytes = 0

    def abort(self, code: int) -> None:
        """Drop what waits and the connection itself (its client reads nothing anyway)."""
        self.frames.clear()
        self.waiting_bytes = 0
        if self.writer is not None:
            self.writer.cancel()
        self.transport.abort()
