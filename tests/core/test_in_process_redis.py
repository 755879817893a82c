"""The in-process Redis (core.redis_clients without REDIS_URL: one fakeredis server per
process) does what our code relies on Redis for, the way a real Redis does.

Every module that keeps state in Redis (presence, rate limits, connection caps, login
failures, generation slots and budgets, the event log) runs on it without Redis, so each
primitive they use is pinned here: if a fakeredis upgrade changes one, this fails, not a
feature test three layers up.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest

from core.redis_clients import async_redis, redis_configured, reset_in_process, sync_redis


def test_without_redis_settings_the_clients_talk_to_the_in_process_server() -> None:
    assert not redis_configured()
    client = sync_redis("anything")
    client.set("probe", "1")
    assert client.get("probe") == "1"  # decode_responses, as the real clients
    reset_in_process()
    assert client.get("probe") is None, "reset_in_process empties the server"


@pytest.mark.asyncio
async def test_sync_and_async_clients_share_one_server() -> None:
    sync_redis("k").set("shared", "from a thread's client")
    assert await async_redis("k").get("shared") == "from a thread's client"


@pytest.mark.asyncio
async def test_a_blocking_xread_wakes_when_another_coroutine_adds() -> None:
    client = async_redis("log")
    await client.xadd("log:a", {"e": "0"}, id="1-0")

    async def later() -> float:
        await asyncio.sleep(0.05)
        added = time.monotonic()
        await async_redis("log").xadd("log:a", {"e": "1"}, id="2-0")
        return added

    writer = asyncio.create_task(later())
    reply = await client.xread({"log:a": "1-0"}, block=3000)
    woken = time.monotonic()
    added = await writer
    assert reply == [["log:a", [("2-0", {"e": "1"})]]]
    assert woken - added < 0.1, f"woken {woken - added:.3f}s after the XADD"


@pytest.mark.asyncio
async def test_a_blocking_xread_wakes_when_a_thread_adds() -> None:
    """Token streams and task events: the producer may write from a thread (a sync task)."""
    added: list[float] = []

    def writer() -> None:
        time.sleep(0.05)
        added.append(time.monotonic())
        sync_redis("log").xadd("log:b", {"e": "x"}, id="5-0")

    thread = threading.Thread(target=writer)
    thread.start()
    reply: Any = await async_redis("log").xread({"log:b": "0-0"}, block=3000)
    woken = time.monotonic()
    thread.join()
    assert reply and reply[0][1][0][0] == "5-0"
    assert woken - added[0] < 0.1, f"woken {woken - added[0]:.3f}s after the XADD"


@pytest.mark.asyncio
async def test_a_blocking_xread_times_out_empty_and_the_connection_stays_usable() -> None:
    client = async_redis("log")
    started = time.monotonic()
    assert await client.xread({"log:none": "0-0"}, block=100) == []
    assert 0.09 <= time.monotonic() - started < 1.0
    assert await client.ping()


@pytest.mark.asyncio
async def test_stream_ids_ranges_and_maxlen() -> None:
    client = async_redis("log")
    entries: Any
    for seq in range(1, 6):
        await client.xadd("log:c", {"e": str(seq)}, id=f"{seq}-0")
    entries = await client.xrange("log:c", "2-0", "3-0")
    assert [entry_id for entry_id, _ in entries] == ["2-0", "3-0"]
    entries = await client.xrevrange("log:c", count=1)
    assert [entry_id for entry_id, _ in entries] == ["5-0"]
    await client.xadd("log:c", {"e": "6"}, id="6-0", maxlen=3, approximate=False)
    assert await client.xlen("log:c") == 3
    # an id at or below the newest is refused, as Redis does
    with pytest.raises(Exception, match="equal or smaller"):
        await client.xadd("log:c", {"e": "old"}, id="6-0")


@pytest.mark.asyncio
async def test_keys_expire_by_time() -> None:
    client = async_redis("k")
    await client.set("short", "1", px=100)
    await client.zadd("zshort", {"m": 1})
    await client.pexpire("zshort", 100)
    assert 0 < await client.pttl("short") <= 100
    assert await client.ttl("none") == -2
    await asyncio.sleep(0.15)
    assert await client.get("short") is None
    assert await client.exists("zshort") == 0


def test_expire_nx_keeps_the_first_deadline() -> None:
    """The login throttle's window runs from the first failure (EXPIRE … NX)."""
    client = sync_redis("login")
    pipe = client.pipeline(transaction=True)
    pipe.incr("fails")
    pipe.expire("fails", 100, nx=True)
    pipe.execute()
    client.expire("fails", 1000, nx=True)
    assert client.ttl("fails") <= 100 and client.get("fails") == "1"


