"""The event log's semantics (core/eventlog.py), the same on the in-process Redis and on a real one."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings

from core import eventlog as log_module
from core.eventlog import LogEvent, RedisLog

pytestmark = pytest.mark.asyncio


@pytest.fixture
def log(either_redis):
    return RedisLog()


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


async def test_an_append_sent_again_after_it_went_through_is_not_an_error(log):
    # What redis-py does when the connection drops between a pipeline and its replies.
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={})
    events = [LogEvent(0, "start", {}), LogEvent(1, "token", {"index": 0, "token": "hi "})]
    await log.append(name, events)
    await log.append(name, events, final=True)
    assert [e.seq for e in await log.read(name, after=-1, wait=0)] == [0, 1], "stored once"
    assert (await log.meta(name)).status == "done", "the commands after the XADD ran"
    with pytest.raises(Exception, match="equal or smaller"):  # one older than the newest is still an error
        await log.append(name, [LogEvent(0, "start", {})])


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


async def test_a_log_is_kept_ten_minutes_after_its_last_write_with_one_command_per_batch(log):
    from core.redis_clients import async_redis

    name = f"t-{time.time_ns()}"
    redis = async_redis(name)
    stream_key, meta_key = log_module._log_key(name), log_module._meta_key(name)
    # Created with its first event: both keys have their time to live at once.
    await log.create(name, owner_id=1, producer="w1", extra={}, first=[LogEvent(0, "start", {})])
    assert 0 < await redis.ttl(stream_key) <= log_module.LOG_TTL_SECONDS
    await redis.expire(stream_key, 100)  # as if ten minutes had nearly passed
    await redis.expire(meta_key, 100)
    await log.append(name, [LogEvent(1, "token", {"index": 0, "token": "a"})])
    assert await redis.ttl(stream_key) <= 100, "a batch renews nothing"
    await log.heartbeat(name)
    assert await redis.ttl(stream_key) > log_module.LOG_TTL_SECONDS - 5, "the heartbeat renews the stream"
    assert await redis.ttl(meta_key) > log_module.LOG_TTL_SECONDS - 5, "and its meta data"
    await redis.expire(stream_key, 100)
    await redis.expire(meta_key, 100)
    await log.append(name, [LogEvent(2, "done", {})], final=True)
    assert await redis.ttl(stream_key) > log_module.LOG_TTL_SECONDS - 5, "the final append renews both"
    assert await redis.ttl(meta_key) > log_module.LOG_TTL_SECONDS - 5


async def test_a_log_created_without_events_gets_its_time_to_live_with_its_first_batch(log):
    from core.redis_clients import async_redis

    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=1, producer="w1", extra={})
    await log.append(name, [LogEvent(0, "start", {})])
    await log.append(name, [LogEvent(1, "token", {"index": 0, "token": "a"})])
    assert 0 < await async_redis(name).ttl(log_module._log_key(name)) <= log_module.LOG_TTL_SECONDS, "never kept forever"


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


async def test_append_next_never_numbers_below_the_writers_floor(log):
    """After Redis lost a task's log (a restart without persistence), numbering goes on
    from what the writer last gave, so readers holding an older Last-Event-ID miss nothing."""
    name = f"task:floor-{time.time_ns()}"
    assert await log.append_next(name, kind="progress", data={"step": 1}, floor=7) == 7
    assert await log.append_next(name, kind="progress", data={"step": 2}) == 8
    assert [e.seq for e in await log.read(name, after=6, wait=0)] == [7, 8]


async def test_event_kinds_must_be_plain_words_and_odd_text_is_stored_escaped(log):
    name = f"task:kinds-{time.time_ns()}"
    with pytest.raises(ValueError, match="letters and underscores"):
        await log.append_next(name, kind='progress","x', data={})
    seq = await log.append_next(name, kind="progress", data={"message": "half \ud800 a pair"})
    assert [e.data for e in await log.read(name, after=seq - 1, wait=0)] == [{"message": "half \ud800 a pair"}]


async def test_a_meta_hash_without_its_owner_is_an_unknown_stream(redis_server):
    """What a heartbeat leaves after Redis lost the stream: not a 500, no stream."""
    import redis as redis_library

    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        name = f"remnant-{time.time_ns()}"
        client = redis_library.Redis.from_url(redis_server.url)
        try:
            client.hset(f"log:{{{name}}}:meta", mapping={"hb": time.time(), "reader": time.time()})
        finally:
            client.close()
        assert await RedisLog().meta(name) is None


async def test_follow_reads_live_until_a_final_event(log, monkeypatch):
    monkeypatch.setattr(log_module, "get_log", lambda: log)
    monkeypatch.setattr(log_module, "READ_WAIT_SECONDS", 0.05)
    name = f"task:follow-{time.time_ns()}"
    await log.append_next(name, kind="progress", data={"n": 1})

    async def later() -> None:
        await asyncio.sleep(0.2)
        await log.append_next(name, kind="complete", data={})

    writer = asyncio.create_task(later())
    batches = [[(e.seq, e.kind) for e in batch] async for batch in log_module.follow(name, after=0, final=("complete",))]
    await writer
    read = [event for batch in batches for event in batch]
    assert read == [(1, "progress"), (2, "complete")]
    assert [] in batches, "an empty batch after each read that found nothing (for keepalives)"


async def test_follow_hands_out_what_the_idle_check_makes_and_stops_on_none(log, monkeypatch):
    monkeypatch.setattr(log_module, "get_log", lambda: log)
    monkeypatch.setattr(log_module, "READ_WAIT_SECONDS", 0.01)
    name = f"task:idle-{time.time_ns()}"

    async def made_from_elsewhere(after: int) -> list[LogEvent]:
        return [LogEvent(after + 1, "failed", {"from": "the row"})]

    batches = [b async for b in log_module.follow(name, after=4, final=("failed",), when_idle=made_from_elsewhere)]
    assert batches == [[LogEvent(5, "failed", {"from": "the row"})]]

    async def over(after: int) -> None:
        return None

    assert [b async for b in log_module.follow(name, after=0, final=("failed",), when_idle=over)] == []


async def test_follow_of_a_produced_log_ends_when_its_meta_data_expired(log, monkeypatch):
    monkeypatch.setattr(log_module, "get_log", lambda: log)
    monkeypatch.setattr(log_module, "READ_WAIT_SECONDS", 0.01)
    lost = log_module.Produced(lost_kind="error", lost_data={"code": "producer_lost"})
    assert [b async for b in log_module.follow(f"gone-{time.time_ns()}", after=-1, final=("done",), produced=lost)] == []


# ---- the producer's worker reads its logs from memory (core.eventlog._Tail) ----------------------------
PRODUCED = log_module.Produced(lost_kind="error", lost_data={"code": "producer_lost"})


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``after`` of each read that went to Redis."""
    reads: list[int] = []
    read = RedisLog.read

    async def counted(self: RedisLog, name: str, *, after: int, wait: float, limit: int = 1000) -> list[LogEvent]:
        reads.append(after)
        return await read(self, name, after=after, wait=wait, limit=limit)

    monkeypatch.setattr(RedisLog, "read", counted)
    return reads


