"""core.drain: the drain of a worker's sockets and work, and the admission of handshakes."""

import asyncio

import pytest
from django.test import override_settings

from core import drain


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_at_once_then_handshakes_wait_their_turn_in_line():
    clock = Clock()
    admission = drain.Admission(10, clock=clock)
    assert [admission.reserve(max_wait=3) for _ in range(10)] == [0.0] * 10, "a burst as large as the rate"
    waits = [admission.reserve(max_wait=3) for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5]), "one every 1/rate seconds, in line"
    clock.now += 0.5  # the five waited; the bucket is empty again
    assert admission.reserve(max_wait=3) == pytest.approx(0.1)


def test_a_handshake_that_would_wait_too_long_is_refused_and_takes_nothing():
    clock = Clock()
    admission = drain.Admission(2, clock=clock)
    assert [admission.reserve(max_wait=1) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert admission.reserve(max_wait=1) is None
    clock.now += 0.5
    assert admission.reserve(max_wait=1) == pytest.approx(1.0), "the refused one took no token"


def test_no_limit_when_the_rate_is_zero():
    admission = drain.Admission(0)
    assert all(admission.reserve(max_wait=0) == 0.0 for _ in range(1000))


@override_settings(WS_ADMIT_WAIT_SECONDS=0.2)
def test_admit_sleeps_for_its_turn_and_says_whether_it_came():
    clock = Clock()
    admission = drain.Admission(10, clock=clock)
    admission.tokens = 0.0

    async def admit_three_times() -> list[bool]:
        return [await admission.admit(), await admission.admit(), await admission.admit()]

    assert asyncio.run(admit_three_times()) == [True, True, False]


def test_drain_runs_every_drainable_together_within_its_time(monkeypatch):
    monkeypatch.setattr(drain, "_drainables", type(drain._drainables)())
    monkeypatch.setattr(drain, "_draining", False)
    done: list[str] = []

    class Quick:
        async def drain(self, seconds: float) -> None:
            done.append(f"quick {seconds}")

    class Stuck:
        async def drain(self, seconds: float) -> None:
            await asyncio.sleep(3600)

    quick, stuck = Quick(), Stuck()
    drain.on_drain(quick)
    drain.on_drain(stuck)
    assert not drain.draining()
    asyncio.run(asyncio.wait_for(drain.drain(0.1), 5))
    assert done == ["quick 0.1"] and drain.draining(), "the stuck one was given up on after seconds + 1"


def test_the_spread_stays_within_the_drain():
    delays = [drain.spread(2.0) for _ in range(500)]
    assert 0.0 <= min(delays) < 0.3 and 1.7 < max(delays) <= 2.0
    assert drain.spread(0.0) == 0.0
