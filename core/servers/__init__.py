"""The web servers we run under, behind one interface chosen once at start-up.

daphne (the default, and what ``runserver`` runs), asyncio servers such as uvicorn, and
granian (a Rust server, measured for bench/ but not a WEB_SERVER: core.servers.granian_server)
treat a client that stops reading differently: daphne hands every write to Twisted and
returns at once, buffering without limit; uvicorn's ``send`` waits while the transport
is full, which would let one stalled socket hold up a room's whole fan-out (granian's
too, with no transport to ask beforehand). All must bound what such a client costs
(docs/protocol.md, "Slow and stalled clients"), so each server gets a guard here, for
HTTP responses and for WebSocket sends:

- ``guard_http(application)``: the HTTP application to serve (daphne: its server
  patched for flow control, the idle time-out and RFC 6455 close codes; asyncio
  servers and granian: a send time-out around the application).
- ``guard_socket(send)``: a ``SocketGuard`` for one WebSocket, or None if the server
  needs none (Channels' test communicator).
- ``proxy_headers(application, server)``: the client's address from a trusted proxy,
  where the server does not read X-Forwarded-For itself (granian).
- ``lifespan(server)``: the ASGI lifespan application, where the server has one (the drain
  on SIGTERM, core.drain).

``SERVER`` says which server this process runs under; config.asgi asks once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, Protocol

from core import gc_tuning

Server = Literal["daphne", "asyncio", "granian"]


def detect() -> Server:
    """daphne's command line (and runserver) import its server before the application,
    and before Django's set-up (which imports daphne.server too, for its app's system
    checks): so this must be asked before Django is set up. A granian worker has loaded
    granian's Rust extension before it imports the application."""
    if "daphne.server" in sys.modules:
        return "daphne"
    return "granian" if "granian._granian" in sys.modules else "asyncio"


class SocketGuard(Protocol):
    """Per WebSocket: whether the client is taking what is sent, and what has piled up."""

    # Since when the client has taken nothing (None while it reads), and how much has
    # been sent or queued for it since.
    waiting_since: float | None
    waiting_bytes: int
    # Whether a close frame can still reach the client (daphne: Twisted writes it ahead of
    # nothing; asyncio: it would queue behind everything the client is not reading).
    closes_gracefully: bool

    def hold(self, text: str) -> bool:
        """Called before each send: True if the guard has taken ``text`` (queued it, or
        written it itself; the caller must not send it), False if the caller sends it now."""
        ...

    def abort(self, code: int) -> None:
        """Drop the connection and whatever waits for it; ``code`` is the close code for a
        server that cannot drop it (granian: a close frame behind what it already holds)."""
        ...


def _no_guard(send: Any) -> SocketGuard | None:
    return None


# Chosen by guard_http at start-up; until then (an application not served through
# config.asgi, such as Channels' WebsocketCommunicator) sockets need no guard.
_socket_guard: Callable[[Any], SocketGuard | None] = _no_guard


def guard_http(application: Any, server: Server) -> Any:
    """Runs once, at start-up: the HTTP application to serve, and the socket guard of
    every WebSocket from now on."""
    global _socket_guard
    if server == "daphne":
        from core.servers import daphne

        daphne.install()
        _socket_guard = daphne.SocketFlow.attach
        return application
    from core.servers import asyncio_server

    if server == "granian":
        from core.servers import granian_server

        _socket_guard = granian_server.InFlight.attach
        return asyncio_server.SendTimeoutMiddleware(application)
    _socket_guard = asyncio_server.Outbox.attach
    return asyncio_server.SendTimeoutMiddleware(application)


def proxy_headers(application: Any, server: Server) -> Any:
    """The application with the client's address from a trusted proxy's X-Forwarded-For,
    where the server does not do it itself: granian (FORWARDED_ALLOW_IPS names the
    proxies). daphne and uvicorn read the headers themselves (``--proxy-headers``)."""
    if server != "granian":
        return application
    from core.servers import granian_server

    return granian_server.proxy_headers(application)


def lifespan(server: Server) -> Any | None:
    """The ASGI lifespan application for this server, or None. daphne has no lifespan (its
    drain is patched into its shutdown, core.servers.daphne); an asyncio server gets one
    whose start-up makes SIGTERM drain the worker first (core.servers.asyncio_server,
    core.servers.granian_server)."""
    if server == "daphne":
        return None
    if server == "granian":
        from core.servers import granian_server

        return _draining_lifespan(granian_server.drain_on_sigterm)
    from core.servers import asyncio_server

    return _draining_lifespan(asyncio_server.drain_on_sigterm)


def _draining_lifespan(install: Callable[[], None]) -> Any:
    """An ASGI lifespan that runs ``install`` (which makes SIGTERM drain the worker first)
    at start-up, after the server installed its own signal handlers."""

    async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                install()
                gc_tuning.tune_for_serving()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return lifespan


def guard_socket(send: Any) -> SocketGuard | None:
    """The guard of a socket whose ASGI ``send`` is ``send`` (called on accept), or None
    where the server's own ``send`` is not the one we know (a test communicator)."""
    return _socket_guard(send)
