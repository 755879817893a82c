"""The durable event log that token streams and tasks write to and every reader follows.

A producer appends numbered events (0, 1, 2, …); any number of readers, on any worker,
read them from any position, wait for more, and learn when the stream ended. The log
is a Redis Stream (entry id ``<seq + 1>-0``) beside a hash of meta data (owner, status,
producer heartbeat, cancel flag, last reader); without REDIS_URL, in the in-process
Redis (core.redis_clients). A log is kept LOG_TTL_SECONDS after its last write, so a
finished stream can be replayed for at least ten minutes.

Control travels through the meta hash, not through messages: a cancel sets a flag, a
reader records when it last read, and the producer checks both on its heartbeat
(HEARTBEAT_SECONDS), so any worker can cancel, and a stream nobody reads is abandoned.

``follow`` is the one reader loop: from a position, live, until a final event. A reader on
the worker whose producer created the log follows it in memory (``_Tail``), every event it
is handed already in Redis; any other reads Redis.

This module is shared machinery (core imports no app): what a log's events mean, and
how much one producer may write, belong to the app that writes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from core.aio import PerLoop
from core.redis_clients import async_redis, group_for_scripts, hash_tag, redis_cluster_mode, shard_for, sync_redis
from core.sse import compact_json

# Ten minutes after the last write: the contract's floor for resuming a finished stream.
LOG_TTL_SECONDS = 600
# The producer writes its heartbeat and reads the control flags this often; a cancel
# therefore takes effect within this plus one batch, well inside the 1 s promised.
HEARTBEAT_SECONDS = 0.25
# A producer silent for this long is dead: readers report producer_lost. Many
# heartbeats, so a busy event loop is not mistaken for a dead worker, and well under
# the 10 s the contract allows.
PRODUCER_LOST_SECONDS = 6.0
# Added to the time to live a heartbeat sets (whole seconds, as EXPIRE takes), so that the
# appends between two heartbeats are kept at least LOG_TTL_SECONDS too.
_TTL_SLACK_SECONDS = 1
# Entries per read of a Redis log (each a batch of up to a few dozen events).
READ_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class LogEvent:
    seq: int
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LogMeta:
    owner_id: int
    status: str  # running | done
    producer: str
    heartbeat: float  # time.time() of the producer's last heartbeat
    cancel: bool
    reader_seen: float
    extra: Mapping[str, str]

    @property
    def producer_lost(self) -> bool:
        return self.status == "running" and time.time() - self.heartbeat > PRODUCER_LOST_SECONDS


@dataclass(frozen=True, slots=True)
class Control:
    """What the producer learns on each heartbeat."""

    cancel: bool
    reader_seen: float


def _meta_from(raw: Mapping[str, str]) -> LogMeta:
    known = {"owner", "status", "producer", "hb", "cancel", "reader"}
    return LogMeta(
        owner_id=int(raw["owner"]),
        status=raw["status"],
        producer=raw.get("producer", ""),
        heartbeat=float(raw.get("hb", 0)),
        cancel=raw.get("cancel") == "1",
        reader_seen=float(raw.get("reader", 0)),
        extra={k: v for k, v in raw.items() if k not in known},
    )


# ---- Redis ------------------------------------------------------------------------------------
# A log and its meta share the log's name as a hash tag: one slot in a Redis Cluster, for
# the transaction and the scripts that touch both.
def _log_key(name: str) -> str:
    return f"log:{hash_tag(name)}"


def _meta_key(name: str) -> str:
    return f"log:{hash_tag(name)}:meta"


def _one_script(name: str, log_keys: list[str], other_keys: list[str]) -> bool:
    """Whether one script can take both the log's keys and ``other_keys``: all on the log's
    shard (the shard of its name), and in a Redis Cluster all in one hash slot."""
    if redis_cluster_mode():
        return len(group_for_scripts([*log_keys, *other_keys])) == 1
    return all(shard_for(key) == shard_for(name) for key in other_keys)


def _entry_id(seq: int) -> str:
    return f"{seq + 1}-0"


def _encoded(events: list[LogEvent]) -> str:
    """A log entry: its events as one JSON array of [seq, kind, data] (read back by ``_decoded``)."""
    return compact_json([[event.seq, event.kind, event.data] for event in events])


def _decoded(entry: str) -> list[list[Any]]:
    """A log entry's events. orjson's parser, 2.4 times the standard library's on a batch of
    tokens; an entry it refuses (a lone surrogate that compact_json escaped as \\udXXX) is
    read by the standard library, which takes it back to the same value."""
    try:
        return orjson.loads(entry)
    except orjson.JSONDecodeError:
        return json.loads(entry)


# Append a final error event unless the stream has already ended (first reader wins).
_FAIL_SCRIPT = """
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local ms = 0
if #last > 0 then ms = tonumber(string.match(last[1][1], '^(%d+)')) end
redis.call('XADD', KEYS[1], (ms + 1) .. '-0', 'e', '[[' .. ms .. ',"' .. ARGV[1] .. '",' .. ARGV[2] .. ']]')
redis.call('HSET', KEYS[2], 'status', 'done')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


