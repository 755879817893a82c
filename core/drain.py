"""A worker's graceful drain on SIGTERM, and the admission of handshakes on the workers
that take its clients over (docs/architecture.md, "Draining a worker").

A rolling restart stops workers one at a time. Killing one drops its sockets at once, and
every client of it reconnects in the same second to the survivors, each reconnect a
database round trip and a backlog: a stampede. Draining instead spreads the goodbyes:
the worker stops accepting (the kernel hands new connections to the others), then closes
each socket with 1012 ("service restart") after its own random delay within
``DRAIN_SECONDS``, lets running work end, and exits. The survivors admit handshakes at a
bounded rate (``WS_ADMIT_PER_SECOND``): a burst beyond it waits its turn, briefly,
instead of all hitting the database together.

The apps register what draining means for them (``on_drain``); the server module
(core.servers) calls ``drain`` when the process is asked to stop. Imports no app.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class Drainable(Protocol):
    async def drain(self, seconds: float) -> None:
        """Runs when the worker drains: let go of what it holds within ``seconds`` (it may
        return earlier)."""
        ...


# Weak: an object that goes away (a test's event loop and its hub) leaves by itself.
_drainables: weakref.WeakSet[Drainable] = weakref.WeakSet()
_draining = False


def on_drain(drainable: Drainable) -> None:
    """Drain ``drainable`` with the worker. Called once per object that holds connections
    or work (a worker's hub, its generations)."""
    _drainables.add(drainable)


def draining() -> bool:
    """Whether this worker is draining: it takes no new connections or work."""
    return _draining


async def drain(seconds: float) -> None:
    """Run every hook together, for at most ``seconds`` plus a second for the last closes."""
    global _draining
    _draining = True
    logger.warning("draining: closing connections over %.1f s", seconds)
    try:
        async with asyncio.timeout(seconds + 1.0):
            await asyncio.gather(*(each.drain(seconds) for each in list(_drainables)), return_exceptions=True)
    except TimeoutError:
        logger.warning("drain: not everything let go within %.1f s", seconds)


def spread(seconds: float) -> float:
    """One connection's delay before it is told to reconnect: uniform over the drain, so
    that the clients of a worker reconnect at a steady rate, not at once."""
    return random.uniform(0.0, max(0.0, seconds))


class Admission:
    """A token bucket of handshakes per second for this worker: ``WS_ADMIT_PER_SECOND``,
    with a burst of as many. ``admit`` waits for a token up to ``WS_ADMIT_WAIT_SECONDS``
    and says whether one came: a handshake past that is refused (1013, try again later),
    which a client treats like any other reconnect, with back-off."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate  # below 0 while handshakes wait: they own the tokens to come
        self.updated = clock()

    def reserve(self, *, max_wait: float) -> float | None:
        """Take a token: the seconds to wait until it is ours (0.0: now), or None if that
        would be longer than ``max_wait`` (nothing is taken then)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        wait = (1.0 - self.tokens) / self.rate
        if wait > max_wait:
            return None
        self.tokens -= 1.0
        return max(0.0, wait)

    async def admit(self) -> bool:
        wait = self.reserve(max_wait=float(settings.WS_ADMIT_WAIT_SECONDS))
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True


_admission: Admission | None = None


def admission() -> Admission:
    """This worker's handshake admission (one per process)."""
    global _admission
    if _admission is None:
        _admission = Admission(float(settings.WS_ADMIT_PER_SECOND))
    return _admission