async def produce(log: RedisLog, name: str, tokens: int) -> None:
    await asyncio.sleep(0.01)
    for seq in range(1, tokens + 1, 2):
        await log.append(name, [LogEvent(s, "token", {"index": s - 1}) for s in range(seq, min(seq + 2, tokens + 1))])
        await asyncio.sleep(0)
    await log.append(name, [LogEvent(tokens + 1, "done", {"finish_reason": "stop"})], final=True)


async def test_a_reader_on_the_producers_worker_follows_it_in_memory(log, monkeypatch):
    reads = counting_reads(monkeypatch)
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={}, first=[LogEvent(0, "start", {"stream_id": name})])
    producer = asyncio.create_task(produce(log, name, 9))
    follower = log_module.follow(name, after=-1, final=("done",), produced=PRODUCED)
    got = [event async for batch in follower for event in batch]
    await producer
    assert [e.seq for e in got] == list(range(11)), "every event once, in order"
    assert reads == [], "no read went to Redis"
    # What it was handed is what Redis holds, in the form a reader elsewhere gets.
    assert got == await log.read(name, after=-1, wait=0)


async def test_a_reader_marks_the_log_read_unless_its_creation_here_just_did(log, monkeypatch):
    """The abandonment clock: the creation marks the log read, so the POST's own reader (on
    this worker) does not mark it again in its first second; a reader elsewhere marks it
    after its first events."""
    marks: list[str] = []
    touch = RedisLog.touch_reader

    async def counted(self: RedisLog, name: str) -> None:
        marks.append(name)
        await touch(self, name)

    monkeypatch.setattr(RedisLog, "touch_reader", counted)
    for elsewhere in (False, True):
        name = f"t-{time.time_ns()}"
        await log.create(name, owner_id=7, producer="w1", extra={}, first=[LogEvent(0, "start", {"stream_id": name})])
        if elsewhere:
            log_module._tails().clear()  # the log is read on another worker
        follower = log_module.follow(name, after=-1, final=("done",), produced=PRODUCED)
        async with asyncio.timeout(5):
            assert [e.seq for e in await anext(follower)] == [0]
            producer = asyncio.create_task(produce(log, name, 3))
            rest = [e.seq async for batch in follower for e in batch]
            await producer
        assert rest == [1, 2, 3, 4]
        assert marks == ([name] if elsewhere else []), "marked read after the first events, but for the POST's own reader"
        marks.clear()