# Append an event numbered one past the newest (several writers may append to a task's log).
_APPEND_NEXT_SCRIPT = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
-- entry id <seq + 1>-0: a new log starts at seq 1 (id 2-0)
local seq = 1
if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
-- never below the writer's floor: a log lost with a Redis restart goes on numbering
local floor = tonumber(ARGV[4])
if seq < floor then seq = floor end
redis.call('XADD', KEYS[1], (seq + 1) .. '-0', 'e', '[[' .. seq .. ',"' .. ARGV[1] .. '",' .. ARGV[2] .. ']]')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return seq
"""


# A log's creation: its meta data (ARGV[base + 4..], field and value pairs) and, when
# ARGV[base + 2] names an entry, its first events (ARGV[base + 3]); ARGV[base + 1] is the time
# to live. One command where a transaction of up to six was: redis-py's CPU goes with the
# commands it packs, not the round trips (docs/performance.md, "Per token"). ``base`` is 0 in
# RedisLog.create's script, and skips the admission's arguments in create_admitted's.
_CREATE_LUA = """
redis.call('HSET', KEYS[2], unpack(ARGV, base + 4))
redis.call('EXPIRE', KEYS[2], ARGV[base + 1])
if ARGV[base + 2] ~= '' then
  redis.call('XADD', KEYS[1], ARGV[base + 2], 'e', ARGV[base + 3])
  redis.call('EXPIRE', KEYS[1], ARGV[base + 1])
end
"""
_CREATE_SCRIPT = "local base = 0\n" + _CREATE_LUA + "return 1\n"


@dataclass(frozen=True, slots=True)
class Admission:
    """A check run in the script that creates a log, before it (RedisLog.create_admitted):
    ``lua``, the body of a Lua function of its own ``KEYS`` and ``ARGV`` (``keys`` and
    ``args``), returns 0 to let the log be created, or a refusal (a number): then nothing
    is created. A refusing check must leave nothing that would need undoing."""

    lua: str
    keys: list[str]
    args: list[str | int | float]


# The admission's function, then the creation (_CREATE_LUA). KEYS: the log's two, then the admission's;
# ARGV: how many keys and arguments the admission has, its arguments, then the creation's.
_ADMITTED_CREATE_SCRIPT = (
    """
