"""What our WebSocket consumers share: Channels' consumer, with layer messages of an
unknown type ignored rather than fatal (docs/protocol.md, "Channels integration")."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from core import drain, metrics

logger = logging.getLogger(__name__)

# ---- close codes of every socket (docs/protocol.md, "Authentication and the handshake") ----
CLOSE_IDLE = 4000  # no frame from the client for three heartbeats
CLOSE_UNAUTHENTICATED = 4001
CLOSE_BANNED = 4003  # banned, or removed from a private room
CLOSE_NO_ROOM = 4004
CLOSE_TOO_MANY_CONNECTIONS = 4029
# The client stopped reading: its send buffer stayed full too long (WS_SEND_TIMEOUT_SECONDS
# or WS_SEND_BUFFER_BYTES); it reconnects with last_id and misses nothing.
CLOSE_TOO_SLOW = 4008
# The database is unreachable, so the handshake cannot be served now (HTTP's 503, like
# 4029 is 429; kept from before 1013 could go through daphne): reconnect with back-off.
CLOSE_UNAVAILABLE = 4503
# The user's credentials changed (a token revoked, a log-out, a new password, the account
# deactivated): reconnect, and the handshake decides again (4001 if nothing valid is left).
CLOSE_REAUTHENTICATE = 4011

# The worker is draining for a restart (core.drain): reconnect now, to another worker,
# with last_id or last_seq: nothing is lost. RFC 6455's "service restart".
CLOSE_SERVICE_RESTART = 1012
# Too many handshakes at once on this worker (WS_ADMIT_PER_SECOND): reconnect with back-off.
# RFC 6455's "try again later".
CLOSE_TRY_AGAIN_LATER = 1013

# The server's heartbeat and its answer, as they go on the wire (compact JSON).
PING_TEXT = '{"type":"ping"}'
PONG_TEXT = '{"type":"pong"}'


class LayerConsumer(AsyncWebsocketConsumer):
    """An ordinary Channels consumer (``__call__``, the channel, ``groups`` and handlers by
    message type are Channels' own), with one difference in ``dispatch``, and a drain: when
    the worker drains (core.drain), every open socket is closed with 1012 at its own
    random moment within DRAIN_SECONDS, and the client reconnects to another worker."""

    async def accept(self, subprotocol: str | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await super().accept(subprotocol, headers)
        _open_sockets.sockets.add(self)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        _open_sockets.sockets.discard(self)
        await super().websocket_disconnect(message)

    async def close_with(self, code: int) -> None:
        """Close with ``code`` (counted by code in the metrics)."""
        metrics.WS_CLOSES.labels(code=str(code)).inc()
        await self.close(code=code)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Runs for every event: the client's (``websocket.*``) and the channel layer's.

        A layer message nobody here handles is logged and ignored: anyone's group_send
        reaches these sockets, and a typo in someone's message type must not close them.
        Unlike Channels' version, it does not close stale database connections before each
        event (a thread hop per frame): our database work runs through
        database_sync_to_async or the database thread, which do that themselves."""
        try:
            handler = getattr(self, get_handler_name(message), None)
        except ValueError:
            handler = None
        if handler is None:
            logger.warning("no handler for a message of type %r on %s; ignored", message.get("type"), type(self).__name__)
            return
        await handler(message)


class _OpenSockets:
    """This worker's open sockets, drained with it (core.drain)."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[LayerConsumer] = weakref.WeakSet()

    async def drain(self, seconds: float) -> None:
        async def close_later(socket: LayerConsumer) -> None:
            await asyncio.sleep(drain.spread(seconds))
            await socket.close_with(CLOSE_SERVICE_RESTART)

        await asyncio.gather(*(close_later(socket) for socket in list(self.sockets)), return_exceptions=True)


_open_sockets = _OpenSockets()
drain.on_drain(_open_sockets)