async def test_a_reader_behind_what_memory_holds_reads_redis(log, monkeypatch):
    monkeypatch.setattr(log_module, "TAIL_EVENTS", 4)
    reads = counting_reads(monkeypatch)
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={}, first=[LogEvent(0, "start", {})])
    await produce(log, name, 9)
    got = [event async for batch in log_module.follow(name, after=0, final=("done",), produced=PRODUCED) for event in batch]
    assert [e.seq for e in got] == list(range(1, 11))
    assert reads and reads[0] == 0, "the first read went to Redis"


async def test_memory_holds_only_what_redis_acknowledged(log, monkeypatch):
    """An append that fails reaches no reader; the reader asks Redis after a quiet wait and
    finds the end another worker wrote (here: written behind the producer's back)."""
    monkeypatch.setattr(log_module, "READ_WAIT_SECONDS", 0.05)
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={}, first=[LogEvent(0, "start", {})])

    async def refused(self: object, *args: object, **options: object) -> None:
        raise ConnectionError("Redis went away")

    with monkeypatch.context() as patched:
        patched.setattr("redis.asyncio.client.Redis.execute_command", refused)  # a batch is one command
        patched.setattr("redis.asyncio.client.Pipeline.execute", refused)
        with pytest.raises(ConnectionError):
            await log.append(name, [LogEvent(1, "token", {"index": 0})])
    await log.fail_if_running(name, kind="error", data={"code": "producer_lost"})
    got = [event async for batch in log_module.follow(name, after=-1, final=("error",), produced=PRODUCED) for event in batch]
    assert [(e.seq, e.kind) for e in got] == [(0, "start"), (1, "error")], "the failed token was never handed out"


async def test_a_finished_logs_memory_is_dropped_after_a_grace(log, monkeypatch):
    monkeypatch.setattr(log_module, "TAIL_GRACE_SECONDS", 0.05)
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=7, producer="w1", extra={}, first=[LogEvent(0, "start", {})])
    assert name in log_module._tails()
    await produce(log, name, 2)
    await asyncio.sleep(0.2)
    assert name not in log_module._tails()


