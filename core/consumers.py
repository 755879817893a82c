"""What our WebSocket consumers share: Channels' consumer, with layer messages of an
unknown type ignored rather than fatal (docs/protocol.md, "Channels integration")."""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

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
# 4029 is 429; RFC 6455's 1013 is refused by daphne's autobahn): reconnect with back-off.
CLOSE_UNAVAILABLE = 4503
# The user's credentials changed (a token revoked, a log-out, a new password, the account
# deactivated): reconnect, and the handshake decides again (4001 if nothing valid is left).
CLOSE_REAUTHENTICATE = 4011

# The server's heartbeat and its answer, as they go on the wire (compact JSON).
PING_TEXT = '{"type":"ping"}'
PONG_TEXT = '{"type":"pong"}'


class LayerConsumer(AsyncWebsocketConsumer):
    """An ordinary Channels consumer (``__call__``, the channel, ``groups`` and handlers by
    message type are Channels' own), with one difference in ``dispatch``."""

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
