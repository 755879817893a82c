"""granian (WEB_SERVER=granian): its WebSocket guard, its drain on SIGTERM and its proxy
headers; core.servers chooses this module at start-up. HTTP responses get the asyncio
servers' send time-out (core.servers.asyncio_server.SendTimeoutMiddleware).

granian is a Rust server: the ``send`` it hands the application is a method of a Rust
object, with no asyncio transport behind it to ask how full it is. Calling it starts the
write at once (on granian's own runtime) and returns a future; the future stays pending
while the client is not reading (the socket's buffers full), so awaited from the hub's
fan-out one stalled client would hold up its whole room. ``InFlight`` never awaits it
there: it starts a frame's write, and while that write is still pending, queues what
follows, in order, for a task of this connection.

What granian does not let the application do is drop a connection: cancelling the
pending future does not stop the write, and granian flushes what it holds before it
closes. So a socket cut off for not reading (4008 under the other servers) gets nothing
more queued and its frames are dropped, but its TCP connection ends only when its
client reads what granian already holds or goes away (docs/protocol.md, "Slow and
stalled clients").
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings

from core import drain
from core.aio import spawn

logger = logging.getLogger(__name__)


def proxy_headers(application: Any) -> Any:
    """granian reads no X-Forwarded-For itself: with FORWARDED_ALLOW_IPS set (the addresses
    of the proxies to trust, comma-separated, or ``*``, as uvicorn reads it) the client's
    address and scheme come from the headers of those peers, through granian's own
    wrapper; without it, the peer's address stands, as under daphne without
    ``--proxy-headers``."""
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
    if not trusted:
        return application
    from granian.utils.proxies import wrap_asgi_with_proxy_headers

    return wrap_asgi_with_proxy_headers(application, trusted_hosts=trusted)


def drain_on_sigterm() -> None:
    """granian's main process, told to stop, sends SIGTERM to its worker and waits for it;
    the worker, on its event loop's handler of SIGTERM and SIGINT, stops serving at once.
    So SIGTERM now drains the worker first (core.drain: the sockets' goodbyes spread over
    DRAIN_SECONDS, generations finished or handed over), then raises SIGINT in the worker,
    which granian's handler takes as its stop; a second SIGTERM stops it at once. Runs
    after granian installed its handlers (it does so before lifespan start-up)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    asked = False

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    def on_sigterm() -> None:
        nonlocal asked
        if asked:
            stop()
            return
        asked = True

        async def drain_then_stop() -> None:
            try:
                await drain.drain(float(settings.DRAIN_SECONDS))
            finally:
                stop()

        spawn(drain_then_stop())

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)


class InFlight:
    """A WebSocket's guard under granian (core.servers.SocketGuard): each frame's write is
    started without awaiting it; while one is still pending, the frames after it wait in
    this queue, in order, for a task of this connection."""

    closes_gracefully = False  # a close frame would wait behind the pending write

    def __init__(self, send: Any) -> None:
        self.send = send
        self.pending: Any = None  # the future of the last write started, until it is done
        self.frames: collections.deque[str] = collections.deque()
        self.waiting_bytes = 0
        self.waiting_since: float | None = None  # since when frames have been waiting
        self.writer: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, send: Any) -> InFlight | None:
        """A guard for granian's ``send`` (a method of its Rust WebSocket protocol); None
        for any other ``send`` (a test communicator)."""
        owner = type(getattr(send, "__self__", None))
        if owner.__module__ != "granian._granian":
            return None
        return cls(send)

    def hold(self, text: str) -> bool:
        """Always True: the frame is written (started) or queued here, never by the caller."""
        if self.writer is None and (self.pending is None or self.pending.done()):
            self._start(text)
            return True
        self.frames.append(text)
        self.waiting_bytes += len(text)
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        if self.writer is None:
            self.writer = spawn(self._drain(), name="socket-in-flight")
        return True

    def _start(self, text: str) -> None:
        started = self.send({"type": "websocket.send", "text": text})
        # A future while the socket is open; once it is closed, an awaitable that does nothing.
        self.pending = started if hasattr(started, "done") else None

    async def _drain(self) -> None:
        try:
            if self.pending is not None:
                await self.pending
            while self.frames:
                text = self.frames.popleft()
                self.waiting_bytes -= len(text)
                self._start(text)
                if self.pending is not None:
                    await self.pending
        except Exception:  # the connection went away; its consumer is told by receive()
            logger.debug("in-flight writer stopped", exc_info=True)
        finally:
            self.writer = None
            self.waiting_since = None
            self.waiting_bytes = 0

    def abort(self, code: int) -> None:
        """Drop what waits, and close with ``code`` behind the pending write. granian gives
        no way to drop the connection itself: what it already holds goes out when the
        client reads again, then the close frame, and the connection ends."""
        self.frames.clear()
        self.waiting_bytes = 0
        if self.writer is not None:
            self.writer.cancel()
        # Not awaited (it waits as long as the pending write); granian writes in call order.
        self.send({"type": "websocket.close", "code": code})
