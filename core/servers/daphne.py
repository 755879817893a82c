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
import signal
import struct
import time
from typing import Any

from django.conf import settings

from core import drain, gc_tuning
from core.aio import Inbox
from core.consumers import CLOSE_SERVICE_RESTART, CLOSE_TRY_AGAIN_LATER

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
    original_listen_success = server.Server.listen_success
    original_kill_all = server.Server.kill_all_applications
    original_server_close = ws_protocol.WebSocketProtocol.serverClose
    original_request_init = http_protocol.WebRequest.__init__

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

    def request_init(self: Any, *args: Any, **kwargs: Any) -> None:
        # daphne hands the application the body as it came and never reads the form fields
        # Twisted parses out of a POST (request.args): that parse read the Content-Type
        # through the email package on every POST, 3 % of a worker under 50 stream starts at
        # once (py-spy; docs/performance.md, "Twelfth step"), and parsed a form or multipart
        # body that Django parses again. Twisted's own switch turns it off.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original_request_init(self, *args, **kwargs)

    def factory_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_factory_init(self, *args, **kwargs)
        self.timeOut = idle_timeout  # copied to each connection by Twisted's buildProtocol

    def ws_factory_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_ws_factory_init(self, *args, **kwargs)
        # A close frame with the reason's code (1009 for a message over the limit), then the
        # closing handshake, bounded by autobahn's closeHandshakeTimeout; not a dropped socket.
        self.setProtocolOptions(failByDrop=False)

    def listen_success(self: Any, port: Any) -> None:
        self._realtime_rooms_ports = [*getattr(self, "_realtime_rooms_ports", []), port]
        original_listen_success(self, port)
        gc_tuning.tune_for_serving()

    def kill_all_applications(self: Any) -> Any:
        """Runs before the reactor stops (Twisted waits for the Deferred). On SIGTERM: stop
        accepting, drain (core.drain), then daphne's own: cancel what is left. On SIGINT
        (Ctrl-C in runserver) at once, as before."""
        from twisted.internet import defer, reactor

        if getattr(reactor, "_exitSignal", None) != signal.SIGTERM:
            return original_kill_all(self)

        async def drain_then_kill() -> None:
            for port in getattr(self, "_realtime_rooms_ports", []):
                port.stopListening()  # the kernel gives new connections to the other workers
            await drain.drain(float(settings.DRAIN_SECONDS))
            await original_kill_all(self).asFuture(asyncio.get_running_loop())

        return defer.Deferred.fromFuture(asyncio.ensure_future(drain_then_kill()))

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Inbox[dict[str, Any]] | None:
        """daphne's, with a lighter queue of the client's events: an idle socket waits on it
        all its life, and asyncio.Queue costs about 3 KiB empty and a task per receive
        under Channels (core.aio.Inbox; docs/performance.md, "Idle connections")."""
        assert "application_instance" not in self.connections[protocol]
        inbox: Inbox[dict[str, Any]] = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=inbox.get, send=functools.partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            application_instance.close()  # never started: no "was never awaited" warning
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance)
        return inbox

    def server_close(self: Any, code: int | None = None) -> None:
        # 1012 (service restart) and 1013 (try again later) are registered close codes for
        # servers (RFC 6455, 7.4; IANA), but autobahn's sendClose takes only 1000 and
        # 3000-4999; its sendCloseFrame, which sendClose calls after that check, takes them.
        if code in (CLOSE_SERVICE_RESTART, CLOSE_TRY_AGAIN_LATER):
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original_server_close(self, code)

    server.Server.handle_reply = handle_reply
    server.Server.create_application = create_application
    server.Server.listen_success = listen_success
    server.Server.kill_all_applications = kill_all_applications
    http_protocol.HTTPFactory.__init__ = factory_init
    http_protocol.WebRequest.__init__ = request_init
    ws_protocol.WebSocketFactory.__init__ = ws_factory_init
    ws_protocol.WebSocketProtocol.serverClose = server_close
    _colour_debug_arguments_lazily()
    server.Server._realtime_rooms_limits = True


