"""What our WebSocket consumers share: Channels' consumer, with layer messages of an
unknown type ignored rather than fatal (docs/protocol.md, "Channels integration")."""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

logger = logging.getLogger(__name__)


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