local function admit(KEYS, ARGV)
--[[admission]]
end
local key_count, arg_count = tonumber(ARGV[1]), tonumber(ARGV[2])
local admission_keys, admission_args = {}, {}
for i = 1, key_count do admission_keys[i] = KEYS[2 + i] end
for i = 1, arg_count do admission_args[i] = ARGV[2 + i] end
local refused = admit(admission_keys, admission_args)
if refused ~= 0 then return refused end
local base = 2 + arg_count
"""
    + _CREATE_LUA
    + "return 0\n"
)


# A log's final append (RedisLog.append with final=True): the entry if ARGV[2] names one, the
# status, both times to live. A refused XADD (sent again after a dropped connection, so
# already there) does not stop the rest; its error is returned for the caller to judge.
_END_SCRIPT = """
local refused = ''
if ARGV[2] ~= '' then
  local added = redis.pcall('XADD', KEYS[1], ARGV[2], 'e', ARGV[3])
  if type(added) == 'table' and added.err then refused = added.err end
end
redis.call('HSET', KEYS[2], 'status', 'done')
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return refused
"""


# The producer's heartbeat (RedisLog.heartbeat).
_HEARTBEAT_SCRIPT = """
redis.call('HSET', KEYS[2], 'hb', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HMGET', KEYS[2], 'cancel', 'reader')
"""


class RedisLog:
    def __init__(self) -> None:
        # Logs created without events, whose Redis Stream the next append creates and must
        # give its time to live (every other append leaves the key's time to live alone).
        self._stream_without_ttl: set[str] = set()

    async def create(
        self, name: str, *, owner_id: int, producer: str, extra: Mapping[str, str], first: list[LogEvent] | None = None
    ) -> None:
        """Write a log's meta data, and its ``first`` events if any, in one round trip (a
        stream's start is on its time to first token)."""
        keys, args = self._creation(name, owner_id=owner_id, producer=producer, extra=extra, first=first)
        await async_redis(name).eval(_CREATE_SCRIPT, len(keys), *keys, *args)
        self._created(name, first)

    async def create_admitted(
        self,
        name: str,
        *,
        admission: Admission,
        owner_id: int,
        producer: str,
        extra: Mapping[str, str],
        first: list[LogEvent] | None = None,
    ) -> int | None:
        """``create``, in the same script as ``admission``'s check, only if the check lets it
        (a stream's start in one round trip: docs/performance.md, "Eleventh step"). Returns 0
        when the log was created, the check's refusal (nothing written), or None when the
        check's keys live on another Redis than the log's (nothing run: check, then create)."""
        keys, args = self._creation(name, owner_id=owner_id, producer=producer, extra=extra, first=first)
        if not _one_script(name, keys, admission.keys):
            return None
        script = _ADMITTED_CREATE_SCRIPT.replace("--[[admission]]", admission.lua)
        arguments = [*keys, *admission.keys, len(admission.keys), len(admission.args), *admission.args, *args]
        refused = int(await async_redis(name).eval(script, len(keys) + len(admission.keys), *arguments))
        if not refused:
            self._created(name, first)
        return refused

    @staticmethod
    def _creation(
        name: str, *, owner_id: int, producer: str, extra: Mapping[str, str], first: list[LogEvent] | None
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of _CREATE_SCRIPT."""
        now = time.time()
        meta = {"owner": owner_id, "status": "running", "producer": producer, "hb": now, "reader": now, **dict(extra)}
        entry_id, entry = ("", "")
        if first:
            entry_id = _entry_id(first[-1].seq)
            entry = _encoded(first)
        fields = [item for pair in meta.items() for item in pair]
        return [_log_key(name), _meta_key(name)], [LOG_TTL_SECONDS, entry_id, entry, *fields]

    def _created(self, name: str, first: list[LogEvent] | None) -> None:
        if not first:
            self._stream_without_ttl.add(name)
        _tails().setdefault(name, _Tail()).add(first or [])

    async def append(self, name: str, events: list[LogEvent], *, final: bool = False) -> None:
        """Append events (in seq order) as one entry, named after the last of them: a
        batch of tokens costs one Redis entry, not one per token.

        A batch is one XADD and nothing else: the log's time to live was set when it was
        created and is renewed by every heartbeat (at most HEARTBEAT_SECONDS before any
        append, so a log whose producer died is still kept LOG_TTL_SECONDS after its last
        write) and by the final append. Two EXPIREs per batch were two thirds of an
        append's commands (docs/performance.md, "Per token")."""
        client = async_redis(name)
        entry = {"e": _encoded(events)} if events else None
        unset_ttl = name in self._stream_without_ttl
        tails = _tails()
        tail = tails.get(name)
        if final and tail is not None:  # whether this append goes through or not
            asyncio.get_running_loop().call_later(TAIL_GRACE_SECONDS, _forget_tail, tails, name, tail)
        try:
            if entry is not None and not final and not unset_ttl:  # a batch: one command, no pipeline
                await client.xadd(_log_key(name), entry, id=_entry_id(events[-1].seq))  # type: ignore[arg-type]
            elif final:  # the entry, the status and both times to live: one script
                keys = (_log_key(name), _meta_key(name))
                entry_id, text = (_entry_id(events[-1].seq), entry["e"]) if entry is not None else ("", "")
                refused = await client.eval(_END_SCRIPT, 2, *keys, LOG_TTL_SECONDS, entry_id, text)
                if refused:
                    raise redis.ResponseError(refused)
            else:
                pipe = client.pipeline(transaction=False)
                if entry is not None:
                    pipe.xadd(_log_key(name), entry, id=_entry_id(events[-1].seq))  # type: ignore[arg-type]
                pipe.expire(_log_key(name), LOG_TTL_SECONDS)
                await pipe.execute()
        except redis.ResponseError as error:
            # redis-py sends a command or pipeline again when the connection drops before the replies
            # (a Redis restart): an XADD that went through the first time is then refused as
            # not above the top entry. The entry is there, and the commands after it ran
            # (a pipeline without a transaction runs every command, the end's script carries
            # on past a refused XADD): nothing is missing.
            if not events or "equal or smaller" not in str(error) or not await self._is_newest(name, events[-1].seq):
                raise
        if final or (unset_ttl and events):
            self._stream_without_ttl.discard(name)
        if tail is not None:  # in Redis now: this worker's readers may have them
            tail.add(events, final=final)

    async def _is_newest(self, name: str, seq: int) -> bool:
        """Whether the log's newest entry is the one named after ``seq`` (an append of
        this writer that went through)."""
        newest: Any = await async_redis(name).xrevrange(_log_key(name), count=1)
        return bool(newest) and newest[0][0] == _entry_id(seq)

    async def read(self, name: str, *, after: int, wait: float, limit: int = 1000) -> list[LogEvent]:
        """Events with seq > after, waiting up to ``wait`` seconds for the first."""
        block = max(1, int(wait * 1000)) if wait > 0 else None
        # COUNT counts entries, and an entry is a batch of events: a bounded number per
        # read keeps one read of a long finished stream from loading all of it at once.
        count = min(limit, READ_ENTRIES)
        reply: Any = await async_redis(name).xread({_log_key(name): _entry_id(after)}, count=count, block=block)
        if not reply:
            return []
        # Entries are named after their last event, so the first entry may start at or
        # below ``after``: keep only what comes after it.
        return [
            LogEvent(seq, kind, data) for _, fields in reply[0][1] for seq, kind, data in _decoded(fields["e"]) if seq > after
        ][:limit]

    async def append_next(self, name: str, *, kind: str, data: Mapping[str, Any], floor: int = 1) -> int:
        """Append an event numbered one past the newest (from 1 for a new log), and at
        least ``floor`` (the writer's own last seq + 1: if Redis lost the log, readers
        holding an older Last-Event-ID must not miss the events numbered again); return its seq."""
        script_args = (_checked_kind(kind), compact_json(data), LOG_TTL_SECONDS, max(1, floor))
        seq: Any = await async_redis(name).eval(_APPEND_NEXT_SCRIPT, 1, _log_key(name), *script_args)
        return int(seq)

    async def last_seq(self, name: str) -> int | None:
        entries: Any = await async_redis(name).xrevrange(_log_key(name), count=1)
        return int(entries[0][0].split("-")[0]) - 1 if entries else None

    async def meta(self, name: str) -> LogMeta | None:
        raw: Any = await async_redis(name).hgetall(_meta_key(name))
        # Without its owner the hash is a remnant: a heartbeat or a reader's touch wrote
        # to it after Redis lost the stream (a restart without persistence).
        return _meta_from(raw) if raw and "owner" in raw else None

    async def heartbeat(self, name: str) -> Control:
        """The producer's mark, the log's time to live renewed, and the control flags read:
        one script, since redis-py spends about as much CPU per command of a pipeline as
        per round trip (docs/performance.md, "Per token")."""
        keys = (_log_key(name), _meta_key(name))
        # One second more than the floor: the appends until the next heartbeat renew nothing.
        ttl = LOG_TTL_SECONDS + _TTL_SLACK_SECONDS
        cancel, reader = await async_redis(name).eval(_HEARTBEAT_SCRIPT, 2, *keys, time.time(), ttl)
        return Control(cancel=cancel == "1", reader_seen=float(reader or 0))

    async def cancel(self, name: str) -> None:
        await async_redis(name).hset(_meta_key(name), "cancel", "1")

    def cancel_blocking(self, name: str) -> None:
        """``cancel`` for synchronous code (a service on the database thread, after its commit)."""
        sync_redis(name).hset(_meta_key(name), "cancel", "1")

    async def annotate(self, name: str, fields: Mapping[str, str]) -> None:
        """Add fields to a log's meta data (read back in LogMeta.extra), kept as long as it is."""
        await async_redis(name).hset(_meta_key(name), mapping=dict(fields))  # type: ignore[arg-type]

    async def delete(self, name: str) -> None:
        """Forget the log and its meta data (a deleted response, docs/protocol.md, "Responses API")."""
        await async_redis(name).delete(_log_key(name), _meta_key(name))
        _tails().pop(name, None)
        self._stream_without_ttl.discard(name)

    async def touch_reader(self, name: str) -> None:
        await async_redis(name).hset(_meta_key(name), "reader", time.time())

    async def fail_if_running(self, name: str, *, kind: str, data: Mapping[str, Any]) -> bool:
        keys = (_log_key(name), _meta_key(name))
        result = await async_redis(name).eval(_FAIL_SCRIPT, 2, *keys, _checked_kind(kind), compact_json(data), LOG_TTL_SECONDS)
        return bool(result)


# Events an Appender holds while a write is in flight before its producer waits for it:
# a producer may run ahead of a slow Redis by this much, no further.
MAX_PENDING_EVENTS = 512


class Appender:
    """One producer's appends to its log, in order, with one write in flight at a time:
    what is added while a write is on its way goes out together in the next one, a group
    commit. A producer faster than its Redis round trip (a fast upstream, a busy worker)
    then costs one XADD, and one wake-up of each reader, per round trip rather than per
    batch it read (docs/performance.md, "Eighth step"); a slow one still writes each batch
    at once. Readers see events only once they are in Redis (RedisLog.append).

    A failed write is raised by the next ``add``; what was added after it is not written
    (the producer ends the log with an error, as when an append failed in its own call)."""

    def __init__(self, log: RedisLog, name: str) -> None:
        self._log = log
        self._name = name
        self._pending: list[LogEvent] = []
        self._writing: asyncio.Task[None] | None = None
        self._failure: Exception | None = None
        self._ending = False  # the end's own write takes what is still waiting

    async def add(self, events: list[LogEvent]) -> None:
        """Queue ``events`` (in seq order, after those added before) for the log. Returns at
        once, unless MAX_PENDING_EVENTS are waiting: then once they are written."""
        if self._failure is not None:
            raise self._failure
        self._pending += events
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write(), name=f"append-{self._name}")
        elif len(self._pending) >= MAX_PENDING_EVENTS:
            await asyncio.wait({self._writing})  # the write goes on if this caller is cancelled
            if self._failure is not None:
                raise self._failure

    async def _write(self) -> None:
        try:
            while self._pending and self._failure is None and not self._ending:
                events, self._pending = self._pending, []
                try:
                    await self._log.append(self._name, events)
                except Exception as error:  # raised to the producer by its next add
                    self._failure = error
        finally:
            self._writing = None

    async def finish(self, final: LogEvent) -> None:
        """The log's end: once the write in flight is done, what is still waiting and
        ``final`` in one last append (RedisLog.append with ``final``)."""
        self._ending = True
        if self._writing is not None:
            await asyncio.wait({self._writing})
        events = [final] if self._failure is not None else [*self._pending, final]
        self._pending = []
        await self._log.append(self._name, events, final=True)


def _checked_kind(kind: str) -> str:
    """Event kinds go into the Lua scripts' JSON unescaped: letters and underscores only."""
    if not kind or not all(c.isascii() and (c.isalpha() or c == "_") for c in kind):
        raise ValueError(f"an event kind must be letters and underscores, got {kind!r}")
    return kind


_log = RedisLog()


def get_log() -> RedisLog:
    return _log


# ---- the producer's worker: its logs' newest events in memory ---------------------------------------
# Events of a log kept in memory on its producer's worker, for the readers it serves there: a
# few seconds of a fast stream; a reader further behind (or resuming an old position) reads Redis.
TAIL_EVENTS = 4096
# A finished log's tail is dropped this long after its final event (readers still at it
# finish from memory; a later one reads Redis).
TAIL_GRACE_SECONDS = 10.0


class _Tail:
    """The newest events of a log produced on this worker, as they went into Redis.

    A stream is read on the worker that started it (the POST that asked for it reads its
    reply): such a reader was a blocked XREAD and a decode per batch, a Redis round trip on
    every wake-up and on the way to the first token (docs/performance.md, "Stream start").
    It now waits on this tail. Events come here only after Redis acknowledged them, so a
    reader hands out nothing that is not durable. They are the producer's own objects, not
    decoded again from the entry (a decode per batch was a fifth of an append's CPU): their
    data are JSON values, never changed once appended, which encode to the same text as
    what a reader elsewhere decodes. Redis stays the authority: a reader that waits a
    READ_WAIT_SECONDS in vain asks it (an end appended by a reader elsewhere, a producer
    whose append failed)."""

    __slots__ = ("created", "ended", "events", "waiter")

    def __init__(self) -> None:
        self.events: list[LogEvent] = []  # consecutive seqs
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False
        self.created = time.monotonic()  # just after the log's creation, which marked it read

    def add(self, events: list[LogEvent], *, final: bool = False) -> None:
        if events:
            if self.events and events[0].seq != self.events[-1].seq + 1:
                self.events = []  # not consecutive (a log written again): start over
            self.events.extend(events)
            if len(self.events) > TAIL_EVENTS:
                del self.events[: len(self.events) - TAIL_EVENTS]
        if final:
            self.ended = True
        if self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)
            self.waiter = None

    def after(self, seq: int) -> list[LogEvent] | None:
        """The events after ``seq``, or None when this tail does not hold the one after it."""
        if not self.events:
            return None
        start = seq + 1 - self.events[0].seq
        if start < 0 or start > len(self.events):
            return None
        return self.events[start:]

    async def wait(self, timeout: float) -> None:
        """Until the next ``add``, or ``timeout`` seconds."""
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait({self.waiter}, timeout=timeout)


