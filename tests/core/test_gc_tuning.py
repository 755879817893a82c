"""A serving worker's garbage collector (core/gc_tuning.py): start-up objects frozen, the
youngest generation collected less often, from whichever server starts serving."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

from core import gc_tuning, servers


@pytest.fixture
def untuned(monkeypatch):
    """The process's collector as it was, before and after the test."""
    thresholds = gc.get_threshold()
    monkeypatch.setattr(gc_tuning, "_tuned", False)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_the_youngest_generation_waits_longer(untuned):
    started = SimpleNamespace()  # alive since start-up
    gc_tuning.tune_for_serving()
    assert gc.get_freeze_count() > 10_000, "Django, the apps and the URLconf are out of the collector's way"
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert all(tracked is not started for tracked in gc.get_objects()), "frozen: no collection walks it"
    frozen = gc.get_freeze_count()
    gc_tuning.tune_for_serving()
    assert gc.get_freeze_count() == frozen, "once"


def test_uvicorn_and_granian_tune_it_at_the_lifespans_start_up(untuned):
    lifespan = servers._draining_lifespan(lambda: None)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return next(messages)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    asyncio.run(lifespan({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gc.get_threshold() == gc_tuning.THRESHOLDS and gc.get_freeze_count() > 0


def test_daphne_tunes_it_once_its_port_is_listening(untuned):
    from daphne import server

    from core.servers import daphne

    daphne.install()
    server.Server.listen_success(SimpleNamespace(listening_addresses=[]), object())
    assert gc.get_threshold() == gc_tuning.THRESHOLDS and gc.get_freeze_count() > 0
