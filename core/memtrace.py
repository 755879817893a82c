"""Heap snapshots of a running worker, for measuring what a connection costs
(docs/performance.md, "Idle connections"; bench/idle_memory.py).

Off unless asked for: with ``TRACEMALLOC_SNAPSHOT_DIR`` set, SIGUSR2 makes the worker start
tracing allocations if it was not (``TRACEMALLOC_FRAMES`` frames each, 20 by default; or
start the worker with ``PYTHONTRACEMALLOC=<frames>`` to trace from the first import, which
makes start-up several times slower), collect garbage and write
``tracemalloc.take_snapshot()`` to ``<dir>/<pid>-<n>.snapshot`` (under another name first,
then renamed, so a reader never sees half a file). Without the variable no handler is
installed and nothing is traced.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

ENV = "TRACEMALLOC_SNAPSHOT_DIR"
_counter = itertools.count(1)


def snapshot_to(directory: Path) -> Path:
    """Start tracing if it is off, collect garbage, then write a snapshot of the traced heap
    into ``directory``. Blocks allocated before tracing started are not in it."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get("TRACEMALLOC_FRAMES", "20")))
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    path = directory / f"{os.getpid()}-{next(_counter)}.snapshot"
    partial = path.with_suffix(".partial")
    snapshot.dump(str(partial))
    partial.rename(path)
    return path


def install_from_env() -> bool:
    """Install the SIGUSR2 handler if ``TRACEMALLOC_SNAPSHOT_DIR`` is set; True if it was.
    Call from the main thread (signal handlers)."""
    directory = os.environ.get(ENV)
    if not directory:
        return False
    target = Path(directory)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        snapshot_to(target)

    signal.signal(signal.SIGUSR2, on_signal)
    return True