# The tails of the logs this worker's producers created, by log name (one dict per event loop).
_tails: PerLoop[dict[str, _Tail]] = PerLoop(dict)


def _forget_tail(tails: dict[str, _Tail], name: str, tail: _Tail) -> None:
    if tails.get(name) is tail:
        del tails[name]


async def _read(log: RedisLog, name: str, after: int) -> list[LogEvent]:
    """What ``follow`` reads next: from the tail when this worker produces the log and holds
    the next event, else from Redis, waiting up to READ_WAIT_SECONDS for it either way."""
    tail = _tails().get(name)
    events = None if tail is None else tail.after(after)
    if tail is None or events is None:  # not produced here, or further behind than the tail reaches
        return await log.read(name, after=after, wait=READ_WAIT_SECONDS)
    if not events and not tail.ended:
        await tail.wait(READ_WAIT_SECONDS)
        events = tail.after(after)
    # Nothing in memory for a second (or the tail moved past us): Redis has the last word.
    return events or await log.read(name, after=after, wait=0)


# ---- following ------------------------------------------------------------------------------------
# How long one read waits for new events before the reader looks at the log's state (and a
# view gets its chance to send a keepalive).
READ_WAIT_SECONDS = 1.0
# A read that comes back this much later than it should have means Redis or this event
# loop stood still (a read answers within READ_WAIT_SECONDS when all is well).
STALL_SECONDS = 1.0

