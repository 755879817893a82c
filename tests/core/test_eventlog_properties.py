"""Properties of the stream log's entries (core/eventlog.py), on the in-process Redis and
on a real one: any batch of events appended reads back the same, from any position."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.eventlog import LogEvent, RedisLog

# What reaches the log: JSON objects whose strings every encoder takes (the parsers refuse
# lone surrogates and NUL before anything is stored or generated).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=10,
)
KINDS = st.sampled_from(["start", "token", "done", "error", "progress", "complete", "failed"])
BATCHES = st.lists(
    st.lists(st.tuples(KINDS, st.dictionaries(TEXT, JSON_VALUES, max_size=3)), min_size=1, max_size=4), min_size=1, max_size=4
)
_names = itertools.count()


@pytest.fixture(params=["in-process", "redis"])
def make_log(request: pytest.FixtureRequest) -> Any:
    if request.param == "in-process":
        yield RedisLog
        return
    redis_server = request.getfixturevalue("redis_server")

    def redis_log() -> RedisLog:
        return RedisLog()

    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield redis_log


@given(batches=BATCHES, after=st.integers(min_value=-1, max_value=20))
# The fixture is a factory: every example makes a log of its own, so sharing it is safe.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_appended_events_read_back_the_same_from_any_position(
    make_log: Any, batches: list[list[tuple[str, dict]]], after: int
) -> None:
    async def scenario() -> None:
        log, name = make_log(), f"prop-{next(_names)}"
        await log.create(name, owner_id=1, producer="p", extra={})
        written: list[LogEvent] = []
        for batch in batches:
            events = [LogEvent(len(written) + i, kind, data) for i, (kind, data) in enumerate(batch)]
            await log.append(name, events)
            written.extend(events)
        assert await log.read(name, after=after, wait=0) == [e for e in written if e.seq > after]
        assert await log.last_seq(name) == written[-1].seq

    asyncio.run(scenario())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.tuples(KINDS, st.dictionaries(TEXT, JSON_VALUES, max_size=3)), min_size=1, max_size=5))
def test_append_next_numbers_from_one_and_keeps_the_data(make_log: Any, items: list[tuple[str, dict]]) -> None:
    async def scenario() -> None:
        log, name = make_log(), f"prop-next-{next(_names)}"
        seqs = [await log.append_next(name, kind=kind, data=data) for kind, data in items]
        assert seqs == list(range(1, len(items) + 1))
        assert [(e.kind, dict(e.data)) for e in await log.read(name, after=0, wait=0)] == items

    asyncio.run(scenario())