@pytest.mark.asyncio
async def test_scripts_run_with_redis_semantics() -> None:
    """Lua 5.1 as in Redis: integers, TIME, sorted sets, errors; EVALSHA after a flush."""
    client = async_redis("s")
    script = """
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[1], ARGV[1], 'a')
    redis.call('ZADD', KEYS[1], ARGV[2], 'b')
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {tonumber(t[1]) > 1700000000, redis.call('ZCARD', KEYS[1]), oldest[1], oldest[2], 7 / 2, {'x', 1}}
    """
    # Lua true is 1; numbers are truncated to integers; ZRANGE scores reach Lua as strings.
    assert await client.eval(script, 1, "z", 10, 20) == [1, 1, "b", "20", 3, ["x", 1]]
    registered = sync_redis("s").register_script("return redis.call('INCR', KEYS[1])")
    assert registered(keys=["n"]) == 1
    sync_redis("s").script_flush()
    assert registered(keys=["n"]) == 2, "NOSCRIPT: redis-py loads the script again"
    with pytest.raises(Exception, match="WRONGTYPE"):
        await client.eval("return redis.call('INCR', KEYS[1])", 1, "z")


@pytest.mark.asyncio
async def test_pipelines_and_transactions() -> None:
    client = async_redis("p")
    pipe = client.pipeline(transaction=False)
    pipe.hset("h", mapping={"a": "1", "b": "2"})
    pipe.hmget("h", ["a", "c"])
    pipe.expire("h", 60)
    assert await pipe.execute() == [2, ["1", None], True]
    pipe = client.pipeline(transaction=True)
    pipe.incrby("n", 5)
    pipe.zadd("z", {"m": 1.5}, xx=True)
    assert await pipe.execute() == [5, 0]
    assert await client.hgetall("h") == {"a": "1", "b": "2"}


@pytest.mark.asyncio
async def test_threads_and_the_event_loop_use_the_server_at_once() -> None:
    """Services write from Django's threads while consumers write from the loop."""

    def bump() -> None:
        for _ in range(200):
            sync_redis("n").incr("count")

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for thread in threads:
        thread.start()
    client = async_redis("n")
    for _ in range(200):
        await client.incr("count")
    for thread in threads:
        thread.join()
    assert await client.get("count") == "800"


@pytest.mark.asyncio
async def test_a_blocking_list_pop_wakes_on_a_push() -> None:
    client = async_redis("wake")
    popper = asyncio.ensure_future(client.blpop(["tasks:wake"], timeout=3))
    await asyncio.sleep(0.02)
    sync_redis("wake").lpush("tasks:wake", "1")
    popped: Any = await asyncio.wait_for(popper, 1)
    assert list(popped) == ["tasks:wake", "1"]


# The abandoned reader's coroutine cannot finish cleanly once its loop is gone; collected
# here (gc.collect below), it says so as an unraisable exception, which is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_reader_left_blocked_in_a_closed_event_loop_does_not_break_later_writes() -> None:
    """A test's loop may close while a stream reader still blocks in XREAD."""
    loop = asyncio.new_event_loop()

    async def leave_a_reader_blocked() -> asyncio.Future[Any]:
        reader = asyncio.ensure_future(async_redis("log").xread({"log:left": "0-0"}, block=5000))
        await asyncio.sleep(0.01)
        return reader

    reader = loop.run_until_complete(leave_a_reader_blocked())
    assert not reader.done()
    loop.close()
    sync_redis("log").xadd("log:left", {"e": "1"})
    reset_in_process()
    assert sync_redis("log").xlen("log:left") == 0
    del loop, reader
    gc.collect()
