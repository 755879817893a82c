"""The garbage collector of a worker that serves (docs/performance.md, "Garbage collection").

Measured on a daphne worker streaming 50 streams of 500 tokens at once (10 rounds, 2-core
machine): CPython's defaults spent 0.79 s of the worker's CPU in the collector, 13 % of it, and
each full collection walked about 177,000 objects for 100 ms, a pause that every stream open on the
worker waited through (time to first token, resume, fan-out p99). Most of those objects are
Django, the apps and the URLconf, alive from start-up for as long as the worker: frozen, the
collector never walks them again. And a token stream allocates a few objects per token, so the
youngest generation filled every 700 allocations, hundreds of times a round: it is collected
every 20,000 now. Reference counting frees what it always freed; only cycles wait a little
longer, which the youngest generation still bounds.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) of container objects between two collections of the
# youngest generation, and collections of each generation between two of the next.
THRESHOLDS = (20_000, 20, 10)

_tuned = False


def tune_for_serving() -> None:
    """Runs when the worker starts serving (core.servers: daphne's listening port is open,
    or the ASGI lifespan's start-up), once: after every module a request needs is imported."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  # imports every view now, so that they are frozen too
    gc.collect()  # what start-up left as garbage, not to be frozen with the rest
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