# ---- Appender: one write in flight, what comes meanwhile in the next -----------------------------
class GatedLog(RedisLog):
    """A RedisLog whose non-final appends wait for ``gate`` (a slow Redis), noting each call's seqs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls: list[tuple[list[int], bool]] = []
        self.fail_next = False

    async def append(self, name: str, events: list[LogEvent], *, final: bool = False) -> None:
        self.calls.append(([e.seq for e in events], final))
        if not final:
            await self.gate.wait()
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("Redis went away")
        await super().append(name, events, final=final)


def tokens(*seqs: int) -> list[LogEvent]:
    return [LogEvent(seq, "token", {"index": seq - 1, "token": f"t{seq} "}) for seq in seqs]


@pytest.fixture
def gated(either_redis):
    return GatedLog()


async def started(log: RedisLog) -> str:
    name = f"t-{time.time_ns()}"
    await log.create(name, owner_id=1, producer="w1", extra={}, first=[LogEvent(0, "start", {})])
    return name


async def test_batches_added_during_a_write_go_out_together_and_readers_get_each_once(gated):
    name = await started(gated)
    appender = log_module.Appender(gated, name)
    for seqs in ((1, 2), (3,), (4, 5), (6,)):
        await appender.add(tokens(*seqs))  # returns at once: nothing is written yet
        await asyncio.sleep(0)
    assert gated.calls == [([1, 2], False)], "one write in flight, the rest waiting for it"
    gated.gate.set()
    for _ in range(500):  # the next write, alone; within 5 s
        if len(gated.calls) == 2 and appender._writing is None:
            break
        await asyncio.sleep(0.01)
    await appender.finish(LogEvent(7, "done", {"finish_reason": "stop"}))
    assert gated.calls == [([1, 2], False), ([3, 4, 5, 6], False), ([7], True)]
    assert [e.seq for e in await gated.read(name, after=-1, wait=0)] == list(range(8)), "each once, in order"
    assert (await gated.meta(name)).status == "done"


async def test_the_end_carries_what_is_still_waiting(gated):
    name = await started(gated)
    appender = log_module.Appender(gated, name)
    await appender.add(tokens(1))
    await asyncio.sleep(0)
    await appender.add(tokens(2, 3))
    ending = asyncio.create_task(appender.finish(LogEvent(4, "done", {})))
    await asyncio.sleep(0.05)
    assert gated.calls == [([1], False)], "the end waits for the write in flight"
    gated.gate.set()
    await ending
    assert gated.calls == [([1], False), ([2, 3, 4], True)], "what waited goes out with the end, in one write"
    assert [e.seq for e in await gated.read(name, after=-1, wait=0)] == [0, 1, 2, 3, 4]


async def test_a_failed_write_is_raised_by_the_next_add_and_the_end_is_still_written(gated):
    name = await started(gated)
    appender = log_module.Appender(gated, name)
    gated.fail_next = True
    await appender.add(tokens(1))
    await asyncio.sleep(0)
    await appender.add(tokens(2))
    gated.gate.set()
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionError, match="Redis went away"):
        await appender.add(tokens(3))
    await appender.finish(LogEvent(4, "error", {"code": "internal_error"}))
    assert [e.seq for e in await gated.read(name, after=-1, wait=0)] == [0, 4], "nothing after the failure but the end"


async def test_a_producer_ahead_of_a_slow_redis_waits_and_its_cancel_leaves_the_write_alone(gated, monkeypatch):
    monkeypatch.setattr(log_module, "MAX_PENDING_EVENTS", 3)
    name = await started(gated)
    appender = log_module.Appender(gated, name)
    await appender.add(tokens(1))
    await asyncio.sleep(0)
    await appender.add(tokens(2, 3))
    adding = asyncio.create_task(appender.add(tokens(4)))  # 3 waiting: this one waits for the write
    await asyncio.sleep(0.05)
    assert not adding.done()
    adding.cancel()  # the producer stopped (a cancel): the write goes on
    with pytest.raises(asyncio.CancelledError):
        await adding
    gated.gate.set()
    await appender.finish(LogEvent(5, "done", {}))
    assert [e.seq for e in await gated.read(name, after=-1, wait=0)] == [0, 1, 2, 3, 4, 5]


# ---- a log created in the script of a check (RedisLog.create_admitted) -------------------------------
_GATE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 7 end
redis.call('SET', KEYS[1], 'passed')
return 0
"""


async def test_a_log_is_created_only_when_its_admission_lets_it(log):
    from core.eventlog import Admission
    from core.redis_clients import async_redis

    name = f"t-{time.time_ns()}"
    gate = f"gate:{{{name}}}"
    redis = async_redis(name)
    await redis.set(gate, "closed")
    start = [LogEvent(0, "start", {"stream_id": name})]
    admission = Admission(_GATE, [gate], ["closed"])
    refused = await log.create_admitted(name, admission=admission, owner_id=3, producer="w1", extra={}, first=start)
    assert refused == 7
    assert await log.meta(name) is None and await log.read(name, after=-1, wait=0) == [], "nothing created"

    await redis.set(gate, "open")
    assert await log.create_admitted(name, admission=admission, owner_id=3, producer="w1", extra={"k": "v"}, first=start) == 0
    assert await redis.get(gate) == "passed", "the check's own write, in the same script"
    meta = await log.meta(name)
    assert meta is not None and meta.owner_id == 3 and meta.status == "running" and meta.extra["k"] == "v"
    assert [(e.seq, e.kind, e.data) for e in await log.read(name, after=-1, wait=0)] == [(0, "start", {"stream_id": name})]
    assert await redis.ttl(f"log:{{{name}}}") > 0 and await redis.ttl(f"log:{{{name}}}:meta") > 0


async def test_an_admission_whose_keys_live_on_another_shard_runs_nothing(redis_server):
    from core.eventlog import Admission
    from core.redis_clients import async_redis_at, shard_for

    server = redis_server.url.rsplit("/", 1)[0]
    with override_settings(REDIS_SHARDS=[{"url": f"{server}/1"}, {"url": f"{server}/2"}]):  # two databases as two shards
        log = RedisLog()
        name = f"t-{time.time_ns()}"
        gate = next(key for n in range(100) if shard_for(key := f"gate:{n}") != shard_for(name))
        admission = Admission(_GATE, [gate], ["closed"])
        assert await log.create_admitted(name, admission=admission, owner_id=3, producer="w1", extra={}) is None
        assert await log.meta(name) is None
        assert await async_redis_at(shard_for(gate)).get(gate) is None, "the check did not run either"
