"""The stream log's semantics, the same in process and on a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings

from streaming import log as log_module
from streaming.log import LocalLog, LogEvent, RedisLog

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["local", "redis"])
def log(request):
    if request.param == "local":
        yield LocalLog()
        return
    redis_server = request.getfixturevalue("redis_server")
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield RedisLog()


async def test_events_read_from_any_position_and_wait_for_more(log):
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={"conversation": "c"})
    await log.append(name, [LogEvent(0, "start", {"a": 1}), LogEvent(1, "token", {"index": 0, "token": "hi "})])
    assert [e.seq for e in await log.read(name, after=-1, wait=0)] == [0, 1]
    assert [e.data for e in await log.read(name, after=0, wait=0)] == [{"index": 0, "token": "hi "}]
    assert await log.read(name, after=1, wait=0.1) == []

    async def later():
        await asyncio.sleep(0.1)
        await log.append(name, [LogEvent(2, "done", {"finish_reason": "stop"})], final=True)

    writer = asyncio.create_task(later())
    events = await log.read(name, after=1, wait=3)
    await writer
    assert [(e.seq, e.kind) for e in events] == [(2, "done")]
    meta = await log.meta(name)
    assert meta is not None and meta.owner_id == 7 and meta.status == "done" and meta.extra["conversation"] == "c"


async def test_cancel_and_reader_marks_reach_the_producer_heartbeat(log):
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=1, producer="w1", extra={})
    control = await log.heartbeat(name)
    assert not control.cancel
    before = time.time()
    await log.touch_reader(name)
    await log.cancel(name)
    control = await log.heartbeat(name)
    assert control.cancel and control.reader_seen >= before - 0.01


async def test_producer_lost_is_recorded_once(log, monkeypatch):
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=1, producer="w1", extra={})
    await log.append(name, [LogEvent(0, "start", {})])
    meta = await log.meta(name)
    assert not meta.producer_lost
    monkeypatch.setattr(log_module, "PRODUCER_LOST_SECONDS", -1.0)
    assert (await log.meta(name)).producer_lost
    assert await log.fail_if_running(name, kind="error", data={"code": "producer_lost"})
    assert not await log.fail_if_running(name, kind="error", data={"code": "producer_lost"})
    events = await log.read(name, after=0, wait=0)
    assert [(e.seq, e.kind, e.data["code"]) for e in events] == [(1, "error", "producer_lost")]


async def test_unknown_streams_have_no_meta_and_no_events(log):
    assert await log.meta("nope") is None
    assert await log.read("nope", after=-1, wait=0) == []