# Called with the last seq read when a read found nothing: events to hand out as if read
# (a final one ends the follow), [] to wait on, or None when the log is over.
IdleCheck = Callable[[int], Awaitable[list[LogEvent] | None]]


@dataclass(frozen=True, slots=True)
class Produced:
    """A log with one producer and meta data (``create``, ``heartbeat``): its readers mark
    it read (a log nobody reads is abandoned), stop when its meta data expired, and, when
    the producer's heartbeat is stale, append this final event once, for everyone."""

    lost_kind: str
    lost_data: Mapping[str, Any]


async def follow(
    name: str,
    *,
    after: int,
    final: Collection[str],
    produced: Produced | None = None,
    when_idle: IdleCheck | None = None,
) -> AsyncIterator[list[LogEvent]]:
    """The events of log ``name`` with seq > ``after``, live, until one of a ``final`` kind.

    Yields an empty list after each read that found nothing (READ_WAIT_SECONDS), so that
    a reader can send keepalives. Every SSE view and socket that reads a log reads it here.
    """
    log = get_log()
    # "Read", for the producer's abandonment check: the log's creation marked it so, and a
    # reader on the worker that created it (the POST's own) need not say it again for a
    # second; any other marks it after its first events.
    tail = _tails().get(name)
    last_touch = tail.created if tail is not None else 0.0
    # Since when this reader has seen Redis (and its own event loop) answer promptly. A
    # producer's heartbeat is judged only over such a stretch: after a stall, the silence
    # was everyone's, not the producer's, and it gets PRODUCER_LOST_SECONDS to beat again.
    responsive_since = time.monotonic() - PRODUCER_LOST_SECONDS
    while True:
        asked = time.monotonic()
        events = await _read(log, name, after)
        now = time.monotonic()
        if produced is not None and now - asked > READ_WAIT_SECONDS + STALL_SECONDS:
            responsive_since = now
        if not events and produced is not None:
            meta = await log.meta(name)
            if meta is None:
                return  # expired
            if meta.producer_lost and time.monotonic() - responsive_since >= PRODUCER_LOST_SECONDS:
                await log.fail_if_running(name, kind=produced.lost_kind, data=produced.lost_data)
                continue  # the next read returns the final event, whoever appended it
        if not events and when_idle is not None:
            found = await when_idle(after)
            if found is None:
                return
            events = found
        yield events
        if events and events[-1].kind in final:
            return  # nothing left to read, and no producer left to tell
        # "Read", for the producer's abandonment check, at most once a second; after the
        # events went out, so that a resumed reader's first ones do not wait on it.
        if produced is not None and time.monotonic() - last_touch >= 1.0:
            last_touch = time.monotonic()
            await log.touch_reader(name)
        if events:
            after = events[-1].seq