class _Lazy:
    """A log argument formatted only if the log line is: ``format(lazy)`` calls ``function(value)``."""

    __slots__ = ("function", "value")

    def __init__(self, function: Any, value: Any) -> None:
        self.function, self.value = function, value

    def __format__(self, spec: str) -> str:
        return format(self.function(self.value), spec)

    def __str__(self) -> str:
        return str(self.function(self.value))


def _colour_debug_arguments_lazily() -> None:
    """autobahn logs every frame it sends at debug level, and builds the line's coloured
    arguments (``hltype``, ``hlval``: click.style calls) before the logger drops it: 14 % of
    a worker's CPU in a reactions fan-out, profiled with py-spy (docs/performance.md, "Room
    changes"). The arguments become lazy: coloured when a debug line is written, else never."""
    from autobahn.websocket import protocol

    for name in ("hltype", "hlval"):
        original = getattr(protocol, name)
        setattr(protocol, name, functools.partial(_Lazy, original))


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
    socket once the client is past its limits.

    It also writes the frames itself (``hold`` returns True), the way daphne and autobahn
    would but with less work per frame, which is most of a worker's CPU in a room's
    fan-out (docs/performance.md, "Room changes", profiled with py-spy): the frame's bytes
    are built once for all the sockets a text goes to (``_frame``), instead of a chain of
    six calls through daphne and autobahn for each; and a frame is sent on the socket at
    once when nothing waits in Twisted's buffer, instead of registering the socket for
    writing with the event loop, waiting for the next turn of the loop, sending and
    unregistering it (two epoll_ctl calls a frame). Whatever is not taken at once goes to
    Twisted's buffer, as before, behind which everything after it waits: order is kept, and
    the high-water mark (above) still sees a client that stops reading."""

    __slots__ = ("previous", "protocol", "transport", "waiting_bytes", "waiting_since")

    closes_gracefully = True  # the close frame is written ahead of nothing: autobahn times the handshake out

    def __init__(self, transport: Any, previous: Any = None, protocol: Any = None) -> None:
        self.transport = transport
        self.previous = previous  # the producer registered before us: told everything too
        self.protocol = protocol  # autobahn's WebSocketServerProtocol (daphne's subclass)
        self.waiting_since: float | None = None
        self.waiting_bytes = 0

    def hold(self, text: str) -> bool:
        if self.waiting_since is not None:
            self.waiting_bytes += len(text)
        protocol = self.protocol
        # Only an open socket with nothing queued by autobahn itself (its send_queue is
        # for chopped and synchronous sends); anything else goes daphne's way.
        if protocol is None or protocol.state != protocol.STATE_OPEN or protocol.send_queue:
            return False
        _write(self.transport, _frame(text))
        return True

    def abort(self, code: int) -> None:
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
        flow = cls(transport, previous, protocol)
        transport.registerProducer(flow, True)
        return flow


# The last frame built, for the text it was built from: the hub sends one text object to
# every socket of a room in turn, so all but the first find their frame here. Compared by
# identity (the entry keeps the text alive, so its id cannot be reused).
_last_frame: tuple[str, bytes] | None = None


def _frame(text: str) -> bytes:
    """The WebSocket frame of a text message from a server (RFC 6455, 5.2): final, opcode 1,
    unmasked, no extension (daphne negotiates none)."""
    global _last_frame
    if _last_frame is not None and _last_frame[0] is text:
        return _last_frame[1]
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    frame = header + payload
    _last_frame = (text, frame)
    return frame


def _write(transport: Any, frame: bytes) -> None:
    """Send ``frame`` on a Twisted TCP transport now if nothing waits in its buffer, the
    rest (or all of it) through Twisted's buffer."""
    if (
        getattr(transport, "TLS", True)  # through TLS (or not a TCP transport): Twisted's way
        or not transport.connected
        or transport.disconnecting
        or transport._tempDataBuffer
        or len(transport.dataBuffer) > transport.offset
    ):
        transport.write(frame)
        return
    try:
        sent = transport.socket.send(frame)
    except BlockingIOError:
        sent = 0
    except OSError:  # the connection is going away: Twisted's write finds out and cleans up
        sent = 0
    if sent < len(frame):
        transport.write(frame[sent:])
