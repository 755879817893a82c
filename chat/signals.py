"""Chat's signals: how apps above chat learn what happens in rooms without chat importing them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by the room socket, after a message that mentions @assistant committed
# (docs/protocol.md, "The assistant in a room"), with ``frame`` (the message's frame),
# ``room_id``, ``user_id`` and ``credential`` (what authenticated the socket). Receivers
# are awaited before the socket reads its next frame; a receiver's DomainError is
# answered to the sender alone as an ``error`` frame with the message's nonce.
assistant_asked = Signal()
