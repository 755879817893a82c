"""Wake-ups for open notification streams of this worker.

One channel-layer subscription (core.layer's fast path) per user with an open stream
on this worker; a published
notification id wakes that user's streams, which then read the table (the row is the
truth: a wake-up lost in a Redis blip only delays delivery until the next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from core.aio import PerLoop
from core.layer import get_layer


class Wakeups:
    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.layer = get_layer()
        self.layer.on_reconnect(self._on_reconnect)

    async def _on_message(self, topic: str, data: str) -> None:
        for event in self.waiters.get(topic, ()):
            event.set()

    async def _on_reconnect(self) -> None:
        for events in self.waiters.values():
            for event in events:
                event.set()  # anything may have been missed: look at the table

    @contextlib.asynccontextmanager
    async def watch(self, topic: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        waiters = self.waiters.setdefault(topic, set())
        if not waiters:
            await self.layer.listen(topic, self._on_message)
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self.waiters.pop(topic, None)
                await self.layer.unlisten(topic)


# The wake-ups of the running event loop (one per worker process).
get_wakeups: PerLoop[Wakeups] = PerLoop(Wakeups)


def user_topic(user_id: int) -> str:
    """The channel-layer group that wakes a user's notification streams."""
    return f"notify.{user_id}"
