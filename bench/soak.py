#!/usr/bin/env python3
"""Soak: 2 workers, 2,000 WebSocket clients in 50 rooms, steady chat, churn, SSE streams and tasks, for minutes.

One run starts a private redis-server, W web workers (daphne or uvicorn) and one task worker, connects
the clients (bearer tokens minted up front), then for --duration seconds: sends chat messages (each with
a unique content, some over REST), closes and reconnects --churn of the clients a minute (resuming with
`last_id`), runs SSE token streams (echo backend; some dropped half-way and resumed on the other worker)
and countdown tasks followed over SSE, and samples the workers' RSS. Then it drains, pages every room's
history over the API and accounts for every message: sent, acknowledged (echo or 201), persisted,
delivered to every client after it joined, lost, duplicated, reordered. With --faults it also kills and
restarts a web worker, the task worker and Redis, and stalls Redis for 5 s, timing each recovery.
Prints a table and writes bench/results/<UTC timestamp>_soak.json. Loopback only; every wait is bounded;
every process started here is stopped at the end, also on Ctrl-C or an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from common import (
    CLK_TCK,
    HOST,
    NCPU,
    ROOT,
    BenchError,
    Procs,
    Target,
    asgi_argv,
    cpu_ticks,
    fmt,
    machine_ticks,
    md_table,
    mono,
    mono_ns,
    ours_env,
    ours_prepare,
    pctl_ms,
    redis_argv,
    rss_kib,
    session,
    shown,
    start_redis,
    wait_listening,
)
from fanout import ours_create_rooms
from picows import WSListener, WSMsgType, ws_connect
from sse import BACKLOG, MESSAGE, WORDS, Rec, SSEReader, follow_sse, http_request

from tasks import TaskReader, TaskRec, start_taskworker

loads = orjson.loads
TEXT = WSMsgType.TEXT
PONG = b'{"type":"pong"}'
STEP_ONE = re.compile(rb'"message": ?"step 1 of \d+"')
WINDOW_S = 30.0  # the latency windows
RSS_EVERY_S = 5.0
GOAL_RSS_PCT = 5.0


# ------------------------------------------------------------------ clients


class Member:
    """One simulated user's client in one room, across all its connections: what it received (ids), the
    id it joined after, and the highest id seen (its `last_id` on reconnect)."""

    __slots__ = (
        "busy",
        "churning",
        "conn",
        "dups",
        "excused",
        "i",
        "ids",
        "join_id",
        "max_id",
        "port_i",
        "reconnects",
        "reordered",
        "room",
        "seq",
        "user",
    )

    def __init__(self, i: int, room: int, user: int, port_i: int) -> None:
        self.i, self.room, self.user, self.port_i = i, room, user, port_i
        self.conn: Conn | None = None
        self.ids: set[int] = set()
        self.max_id = 0
        self.join_id: int | None = None  # `synced.last_id` of its first connection: it expects every id above
        self.dups = self.reordered = self.seq = self.reconnects = 0
        self.excused: list[tuple[int, int]] = []  # (after, before): ids the server left out with a `gap` frame
        self.busy = False  # a close or reconnect is under way
        self.churning = False  # closed on purpose by the churn, not yet back

    def live(self) -> bool:
        return self.conn is not None and self.conn.live


class Conn(WSListener):
    """One WebSocket of a member: hello, backlog, synced, presence, then live frames."""

    def __init__(self, soak: Soak, member: Member) -> None:
        self.soak, self.m = soak, member
        self.transport: Any = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.synced_last_id: int | None = None
        self.live = False  # ready, and the member's current connection
        self.closing = False  # we close it: not an error
        self.close_code: int | None = None
        self.gap_pending = False

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready (close code {self.close_code})"))
        was_live, self.live = self.live, False
        if self.m.conn is self:
            self.m.conn = None
        if was_live and not self.closing:
            self.soak.unexpected_close(self)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        now = mono_ns()
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self.close_code = frame.get_close_code()
                if not transport.is_close_frame_sent:
                    transport.send_close(self.close_code)
                transport.disconnect()
            return
        m = loads(frame.get_payload_as_bytes())
        kind = m.get("type")
        if kind == "message":
            self.soak.delivered(self, m, now)
        elif kind == "ping":
            transport.send(TEXT, PONG)
        elif kind == "synced":
            self.synced_last_id = m.get("last_id", 0)
        elif kind == "presence":
            if self.synced_last_id is not None and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "gap":
            self.gap_pending = True
            self.soak.errors["gap frame"] += 1
            self.soak.gap_missed += int(m.get("missed", 0))
        elif kind == "error":
            self.soak.errors[f"error frame {m.get('code')}"] += 1


# ------------------------------------------------------------------ the soak


class Soak:
    """The whole scenario, in one event loop (no locks)."""

    def __init__(
        self, a: argparse.Namespace, procs: Procs, t: Target, tw: subprocess.Popen[bytes], redis: dict[str, Any]
    ) -> None:
        self.a, self.procs, self.t, self.tw, self.redis = a, procs, t, tw, redis
        self.rooms = [f"soak-{i}" for i in range(a.rooms)]
        n, per_room = a.clients, max(1, a.clients // a.rooms)
        # Client i is in room i // per_room, user i % users: a room's clients are distinct users, a user is in several rooms.
        self.members = [Member(i, min(a.rooms - 1, i // per_room), i % a.users, i % a.workers) for i in range(n)]
        self.by_room: list[list[Member]] = [[] for _ in self.rooms]
        for m in self.members:
            self.by_room[m.room].append(m)
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}
        self.gap_missed = 0
        self.sent: dict[tuple[int, int], int] = {}  # (client, seq) -> room
        self.rest_keys: set[tuple[int, int]] = set()
        self.acked: set[tuple[int, int]] = set()
        self.ack_sent_ns = 0  # the send time of the newest message acknowledged so far
        self.stopping = False
        self.t0_ns = 0  # start of traffic
        self.windows: dict[int, array.array[int]] = {}
        self.lat_all = array.array("q")
        self.reconnects = Counter[str]()  # churn, unexpected
        self.reconnect_ms: dict[str, array.array[int]] = {}  # why -> ms from the close (or drop) to ready again
        self.failed_dials = 0
        self.pending_reconnects: set[asyncio.Task[None]] = set()
        self.rest_inflight = 0
        self.rest_tasks: set[asyncio.Task[None]] = set()
        self.rss: list[dict[str, Any]] = []
        self.marks: dict[str, dict[str, Any]] = {}
        self.sse = Counter[str]()
        self.tasks = Counter[str]()
        self.faults: list[dict[str, Any]] = []
        self.close_codes = Counter[str]()  # close codes of the connections the server ended
        self.reconnected_ns = array.array("q")  # when each reconnect completed (handshake rates)
        self.fault_error_marks: list[Counter[str]] = []  # the error counts as each fault began
        self.errors_at_end: Counter[str] = Counter()
        self.pad = "x" * max(0, a.content_len - 40)
        content_words = "".join(WORDS[i % len(WORDS)] + " " for i in range(a.sse_tokens))
        self.sse_content = content_words.encode()
        self.http: list[httpx.AsyncClient] = []

    # ---- bookkeeping ----------------------------------------------------------------------
    def error(self, kind: str, sample: str = "") -> None:
        self.errors[kind] += 1
        if sample and kind not in self.error_samples:
            self.error_samples[kind] = sample[:300]

    def delivered(self, conn: Conn, m: dict[str, Any], now: int) -> None:
        mem = conn.m
        mid = m["id"]
        if conn.gap_pending:  # the server left out the ids between what we had and this one
            conn.gap_pending = False
            mem.excused.append((mem.max_id, mid))
        if mid in mem.ids:
            mem.dups += 1
            return
        mem.ids.add(mid)
        if mid < mem.max_id:
            mem.reordered += 1
        else:
            mem.max_id = mid
        if not conn.live:
            return  # backlog: no latency, no ack (the echo is the ack)
        parts = m.get("content", "").split(" ", 4)
        if len(parts) < 4 or parts[0] not in ("soak", "soakr"):
            return
        try:
            ci, seq, t_ns = int(parts[1]), int(parts[2]), int(parts[3])
        except ValueError:
            return
        lat = now - t_ns
        self.lat_all.append(lat)
        w = int((now - self.t0_ns) / (WINDOW_S * 1e9))
        arr = self.windows.get(w)
        if arr is None:
            arr = self.windows[w] = array.array("q")
        arr.append(lat)
        if ci == mem.i and parts[0] == "soak":
            self.ack((ci, seq), t_ns)

    def ack(self, key: tuple[int, int], t_ns: int) -> None:
        self.acked.add(key)
        self.ack_sent_ns = max(self.ack_sent_ns, t_ns)

    # ---- connections ------------------------------------------------------------------------
    async def dial(self, m: Member) -> bool:
        """One connection of `m`, resuming with `last_id` once it has joined; True when ready."""
        port = self.t.ports[m.port_i]
        resume = m.join_id is not None
        url = f"ws://{HOST}:{port}/ws/rooms/{self.rooms[m.room]}/" + (f"?last_id={m.max_id}" if resume else "")
        conn = Conn(self, m)
        try:
            await ws_connect(
                lambda: conn,
                url,
                extra_headers=self.t.headers(m.user),
                websocket_handshake_timeout=20,
                max_redirects=0,
            )
            m.conn = conn
            await asyncio.wait_for(conn.ready, 30)
        except Exception as e:  # every failure is counted by kind; the caller retries
            self.failed_dials += 1
            kind = f"connect {type(e).__name__}"
            if conn.close_code:
                kind += f" (close {conn.close_code})"
            self.error(kind, str(e))
            conn.closing = True
            if m.conn is conn:
                m.conn = None
            if conn.transport is not None:
                conn.transport.disconnect(graceful=False)
            if not resume:  # a first connection that failed half-way: its backlog does not count
                m.ids.clear()
                m.max_id = m.dups = m.reordered = 0
            return False
        if m.join_id is None:
            m.join_id = conn.synced_last_id or 0
        conn.live = True
        return True

    async def connect_all(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(50)
        t0 = mono()

        async def one(m: Member) -> None:
            async with sem:
                for attempt in range(3):
                    if await self.dial(m):
                        return
                    await asyncio.sleep(0.5 * (attempt + 1))

        await asyncio.wait_for(asyncio.gather(*(one(m) for m in self.members)), 120 + len(self.members) / 10)
        missing = sum(not m.live() for m in self.members)
        if missing:
            raise BenchError(f"{missing} of {len(self.members)} clients could not connect: {dict(self.errors)}")
        return {"connect_s": round(mono() - t0, 1), "failed_dials": self.failed_dials}

    def unexpected_close(self, conn: Conn) -> None:
        """The server (or the network) closed a live connection: count it, then resume on the other worker.
        A 1012 is a worker draining for a restart (docs/protocol.md): not an error, and the client goes at once."""
        self.close_codes[str(conn.close_code or "none")] += 1
        draining = conn.close_code == 1012
        if not draining:
            self.error(f"closed by server {conn.close_code}" if conn.close_code else "dropped without close frame")
        m = conn.m
        if m.busy or self.closing_all:
            return
        self.spawn_reconnect(m, 0.0 if draining else random.uniform(0.2, 1.0), "drain" if draining else "unexpected")

    def spawn_reconnect(self, m: Member, delay: float, why: str) -> None:
        m.busy = True
        task = asyncio.ensure_future(self.reconnect(m, delay, why))
        self.pending_reconnects.add(task)
        task.add_done_callback(self.pending_reconnects.discard)

    async def reconnect(self, m: Member, delay: float, why: str) -> None:
        t0 = mono_ns()
        try:
            deadline = mono() + 120
            while mono() < deadline:
                await asyncio.sleep(delay)
                if why == "drain":  # as a shared port or a load balancer would: any worker but the draining one
                    m.port_i = random.choice([i for i in range(len(self.t.ports)) if i != m.port_i])
                else:
                    m.port_i = (m.port_i + 1) % len(self.t.ports)  # the other worker
                if await self.dial(m):
                    self.reconnected_ns.append(mono_ns())
                    m.reconnects += 1
                    self.reconnects[why] += 1
                    self.reconnect_ms.setdefault(why, array.array("q")).append((mono_ns() - t0 - int(delay * 1e9)) // 1_000_000)
                    return
                delay = min(5.0, 2 * delay + 0.25)
            self.error("reconnect gave up after 120 s")
        finally:
            m.busy = False
            if why == "churn":
                m.churning = False

    async def churn_one(self, m: Member, abrupt: bool) -> None:
        """Close `m` (a close frame, or the TCP connection dropped), wait, resume with last_id."""
        conn = m.conn
        if conn is None or not conn.live:
            m.busy = m.churning = False
            return
        conn.closing = True
        if abrupt:
            conn.transport.disconnect(graceful=False)
        else:
            conn.transport.send_close(1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.transport.wait_disconnected(), 5)
        if not conn.transport.is_disconnected:
            self.error("close handshake not finished after 5 s")
            conn.transport.disconnect(graceful=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.transport.wait_disconnected(), 2)
        if m.conn is conn:
            m.conn = None
        m.busy = False
        self.spawn_reconnect(m, random.uniform(*self.a.reconnect_delay), "churn")

    async def churn_loop(self) -> None:
        per_s = self.a.churn * len(self.members) / 60.0
        order = list(self.members)
        random.shuffle(order)
        pos, acc, n = 0, 0.0, 0
        while not self.stopping:
            await asyncio.sleep(1.0)
            acc += per_s
            while acc >= 1.0:
                acc -= 1.0
                for _ in range(len(order)):  # the next live member in a fixed shuffled order
                    m = order[pos]
                    pos = (pos + 1) % len(order)
                    if m.live() and not m.busy:
                        m.busy = m.churning = True
                        n += 1
                        task = asyncio.ensure_future(self.churn_one(m, abrupt=n % 2 == 0))
                        self.pending_reconnects.add(task)
                        task.add_done_callback(self.pending_reconnects.discard)
                        break

    # ---- chat traffic -------------------------------------------------------------------------
    def content(self, kind: str, m: Member) -> tuple[tuple[int, int], str]:
        seq = m.seq
        m.seq += 1
        return (m.i, seq), f"{kind} {m.i} {seq} {mono_ns()} {self.pad}"

    async def chat_loop(self) -> None:
        a = self.a
        rate = a.room_rate * a.rooms
        t0 = mono()
        n = 0
        while not self.stopping:
            due = int((mono() - t0) * rate)
            while n < due:
                room = n % a.rooms
                n += 1
                m = self.pick(room)
                if m is None:
                    self.error("no live client to send from")
                    continue
                if a.rest_share and random.random() < a.rest_share:
                    if self.rest_inflight >= 50:
                        self.error("REST send skipped: 50 in flight")
                        continue
                    key, content = self.content("soakr", m)
                    self.sent[key] = room
                    self.rest_keys.add(key)
                    task = asyncio.ensure_future(self.rest_send(m, key, content))
                    self.rest_tasks.add(task)
                    task.add_done_callback(self.rest_tasks.discard)
                else:
                    key, content = self.content("soak", m)
                    self.sent[key] = room
                    frame = orjson.dumps({"type": "message", "content": content, "nonce": f"{key[0]}.{key[1]}"})
                    m.conn.transport.send(TEXT, frame)  # type: ignore[union-attr]
            await asyncio.sleep(0.02)

    def pick(self, room: int) -> Member | None:
        members = self.by_room[room]
        for _ in range(20):
            m = random.choice(members)
            if m.live() and not m.busy:
                return m
        return None

    async def rest_send(self, m: Member, key: tuple[int, int], content: str) -> None:
        self.rest_inflight += 1
        t_ns = int(content.split(" ", 4)[3])
        try:
            c = self.http[random.randrange(len(self.http))]
            r = await c.post(
                f"/api/rooms/{self.rooms[m.room]}/messages",
                json={"content": content},
                headers={"Authorization": f"Bearer {self.t.tokens[m.user]}"},
            )
            if r.status_code == 201:
                self.ack(key, t_ns)
            else:
                self.error(f"REST message HTTP {r.status_code}", r.text)
        except Exception as e:
            self.error(f"REST message {type(e).__name__}", str(e))
        finally:
            self.rest_inflight -= 1

    # ---- SSE token streams -------------------------------------------------------------------
    async def read_sse(self, reader: Any, rec: Any, timeout: float) -> None:
        """Follow one stream with `reader` (an SSEReader-like protocol) into `rec` (a Rec or TaskRec)."""
        failed = await follow_sse(reader, rec.port, mono() + timeout)
        if failed == "timeout":
            rec.error = rec.error or f"timeout after {timeout:g} s"
        elif failed is not None:
            rec.error = ": ".join(failed.split(": ", 2)[:2])  # "connect: <exception>", counted by kind

    async def sse_loop(self, slot: int) -> None:
        a, k = self.a, slot
        while not self.stopping:
            if not await self.one_stream(k):
                await asyncio.sleep(0.5)  # a worker that is down is not hammered
            k += a.sse_concurrency

    async def one_stream(self, k: int) -> bool:
        """One stream of `sse_tokens` tokens, every `sse_resume_every`th dropped half-way and resumed on the
        other worker; True when every token and `done` arrived."""
        a, ports = self.a, self.t.ports
        total = a.sse_tokens
        port_i, user = k % len(ports), k % a.users
        resume = a.sse_resume_every > 0 and k % a.sse_resume_every == 0
        cut = total // 2 if resume else None
        rec = Rec(ports[port_i], user)
        body = orjson.dumps({"message": MESSAGE, "max_tokens": total})
        req = http_request("POST", "/api/assistant/stream", rec.port, self.t.headers(user) or [], body)
        self.sse["started"] += 1
        self.sse["tokens_expected"] += total
        content = self.sse_content
        await self.read_sse(lambda fut: CutReader(req, rec, fut, total, content, cut), rec, a.sse_timeout)
        got, final = rec.tokens, rec
        if cut is not None and rec.error is None and not rec.done and rec.stream_id:
            n = rec.next
            rec2 = Rec(ports[(port_i + 1) % len(ports)], user, first=n)
            headers = [*(self.t.headers(user) or []), ("Last-Event-ID", f"{rec.stream_id}:{n}")]
            req2 = http_request("GET", f"/api/streams/{rec.stream_id}/events", rec2.port, headers)
            self.sse["resumes"] += 1
            await self.read_sse(lambda fut: SSEReader(req2, rec2, fut, total, content), rec2, a.sse_timeout)
            got += rec2.tokens
            final = rec2
            if rec2.ok(total):
                self.sse["resumes_ok"] += 1
        self.sse["tokens_received"] += got
        if final.ok(total) and got == total:
            self.sse["ok"] += 1
            return True
        self.error(f"SSE stream: {final.error or 'incomplete'}"[:120])
        return False

    # ---- tasks ------------------------------------------------------------------------------------
    async def task_loop(self, slot: int) -> None:
        a, k = self.a, slot
        while not self.stopping:
            if not await self.one_task(k):
                await asyncio.sleep(0.5)  # a worker that is down is not hammered
            k += a.task_concurrency

    async def one_task(self, k: int) -> bool:
        """POST a countdown task, follow its events on the other worker to `complete`; True when it succeeded."""
        a, ports = self.a, self.t.ports
        user = k % a.users
        c = self.http[k % len(self.http)]
        try:
            r = await c.post(
                "/api/tasks/",
                json={"kind": "countdown", "steps": a.task_steps, "interval_ms": a.task_interval_ms},
                headers={"Authorization": f"Bearer {self.t.tokens[user]}"},
            )
        except Exception as e:
            self.error(f"task POST {type(e).__name__}", str(e))
            return False
        if r.status_code != 202:
            self.error(f"task POST HTTP {r.status_code}", r.text)
            return False
        self.tasks["started"] += 1
        task_id = r.json()["id"]
        port = ports[(k + 1) % len(ports)]  # followed on the other worker
        rec = TaskRec(k, port)
        req = http_request("GET", f"/api/tasks/{task_id}/events", port, self.t.headers(user) or [])
        timeout = 2 * a.task_steps * a.task_interval_ms / 1000 + 60
        follower: list[TaskFollower] = []

        def factory(fut: asyncio.Future[None]) -> TaskFollower:
            follower.append(TaskFollower(req, rec, fut, 0, b""))
            return follower[0]

        await self.read_sse(factory, rec, timeout)
        reruns = follower[0].reruns if follower else 0
        self.tasks["reruns_seen"] += reruns
        good = {"status": "succeeded", "result": {"steps": a.task_steps}}
        if (
            rec.error is None
            and rec.done
            and rec.final == "complete"
            and rec.final_data == good
            and rec.step_next == a.task_steps + 1
        ):
            self.tasks["completed"] += 1
            self.tasks["last_completed_ns"] = mono_ns()
            return True
        why = rec.error or (
            f"ended with {rec.final} {orjson.dumps(rec.final_data).decode()[:60]}" if rec.done else "no final event"
        )
        self.error(f"task: {why}"[:120])
        return False

    # ---- RSS and CPU ----------------------------------------------------------------------------
    def sample(self, label: str = "") -> dict[str, Any]:
        s: dict[str, Any] = {
            "t_s": round((mono_ns() - self.t0_ns) / 1e9, 1) if self.t0_ns else None,
            "workers_kib": [rss_kib(p.pid) for p in self.t.procs],
            "taskworker_kib": rss_kib(self.tw.pid),
            "redis_kib": rss_kib(self.redis["proc"].pid),
            "loadgen_kib": rss_kib(os.getpid()),
            "reconnects": sum(self.reconnects.values()),
            "live_clients": sum(m.live() for m in self.members),
        }
        if label:
            s["label"] = label
            self.marks[label] = s
        self.rss.append(s)
        return s

    async def rss_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RSS_EVERY_S)
            self.sample()

    def cpu_snap(self) -> tuple[Any, ...]:
        return (
            mono(),
            [cpu_ticks(p.pid) for p in self.t.procs],
            cpu_ticks(self.tw.pid),
            cpu_ticks(self.redis["proc"].pid),
            cpu_ticks(os.getpid()),
            machine_ticks(),
        )

    @staticmethod
    def cpu(a: tuple[Any, ...], b: tuple[Any, ...]) -> dict[str, Any]:
        dt = max(b[0] - a[0], 1e-6)

        def pct(x: int, y: int) -> float:
            return round(100 * max(0, y - x) / CLK_TCK / dt, 1)

        workers = [pct(x, y) for x, y in zip(a[1], b[1], strict=True)]
        tw, rd, me = pct(a[2], b[2]), pct(a[3], b[3]), pct(a[4], b[4])
        busy = 100 * NCPU * (b[5][0] - a[5][0]) / max(1, b[5][1] - a[5][1])
        return {
            "workers_pct": workers,
            "taskworker_pct": tw,
            "redis_pct": rd,
            "loadgen_pct": me,
            "other_pct": round(max(0.0, busy - sum(workers) - tw - rd - me), 1),
            "machine_busy_pct": round(busy, 1),
        }

    # ---- faults ---------------------------------------------------------------------------------
    async def fault_loop(self, start_s: float, end_s: float) -> None:
        kinds = ["rolling_restart"] if self.a.rolling_restart else ["kill_web", "kill_taskworker", "stall_redis", "restart_redis"]
        gap = (end_s - start_s) / (len(kinds) + 1)
        t0 = mono()
        for i, kind in enumerate(kinds):
            at = start_s + gap * (i + 1)
            await asyncio.sleep(max(0.0, t0 + at - mono()))
            if self.stopping:
                return
            print(f"  fault: {kind} at {at:.0f} s", file=sys.stderr, flush=True)
            self.fault_error_marks.append(Counter(self.errors))
            try:
                self.faults.append(await getattr(self, kind)())
            except Exception as e:  # a fault that could not be injected is reported, the soak goes on
                self.faults.append({"kind": kind, "error": f"{type(e).__name__}: {e}"})
            print(f"    {self.faults[-1]}", file=sys.stderr, flush=True)

    async def recovered(self, kind: str, t_fault: int, t_done: int, cap: float = 60.0, task: bool = False) -> dict[str, Any]:
        """Time from the fault until full service: every client live again, and a chat message sent after the
        fault's action was acknowledged (and, for `task`, a task completed after it)."""
        deadline = mono() + cap
        while mono() < deadline:
            chat = self.ack_sent_ns > t_done
            clients = all(m.live() or m.churning for m in self.members)  # the churn goes on meanwhile
            tasks_ok = not task or self.tasks["last_completed_ns"] > t_done
            if chat and clients and tasks_ok:
                return {
                    "kind": kind,
                    "recovery_s": round((mono_ns() - t_fault) / 1e9, 2),
                    "action_s": round((t_done - t_fault) / 1e9, 2),
                }
            await asyncio.sleep(0.05)
        return {
            "kind": kind,
            "recovery_s": None,
            "not_recovered_after_s": cap,
            "live_clients": sum(m.live() for m in self.members),
            "chat_acked_since": self.ack_sent_ns > t_done,
        }

    async def rolling_restart(self) -> dict[str, Any]:
        """SIGTERM each web worker in turn, as an orchestrator's rolling restart does: it drains (its clients
        get 1012 spread over DRAIN_SECONDS and move to the others), exits, and is started again before the next."""
        t_fault = mono_ns()
        codes_before = Counter(self.close_codes)
        mark = len(self.reconnected_ns)
        exits, moved = [], []
        for i, old in enumerate(list(self.t.procs)):
            moved.append(sum(1 for m in self.members if m.live() and m.port_i == i))
            t0 = mono_ns()
            old.terminate()
            await asyncio.to_thread(old.wait, 60)
            exits.append(round((mono_ns() - t0) / 1e9, 2))
            new = self.procs.start(f"ours-w{i}-rolled", self.t.argv_for_port(self.t.ports[i]), self.t.env)
            await asyncio.to_thread(wait_listening, self.procs, new, self.t.ports[i], "restarted web worker", 30)
            self.t.procs[i] = new
            await asyncio.sleep(2.0)
        t_done = mono_ns()
        r = await self.recovered("rolling_restart", t_fault, t_done)
        done = sorted(self.reconnected_ns[mark:])
        per_second = Counter((t - t_fault) // 1_000_000_000 for t in done)
        waits = sorted(self.reconnect_ms.get("drain", array.array("q")))
        return {
            **r,
            "workers_exit_s": exits,
            "clients_on_each_worker": moved,
            "close_codes": dict(self.close_codes - codes_before),
            "reconnects": len(done),
            "reconnect_p50_ms": pctl_ms([w * 1_000_000 for w in waits], 0.50) if waits else None,
            "reconnect_p99_ms": pctl_ms([w * 1_000_000 for w in waits], 0.99) if waits else None,
            "peak_handshakes_per_s": max(per_second.values()) if per_second else 0,
        }

    async def kill_web(self) -> dict[str, Any]:
        i = 0
        old = self.t.procs[i]
        port = self.t.ports[i]
        affected = sum(1 for m in self.members if m.live() and m.port_i == i)
        t_fault = mono_ns()
        old.kill()
        await asyncio.to_thread(old.wait, 10)
        await asyncio.sleep(1.0)
        new = self.procs.start(f"ours-w{i}-restart", self.t.argv_for_port(port), self.t.env)
        await asyncio.to_thread(wait_listening, self.procs, new, port, "restarted web worker", 30)
        self.t.procs[i] = new
        t_done = mono_ns()
        r = await self.recovered("kill_web", t_fault, t_fault)
        return {**r, "clients_on_killed_worker": affected, "worker_back_s": round((t_done - t_fault) / 1e9, 2)}

    async def kill_taskworker(self) -> dict[str, Any]:
        t_fault = mono_ns()
        self.tw.kill()
        await asyncio.to_thread(self.tw.wait, 10)
        await asyncio.sleep(1.0)
        self.tw = await asyncio.to_thread(start_taskworker, self.procs, self.t.env, self.a.task_worker_concurrency)
        t_done = mono_ns()
        return await self.recovered("kill_taskworker", t_fault, t_done, task=True)

    async def stall_redis(self) -> dict[str, Any]:
        pid = self.redis["proc"].pid
        t_fault = mono_ns()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.a.stall_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        t_done = mono_ns()
        return {**await self.recovered("stall_redis", t_fault, t_done), "stall_s": self.a.stall_s}

    async def restart_redis(self) -> dict[str, Any]:
        old = self.redis["proc"]
        t_fault = mono_ns()
        old.kill()  # no persistence: everything in Redis is gone, as after a crash of a cache-only Redis
        await asyncio.to_thread(old.wait, 10)
        await asyncio.sleep(1.0)
        new = self.procs.start("redis-restart", self.redis["argv"], dict(os.environ))
        await asyncio.to_thread(wait_listening, self.procs, new, self.redis["port"], "restarted redis-server", 10)
        self.redis["proc"] = new
        t_done = mono_ns()
        return await self.recovered("restart_redis", t_fault, t_done)

    # ---- the run --------------------------------------------------------------------------------
    closing_all = False

    async def run(self) -> dict[str, Any]:
        a = self.a
        out: dict[str, Any] = {}
        self.http = [httpx.AsyncClient(base_url=f"http://{HOST}:{p}", timeout=30, trust_env=False) for p in self.t.ports]
        self.sample("start")
        cpu0 = self.cpu_snap()
        print(f"  connecting {len(self.members)} clients ...", file=sys.stderr, flush=True)
        out["connect"] = await self.connect_all()
        self.sample("connected")
        print(f"  connected in {out['connect']['connect_s']} s; soak for {a.duration:g} s", file=sys.stderr, flush=True)
        self.t0_ns = mono_ns()
        t_start = mono()
        loops = [
            asyncio.ensure_future(self.chat_loop()),
            asyncio.ensure_future(self.churn_loop()),
            asyncio.ensure_future(self.rss_loop()),
            *(asyncio.ensure_future(self.sse_loop(i)) for i in range(a.sse_concurrency)),
            *(asyncio.ensure_future(self.task_loop(i)) for i in range(a.task_concurrency)),
        ]
        if a.faults or a.rolling_restart:
            loops.append(asyncio.ensure_future(self.fault_loop(a.warmup, a.duration - 20)))
        warm_marked = False
        next_progress = t_start + 30
        try:
            while mono() - t_start < a.duration:
                await asyncio.sleep(0.5)
                for f in loops:
                    if f.done() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                if not warm_marked and mono() - t_start >= a.warmup:
                    warm_marked = True
                    self.sample("warm")
                    cpu_warm = self.cpu_snap()
                if mono() >= next_progress:
                    next_progress += 30
                    w = self.windows.get(int((mono_ns() - self.t0_ns) / (WINDOW_S * 1e9)) - 1)
                    s = self.rss[-1] if self.rss else {}
                    print(
                        f"  {mono() - t_start:5.0f} s: sent {len(self.sent):,} acked {len(self.acked):,}"
                        f" reconnects {dict(self.reconnects)} p99 last window {pctl_ms(sorted(w), 0.99) if w else '-'} ms"
                        f" RSS MiB {[round(x / 1024) if x else None for x in s.get('workers_kib', [])]}"
                        f" sse {self.sse['ok']}/{self.sse['started']} tasks {self.tasks['completed']}/{self.tasks['started']}"
                        f" errors {sum(self.errors.values())}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            self.stopping = True
        t_end_traffic = mono()
        self.errors_at_end = Counter(self.errors)
        if not warm_marked:
            self.sample("warm")
            cpu_warm = self.cpu_snap()
        cpu_end = self.cpu_snap()
        # Drain: the streams and tasks finish, the reconnects under way finish, then nothing arrives for 2 s.
        await asyncio.wait(loops, timeout=max(a.sse_timeout, 2 * a.task_steps * a.task_interval_ms / 1000 + 30) + 5)
        for f in loops:
            f.cancel()
        if self.pending_reconnects:
            await asyncio.wait(set(self.pending_reconnects), timeout=60)
        await self.quiesce()
        self.sample("end")
        out["drain_s"] = round(mono() - t_end_traffic, 1)
        out["history"] = await self.history()
        out["accounting"] = self.account(out["history"].pop("rows"))
        await self.close_all()
        await asyncio.sleep(a.after_close_wait)
        self.sample("after_close")
        for c in self.http:
            await c.aclose()
        out["cpu_soak"] = self.cpu(cpu0, cpu_end) if a.faults else self.cpu(cpu_warm, cpu_end)
        out["cpu_whole"] = self.cpu(cpu0, cpu_end) if not a.faults else None
        out.update(self.report_tail())
        return out

    async def quiesce(self, quiet_s: float = 2.0, cap_s: float = 30.0) -> None:
        last = len(self.lat_all), sum(len(m.ids) for m in self.members)
        t_quiet = mono()
        deadline = mono() + cap_s
        while mono() < deadline and mono() - t_quiet < quiet_s:
            await asyncio.sleep(0.25)
            now = len(self.lat_all), sum(len(m.ids) for m in self.members)
            if now != last:
                last, t_quiet = now, mono()

    async def close_all(self) -> None:
        self.closing_all = True
        open_ = [m.conn for m in self.members if m.conn is not None]
        for c in open_:
            c.closing = True
            if not c.transport.is_close_frame_sent:
                c.transport.send_close(1000)
        if open_:
            await asyncio.wait([asyncio.ensure_future(c.transport.wait_disconnected()) for c in open_], timeout=10)
        for c in open_:
            if not c.transport.is_disconnected:
                c.transport.disconnect(graceful=False)

    async def history(self) -> dict[str, Any]:
        """Every room's messages over the API (`after=` paging): [(id, key or None)] per room."""
        headers = {"Authorization": f"Bearer {self.t.tokens[0]}"}
        rows: list[list[tuple[int, tuple[int, int] | None, str]]] = []
        t0 = mono()
        pages = 0
        c = self.http[-1]
        for slug in self.rooms:
            after, room_rows = 0, []
            for _ in range(len(self.sent) // 200 + 100):  # bounded
                r = await c.get(f"/api/rooms/{slug}/messages", params={"after": after, "limit": 200}, headers=headers)
                if r.status_code != 200:
                    raise BenchError(f"history of {slug}: HTTP {r.status_code} {r.text[:200]}")
                pages += 1
                page = r.json()["messages"]
                if not page:
                    break
                for msg in page:
                    parts = msg["content"].split(" ", 4)
                    key = None
                    if len(parts) >= 4 and parts[0] in ("soak", "soakr"):
                        with contextlib.suppress(ValueError):
                            key = (int(parts[1]), int(parts[2]))
                    room_rows.append((msg["id"], key, parts[0]))
                after = page[-1]["id"]
            rows.append(room_rows)
        return {"rows": rows, "pages": pages, "s": round(mono() - t0, 1)}

    def account(self, rows: list[list[tuple[int, tuple[int, int] | None, str]]]) -> dict[str, Any]:
        rooms: list[dict[str, Any]] = []
        lost_samples: list[dict[str, Any]] = []
        for r, room_rows in enumerate(rows):
            ids = [row[0] for row in room_rows]
            if ids != sorted(ids) or len(set(ids)) != len(ids):
                self.error("history not ascending or with repeated ids")
            key_of = {row[0]: row[1] for row in room_rows}
            stored_keys = {row[1] for row in room_rows if row[1] is not None}
            sent = {k for k, room in self.sent.items() if room == r}
            acked = sent & self.acked
            acked_ids = {i for i, k in key_of.items() if k in acked}
            room_ids = set(ids)
            st = Counter[str](
                sent=len(sent),
                sent_rest=len(sent & self.rest_keys),
                acked=len(acked),
                stored=len(room_rows),
                stored_foreign=sum(1 for row in room_rows if row[1] is None or row[1] not in sent),
                acked_not_stored=len(acked - stored_keys),
                stored_not_acked=len(stored_keys - acked),
            )
            for m in self.by_room[r]:
                if m.join_id is None:
                    st["clients_never_joined"] += 1
                    continue
                st["clients"] += 1
                start = bisect.bisect_right(ids, m.join_id)
                expected = ids[start:]
                for lo, hi in m.excused:
                    expected = [i for i in expected if not lo < i < hi]
                missing = [i for i in expected if i not in m.ids]
                st["expected"] += len(expected)
                st["delivered"] += len(expected) - len(missing)
                st["dups"] += m.dups
                st["reordered"] += m.reordered
                st["phantom"] += len(m.ids - room_ids)  # an id received that the room's history does not have
                if missing:
                    if not m.live():
                        st["missing_client_not_connected_at_end"] += len(missing)
                        continue
                    lost = [i for i in missing if i in acked_ids]
                    st["lost"] += len(lost)
                    st["missed_unacked"] += len(missing) - len(lost)
                    if len(lost_samples) < 20:
                        lost_samples.append(
                            {
                                "room": self.rooms[r],
                                "client": m.i,
                                "join_id": m.join_id,
                                "reconnects": m.reconnects,
                                "missing": missing[:10],
                            }
                        )
            rooms.append({"room": self.rooms[r], **st})
        keys = (
            "sent",
            "sent_rest",
            "acked",
            "stored",
            "stored_foreign",
            "acked_not_stored",
            "stored_not_acked",
            "clients",
            "clients_never_joined",
            "expected",
            "delivered",
            "lost",
            "missed_unacked",
            "missing_client_not_connected_at_end",
            "dups",
            "reordered",
            "phantom",
        )
        total: dict[str, int] = {k: sum(int(room.get(k, 0)) for room in rooms) for k in keys}
        total["unacked_not_stored"] = total["sent"] - total["acked"] - total["stored_not_acked"]
        return {**total, "gap_missed": self.gap_missed, "lost_samples": lost_samples, "rooms": rooms}

    def report_tail(self) -> dict[str, Any]:
        a = self.a
        marks = [*self.fault_error_marks, self.errors_at_end]
        for i, f in enumerate(self.faults):  # what clients saw from each fault until the next one (or the end)
            f["errors_until_next"] = dict(marks[i + 1] - marks[i]) if i + 1 < len(marks) else {}
        windows = []
        for w in sorted(self.windows):
            lat = sorted(self.windows[w])
            windows.append(
                {
                    "from_s": int(w * WINDOW_S),
                    "deliveries": len(lat),
                    "p50_ms": pctl_ms(lat, 0.5),
                    "p99_ms": pctl_ms(lat, 0.99),
                    "max_ms": pctl_ms(lat, 1.0),
                }
            )
        lat = sorted(self.lat_all)
        mk = self.marks

        def mib(kib: int | None) -> float | None:
            return round(kib / 1024, 1) if kib else None

        rss: dict[str, Any] = {}
        for label in ("start", "connected", "warm", "end", "after_close"):
            s = mk.get(label, {})
            rss[label] = {
                "workers_mib": [mib(x) for x in s.get("workers_kib", [])],
                "taskworker_mib": mib(s.get("taskworker_kib")),
                "redis_mib": mib(s.get("redis_kib")),
                "loadgen_mib": mib(s.get("loadgen_kib")),
                "reconnects": s.get("reconnects"),
            }
        growth: dict[str, Any] = {}
        warm, end = mk.get("warm", {}), mk.get("end", {})
        if warm and end and not a.faults:
            w_kib = [x or 0 for x in warm["workers_kib"]]
            e_kib = [x or 0 for x in end["workers_kib"]]
            recon = end["reconnects"] - warm["reconnects"]
            growth = {
                "workers_pct": [round(100 * (e - w) / w, 2) if w else None for w, e in zip(w_kib, e_kib, strict=True)],
                "workers_total_pct": round(100 * (sum(e_kib) - sum(w_kib)) / max(1, sum(w_kib)), 2),
                "reconnects_after_warm": recon,
                "mib_per_1000_reconnects": round((sum(e_kib) - sum(w_kib)) / 1024 / (recon / 1000), 2) if recon else None,
                "taskworker_pct": round(
                    100 * ((end["taskworker_kib"] or 0) - (warm["taskworker_kib"] or 0)) / max(1, warm["taskworker_kib"] or 1), 2
                ),
                "redis_pct": round(
                    100 * ((end["redis_kib"] or 0) - (warm["redis_kib"] or 0)) / max(1, warm["redis_kib"] or 1), 2
                ),
            }
        return {
            "latency": {
                "deliveries": len(lat),
                "p50_ms": pctl_ms(lat, 0.5),
                "p99_ms": pctl_ms(lat, 0.99),
                "max_ms": pctl_ms(lat, 1.0),
            },
            "windows": windows,
            "reconnects": dict(self.reconnects),
            # From the close (or the drop) to ready again, less the client's own wait before its first dial.
            "reconnect_ms": {
                why: {
                    "p50": pctl_ms([x * 1_000_000 for x in sorted(v)], 0.5),
                    "p99": pctl_ms([x * 1_000_000 for x in sorted(v)], 0.99),
                    "max": max(v),
                }
                for why, v in self.reconnect_ms.items()
            },
            "failed_dials": self.failed_dials,
            "rss": rss,
            "rss_growth_after_warm": growth,
            "rss_timeline": self.rss,
            "sse": dict(self.sse),
            "tasks": {k: v for k, v in self.tasks.items() if k != "last_completed_ns"},
            "errors": dict(self.errors.most_common()),
            "error_samples": self.error_samples,
            "faults": self.faults,
        }


class TaskFollower(TaskReader):
    """bench/tasks.py's task event reader (ids consecutive from 1, then `complete` or `failed`) that lets the
    countdown start over at step 1: a task whose worker died is run again once its lease expires."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reruns = 0

    def events(self, data: bytes, now: int) -> None:
        rec = self.rec
        if rec.step_next > 1 and STEP_ONE.search((self.tail or b"") + data):
            self.reruns += 1
            rec.step_next = 1
        super().events(data, now)


class CutReader(SSEReader):
    """bench/sse.py's SSE reader that drops the connection after `cut` tokens (None: reads to `done`)."""

    def __init__(self, req: bytes, rec: Rec, fut: asyncio.Future[None], total: int, content: bytes, cut: int | None) -> None:
        super().__init__(req, rec, fut, total, content)
        self.cut = cut

    def events(self, data: bytes, now: int) -> None:
        super().events(data, now)
        if self.cut is not None and not self.rec.done and self.rec.tokens >= self.cut and not self.fut.done():
            self.end()


# ------------------------------------------------------------------ set-up


def run(a: argparse.Namespace, tmp: Path, procs: Procs) -> list[dict[str, Any]]:
    rproc, redis_url, rcli = start_redis(procs, tmp)
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    env = ours_env(
        tmp,
        redis_url,
        LLM_BACKEND="echo",
        LLM_TOKEN_DELAY_MS=str(a.sse_delay_ms),
        LLM_MAX_CONCURRENT="100000",
        LLM_MAX_CONCURRENT_PER_USER="100000",
        TASKS_MAX_ACTIVE_PER_USER="100000",  # per-user caps meant for abuse, out of the way as the chat limits are
    )
    env.pop("LLM_TOKENS_PER_DAY", None)
    t = Target("ours", f"the project, {a.server}", env, asgi_argv(a.server, "config.asgi:application", backlog=BACKLOG), True)
    t0 = mono()
    print(
        f"## soak: {a.clients} clients in {a.rooms} rooms, {a.workers} {a.server} workers, {a.duration:g} s",
        file=sys.stderr,
        flush=True,
    )
    ours_prepare(t, users=a.users)
    t.start(procs, a.workers)
    tw = start_taskworker(procs, env, a.task_worker_concurrency)
    ours_create_rooms(t, [f"soak-{i}" for i in range(a.rooms)])
    res: dict[str, Any] = {"target": t.name, "desc": t.desc, "ports": t.ports, "uptime_before": uptime()}
    redis = {"proc": rproc, "port": redis_port, "argv": redis_argv(redis_port, tmp)}
    soak = Soak(a, procs, t, tw, redis)
    try:
        budget = a.duration + 600
        res.update(uvloop.run(asyncio.wait_for(soak.run(), budget)))
        if res["accounting"]["lost"] or res["errors"]:
            res["log_tails"] = {f"w{i}": procs.tail(p, 30) for i, p in enumerate(t.procs)}
            res["log_tails"]["taskworker"] = procs.tail(soak.tw, 30)
    finally:
        procs.stop([soak.tw, *t.procs])
        with contextlib.suppress(Exception):
            rcli.flushall()
        rcli.close()
    res["uptime_after"] = uptime()
    res["wall_s"] = round(mono() - t0, 1)
    return [res]


def uptime() -> str:
    load = os.getloadavg()
    return f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


# ------------------------------------------------------------------ report


def goal(r: dict[str, Any]) -> tuple[bool, list[str]]:
    acc, growth = r["accounting"], r.get("rss_growth_after_warm") or {}
    misses = []
    if acc["lost"] or acc["acked_not_stored"]:
        misses.append(f"{acc['lost']:,} lost, {acc['acked_not_stored']:,} acknowledged but not stored")
    if acc["dups"]:
        misses.append(f"{acc['dups']:,} duplicated")
    if growth and growth["workers_total_pct"] >= GOAL_RSS_PCT:
        misses.append(f"worker RSS grew {growth['workers_total_pct']} % after warm-up")
    return not misses, misses


def table(a: argparse.Namespace, r: dict[str, Any]) -> str:
    acc = r["accounting"]
    lat = r["latency"]
    rss = r["rss"]
    growth = r.get("rss_growth_after_warm") or {}
    sse, tasks = r["sse"], r["tasks"]
    cpu = r["cpu_soak"]

    def mibs(label: str) -> str:
        return " / ".join(fmt(x, 0) for x in rss[label]["workers_mib"]) or "-"

    rows: list[tuple[str, ...]] = [
        (
            "set-up",
            f"{a.clients:,} clients in {a.rooms} rooms ({a.users} users), {a.workers} {a.server} workers"
            f" + task worker, {a.duration:g} s",
        ),
        ("connect", f"{r['connect']['connect_s']} s for all clients ({r['connect']['failed_dials']} failed dials, re-dialled)"),
        ("chat sent", f"{acc['sent']:,} ({a.room_rate:g} msg/s per room; {acc['sent_rest']:,} over REST)"),
        ("acknowledged", f"{acc['acked']:,} (echo or 201); not acknowledged: {acc['sent'] - acc['acked']:,}"),
        (
            "persisted",
            f"{acc['stored']:,} rows; acknowledged but not stored: {acc['acked_not_stored']:,};"
            f" stored, not acknowledged: {acc['stored_not_acked']:,}",
        ),
        (
            "deliveries expected / delivered",
            f"{acc['expected']:,} / {acc['delivered']:,} ({acc['clients']:,} clients, each every message after it joined)",
        ),
        ("**LOST** (acknowledged, never delivered)", f"**{acc['lost']:,}**"),
        ("missed (stored, not acknowledged)", f"{acc['missed_unacked']:,}"),
        ("**DUPLICATED** (an id twice to one client)", f"**{acc['dups']:,}**"),
        ("reordered (an id below one already received)", f"{acc['reordered']:,}"),
        *([("ids received that the history lacks", f"{acc['phantom']:,}")] if acc["phantom"] else []),
        *(
            [("missing at clients not connected at the end", f"{acc['missing_client_not_connected_at_end']:,}")]
            if acc["missing_client_not_connected_at_end"]
            else []
        ),
        ("gap frames / messages they left out", f"{r['errors'].get('gap frame', 0):,} / {acc['gap_missed']:,}"),
        (
            "reconnects",
            f"{sum(r['reconnects'].values()):,} ({', '.join(f'{k} {v:,}' for k, v in r['reconnects'].items()) or '-'});"
            " resume to ready "
            + "; ".join(f"{k} p50 {fmt(v['p50'], 0)} ms, p99 {fmt(v['p99'], 0)} ms" for k, v in r["reconnect_ms"].items()),
        ),
        (
            "delivery latency",
            f"p50 {fmt(lat['p50_ms'], 1)} ms, p99 {fmt(lat['p99_ms'], 1)} ms, max {fmt(lat['max_ms'], 0)} ms"
            f" over {lat['deliveries']:,} live deliveries",
        ),
        ("p99 ms per 30 s window", " · ".join(fmt(w["p99_ms"], 0) for w in r["windows"]) or "-"),
        (
            "worker RSS MiB: start / connected / after warm-up / end / all closed",
            " → ".join(mibs(x) for x in ("start", "connected", "warm", "end", "after_close")),
        ),
    ]
    if growth:
        # Too few reconnects make the per-1,000 figure an extrapolation of noise.
        enough = growth["reconnects_after_warm"] >= 200
        per_1000 = f"{growth['mib_per_1000_reconnects']:+.2f} MiB" if enough else "too few to say:"
        rows.append(
            (
                "RSS growth after warm-up",
                f"workers {growth['workers_total_pct']:+.2f} %"
                f" ({' / '.join(f'{x:+.2f} %' for x in growth['workers_pct'] if x is not None)}),"
                f" per 1,000 reconnects {per_1000} ({growth['reconnects_after_warm']:,} reconnects);"
                f" task worker {growth['taskworker_pct']:+.1f} %, Redis {growth['redis_pct']:+.1f} %",
            )
        )
    rows += [
        (
            "SSE streams (echo)",
            f"{sse.get('ok', 0):,} / {sse.get('started', 0):,} complete;"
            f" tokens {sse.get('tokens_received', 0):,} / {sse.get('tokens_expected', 0):,};"
            f" resumed on the other worker {sse.get('resumes_ok', 0):,} / {sse.get('resumes', 0):,}",
        ),
        ("tasks (countdown)", f"{tasks.get('completed', 0):,} / {tasks.get('started', 0):,} completed"),
        ("errors by kind", ", ".join(f"{k}: {v:,}" for k, v in r["errors"].items()) or "none"),
        (
            "CPU % (100 = a core)",
            f"workers {' / '.join(fmt(x, 0) for x in cpu['workers_pct'])}, task worker {fmt(cpu['taskworker_pct'], 0)},"
            f" Redis {fmt(cpu['redis_pct'], 0)}, load generator {fmt(cpu['loadgen_pct'], 0)}, other {fmt(cpu['other_pct'], 0)}",
        ),
        ("machine load", f"before: {r['uptime_before']}; after: {r['uptime_after']}"),
    ]
    for f in r["faults"]:
        rec = f"recovered in {f['recovery_s']} s" if f.get("recovery_s") is not None else f"NOT recovered: {f.get('error') or f}"
        rows.append((f"fault {f['kind']}", rec))
    ok, misses = goal(r)
    verdict = "met" if ok else "NOT met: " + "; ".join(misses)
    rows.append(("goal (0 lost, 0 duplicated, RSS growth < 5 % after warm-up)", verdict))
    return md_table(("", ""), rows)


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of traffic (default 300)")
    ap.add_argument("--warmup", type=float, help="seconds of traffic before the warm RSS sample (default min(60, duration/4))")
    ap.add_argument("--workers", "-w", type=int, default=2, help="web workers")
    ap.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    ap.add_argument("--clients", type=int, default=2000, help="WebSocket clients in all")
    ap.add_argument("--rooms", type=int, default=50)
    ap.add_argument("--users", type=int, default=200, help="users (bearer tokens); client i is user i %% users")
    ap.add_argument("--room-rate", type=float, default=1.0, help="chat messages per second per room")
    ap.add_argument("--rest-share", type=float, default=0.05, help="share of the messages sent over REST (POST, 201)")
    ap.add_argument("--content-len", type=int, default=80, help="characters of message content (at least ~40)")
    ap.add_argument("--churn", type=float, default=0.10, help="share of the clients closed and resumed every minute")
    ap.add_argument(
        "--reconnect-delay",
        type=float,
        nargs=2,
        default=(0.2, 2.0),
        metavar=("MIN", "MAX"),
        help="seconds between a churn close and the resume",
    )
    ap.add_argument("--sse-concurrency", type=int, default=2, help="SSE token streams running at once")
    ap.add_argument("--sse-tokens", type=int, default=200, help="max_tokens of each stream")
    ap.add_argument("--sse-delay-ms", type=int, default=10, help="LLM_TOKEN_DELAY_MS of the echo backend")
    ap.add_argument(
        "--sse-resume-every",
        type=int,
        default=2,
        help="every Nth stream is dropped half-way and resumed on the other worker (0: none)",
    )
    ap.add_argument("--sse-timeout", type=float, default=60.0)
    ap.add_argument("--task-concurrency", type=int, default=2, help="countdown tasks running at once")
    ap.add_argument("--task-steps", type=int, default=10)
    ap.add_argument("--task-interval-ms", type=int, default=200)
    ap.add_argument("--task-worker-concurrency", type=int, default=16)
    ap.add_argument(
        "--faults",
        action="store_true",
        help="kill and restart a web worker, the task worker and Redis, stall Redis; time the recoveries",
    )
    ap.add_argument("--stall-s", type=float, default=5.0, help="seconds Redis is stopped (SIGSTOP) with --faults")
    ap.add_argument(
        "--rolling-restart",
        action="store_true",
        help="instead of --faults: SIGTERM and restart each web worker in turn (its drain, docs/reliability.md); time it",
    )
    ap.add_argument(
        "--after-close-wait", type=float, default=5.0, help="seconds after closing every client before the last RSS sample"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (database, logs); kept anyway on failure")
    a = ap.parse_args()
    if a.warmup is None:
        a.warmup = min(60.0, a.duration / 4)
    if not (
        a.duration > 0 and a.workers >= 1 and a.rooms >= 1 and a.clients >= a.rooms and a.users >= 1 and 0 <= a.rest_share <= 1
    ):
        ap.error("need duration > 0, workers >= 1, clients >= rooms >= 1, users >= 1, 0 <= rest-share <= 1")
    if (a.faults or a.rolling_restart) and (a.workers < 2 or a.duration < 120):
        ap.error("--faults and --rolling-restart need at least 2 workers (clients move to the others) and --duration >= 120")
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (make soak installs it with apt)")
    random.seed(a.seed)

    status, doc, out = session(a, "soak", lambda tmp, procs: run(a, tmp, procs))
    if out is None:
        return status
    r = doc["targets"][0]
    print(
        f"\n### soak {doc['timestamp']}: {a.clients:,} clients, {a.rooms} rooms, {a.duration:g} s"
        f"{', with faults' if a.faults else ''}\n"
    )
    print(table(a, r))
    print(f"\nJSON: {shown(out)}  (wall {doc['wall_s']:.0f} s)")
    _, misses = goal(r)
    acc = r["accounting"]
    if acc["lost"] or acc["acked_not_stored"] or acc["dups"]:
        print(f"soak: FAIL: {'; '.join(misses)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
