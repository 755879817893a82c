"""Bounds on slow and stalled clients for daphne, installed when daphne serves us
(core.servers chooses it at start-up).

daphne hands each ``http.response.body`` to Twisted and returns at once: it registers no
producer, so Twisted never tells the application that a client stopped reading, and
every byte of a response the client does not read waits in the connection's
user-space write buffer, without limit. An SSE stream (a token stream resumed again and
again, the notifications stream, a task's events) read by a client that never reads
would grow the worker's memory for as long as the stream runs (daphne#373 is the same
family). uvicorn does not have this problem: its ``send`` waits while the transport is
above its high-water mark.

So this module gives daphne the same flow control, with Twisted's public producer API:

- each HTTP response registers a push producer on its request; Twisted pauses it when
  the connection's write buffer passes its high-water mark (64 KiB) and resumes it when
  the buffer has drained;
- the application's ``send`` of a body chunk then waits until the client has taken the
  buffered bytes, so an SSE generator stops producing instead of buffering;
- a client that takes nothing for ``HTTP_SEND_TIMEOUT_SECONDS`` while the buffer is
  full is cut off (``abortConnection``: a ``loseConnection`` would wait for the buffer
  to drain, which never happens); the application gets ``http.disconnect`` and the
  stream's reader stops. SSE clients resume with ``Last-Event-ID``.

So a stalled reader costs at most the high-water mark plus one chunk (SSE views keep
chunks small, core.sse), for at most the send timeout.

It also sets Twisted's idle time-out of HTTP connections (``HTTP_IDLE_TIMEOUT_SECONDS``),
which is what closes a connection that sent half a request (or half a WebSocket
handshake: daphne reads the whole HTTP request before the upgrade) and then nothing:
slowloris. Twisted's default is 60 s; daphne has no option for it.

And it makes autobahn, daphne's WebSocket implementation, fail a connection as RFC 6455
describes it, with a close frame: a message over daphne's 1 MiB
(``--websocket-max-message-size``) ends with close code 1009 ("message too big"), invalid
UTF-8 in a text frame with 1007 (docs/protocol.md, "Frames from the client"). autobahn's
default (``failByDrop``) drops the TCP connection instead, which a client sees as an
abnormal 1006, indistinguishable from a worker that died.

Installed by core.servers.guard_http only when daphne's server module is loaded
(``daphne ...``, ``manage.py runserver``); under uvicorn nothing here runs. WebSocket
sends get the same protection from ``SocketFlow``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

_FLOW_ATTRIBUTE = "_realtime_rooms_flow"


class _TransportFlow:
    """A Twisted push producer that only records whether the transport can take more.

    Twisted calls ``pauseProducing`` when the connection's write buffer is over its
    high-water mark and ``resumeProducing`` once it has drained; ``stopProducing`` when
    the connection is going away."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # Twisted names
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.writable.set()  # nothing will drain any more; let a waiting send go (it is dropped)


def install() -> None:
    """Patch daphne's server and HTTP factory once; a no-op on the second call."""
    from daphne import http_protocol, server, ws_protocol
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import classImplements

    if getattr(server.Server, "_realtime_rooms_limits", False):
        return
    classImplements(_TransportFlow, IPushProducer)
    send_timeout = float(settings.HTTP_SEND_TIMEOUT_SECONDS)
    idle_timeout = float(settings.HTTP_IDLE_TIMEOUT_SECONDS)

    original_handle_reply = server.Server.handle_reply
    original_factory_init = http_protocol.HTTPFactory.__init__
    original_ws_factory_init = ws_protocol.WebSocketFactory.__init__

    async def handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        """Runs for every message the application sends; waits while an HTTP client is
        not reading, and cuts it off after ``send_timeout``."""
        kind = message.get("type")
        is_http = isinstance(protocol, http_protocol.WebRequest)
        if is_http and kind == "http.response.start":
            _register(protocol)
        elif is_http and kind == "http.response.body" and not message.get("more_body", False):
            _unregister(protocol)  # before the request finishes and lets go of its channel
        await original_handle_reply(self, protocol, message)
        if not is_http or kind != "http.response.body":
            return
        flow: _TransportFlow | None = getattr(protocol, _FLOW_ATTRIBUTE, None)
        if flow is None or flow.writable.is_set():
            return
        try:
            async with asyncio.timeout(send_timeout):
                await flow.writable.wait()
        except TimeoutError:
            logger.info("closing a client that read nothing for %.0f s: %s", send_timeout, protocol.client_addr)
            _unregister(protocol)
            transport = protocol.channel.transport if protocol.channel is not None else None
            if transport is not None:
                transport.abortConnection()

    def factory_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_factory_init(self, *args, **kwargs)
        self.timeOut = idle_timeout  # copied to each connection by Twisted's buildProtocol

    def ws_factory_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_ws_factory_init(self, *args, **kwargs)
        # A close frame with the reason's code (1009 for a message over the limit), then the
        # closing handshake, bounded by autobahn's closeHandshakeTimeout; not a dropped socket.
        self.setProtocolOptions(failByDrop=False)

    server.Server.handle_reply = handle_reply
    http_protocol.HTTPFactory.__init__ = factory_init
    ws_protocol.WebSocketFactory.__init__ = ws_factory_init
    server.Server._realtime_rooms_limits = True


def _register(request: Any) -> None:
    if request.channel is None or getattr(request, _FLOW_ATTRIBUTE, None) is not None:
        return
    flow = _TransportFlow()
    request.registerProducer(flow, True)  # Twisted's IConsumer API on the request
    setattr(request, _FLOW_ATTRIBUTE, flow)


def _unregister(request: Any) -> None:
    flow = getattr(request, _FLOW_ATTRIBUTE, None)
    if flow is None:
        return
    setattr(request, _FLOW_ATTRIBUTE, None)
    if request.producer is flow and request.channel is not None:
        request.unregisterProducer()
    flow.writable.set()


class SocketFlow:
    """A WebSocket's guard under daphne (core.servers.SocketGuard): a Twisted push producer
    on the socket's transport. Twisted pauses it when the transport's write buffer passes
    its high-water mark (64 KiB) and resumes it once the buffer has drained. daphne itself
    never asks, so without this a client that stops reading would have every broadcast
    buffered for it, without limit; and sends must not wait for it either, or one stalled
    client would hold up the hub's fan-out to the whole room. So frames are still handed
    to Twisted (``hold`` never queues) and counted while paused; the consumer closes the
    socket once the client is past its limits."""

    closes_gracefully = True  # the close frame is written ahead of nothing: autobahn times the handshake out

    def __init__(self, transport: Any, previous: Any = None) -> None:
        self.transport = transport
        self.previous = previous  # the producer registered before us: told everything too
        self.waiting_since: float | None = None
        self.waiting_bytes = 0

    def hold(self, text: str) -> bool:
        if self.waiting_since is not None:
            self.waiting_bytes += len(text)
        return False

    def abort(self) -> None:
        self.transport.abortConnection()

    def pauseProducing(self) -> None:  # Twisted names; called on every write while full
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
            self.waiting_bytes = 0
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:
        self.waiting_since = None
        if self.previous is not None:
            self.previous.resumeProducing()

    def stopProducing(self) -> None:
        self.waiting_since = None
        if self.previous is not None:
            self.previous.stopProducing()

    @classmethod
    def attach(cls, send: Any) -> SocketFlow | None:
        """A flow on daphne's WebSocket transport (daphne's ``send`` is
        ``partial(server.handle_reply, protocol)``); None for any other ``send``."""
        protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
        transport = getattr(protocol, "transport", None)
        if transport is None or not hasattr(transport, "registerProducer"):
            return None
        from twisted.internet.interfaces import IPushProducer
        from zope.interface import classImplements

        if not IPushProducer.implementedBy(cls):
            classImplements(cls, IPushProducer)
        # Twisted's HTTP channel, which read the handshake, is registered already; a
        # transport takes one producer, so ours stands in front of it.
        previous = transport.producer if getattr(transport, "streamingProducer", False) else None
        if transport.producer is not None:
            if previous is None:
                return None
            transport.unregisterProducer()
        flow = cls(transport, previous)
        transport.registerProducer(flow, True)
        return flow
