#!/usr/bin/env python3
"""Task event-stream benchmark: T concurrent countdown tasks, each followed over SSE, on W web workers and one task worker.

One run starts a private redis-server, the project's W web workers on free loopback ports and one
`manage.py taskworker`, then starts T `countdown` tasks (`POST /api/tasks/`, paced over --ramp
seconds, round-robin over the workers) and reads each task's `GET /api/tasks/<id>/events` right
after its POST, to the final event. Beside the SSE readers, a child process follows every task's log
in Redis (`log:task:<id>`, `XREAD BLOCK`, a connection per task) and takes the kernel's receive
timestamp of each reply as the entry's write time, so latency = SSE arrival - Redis-reader arrival
of the same (task, seq). Prints one markdown table and writes the JSON to
bench/results/<UTC timestamp>_tasks.json.
Loopback only; every wait is bounded; every process started here is stopped at the end, also on
Ctrl-C or an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvloop
from common import (
    CLK_TCK,
    HOST,
    NCPU,
    PY,
    ROOT,
    BenchError,
    Procs,
    Target,
    _die_with_parent,
    asgi_argv,
    cpu_ticks,
    fmt,
    machine_ticks,
    md_table,
    mono,
    ours_env,
    ours_prepare,
    pctl_ms,
    session,
    shown,
    start_redis,
)
from sse import BACKLOG, SSEReader, follow_sse, http_request

EVENT_RE = re.compile(rb"event: (\w{1,40})\ndata: ([^\n]*)\nid: (\d{1,12})\n\n")
STEP_RE = re.compile(r"step (\d+) of (\d+)")
FINAL = ("complete", "failed")
wall_ns = time.time_ns  # every time of a round: CLOCK_REALTIME, as the kernel's receive timestamps
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same number
GOAL_P99_MS = 50.0
GOAL_EVENTS_S = 2000.0


# ------------------------------------------------------------------ records


class TaskRec:
    """One task: its POST, what its SSE stream delivered and when, and what the Redis reader saw and when."""

    __slots__ = (
        "done",
        "error",
        "final",
        "final_data",
        "i",
        "next",
        "port",
        "redis_backlog",
        "redis_kind",
        "redis_t",
        "sse_kind",
        "sse_step",
        "sse_t",
        "status",
        "step_next",
        "stream_id",
        "t_head",
        "t_post",
        "t_post_done",
        "t_req",
        "task_id",
        "tokens",
    )

    def __init__(self, i: int, port: int) -> None:
        self.i, self.port = i, port
        self.task_id = 0
        self.status = self.t_req = self.t_head = self.t_post = self.t_post_done = self.tokens = 0
        self.stream_id = ""
        self.done = False
        self.error: str | None = None
        self.next = self.step_next = 1  # the next SSE id, the next countdown step
        self.final = ""
        self.final_data: Any = None
        self.sse_t: dict[int, int] = {}  # seq -> arrival at the SSE reader (wall_ns)
        self.sse_kind: dict[int, str] = {}
        self.sse_step: dict[int, int] = {}  # seq -> countdown step i of "step i of N"
        self.redis_t: dict[int, int] = {}  # seq -> arrival at the Redis reader (kernel, wall ns), live entries only
        self.redis_kind: dict[int, str] = {}  # seq -> kind, every entry the Redis reader saw
        self.redis_backlog = 0  # entries in the first reply for the key: maybe written before, no write time

    def problem(self, steps: int) -> str | None:
        """The first thing wrong with this task, or None."""
        if self.error:
            return self.error
        if not self.done:
            return "no final event"
        if self.final != "complete":
            return f"ended with {self.final} {orjson.dumps(self.final_data).decode()[:80]}"
        if self.final_data != {"status": "succeeded", "result": {"steps": steps}}:
            return f"complete with {orjson.dumps(self.final_data).decode()[:80]}"
        if self.step_next != steps + 1:
            return f"{self.step_next - 1} of {steps} steps before complete"
        if self.redis_kind != self.sse_kind:
            missing = sorted(set(self.redis_kind) - set(self.sse_kind))[:3]
            extra = sorted(set(self.sse_kind) - set(self.redis_kind))[:3]
            return f"SSE events differ from the Redis log (missing {missing}, not in the log {extra})"
        return None


class TaskReader(SSEReader):
    """bench/sse.py's raw HTTP/1.1 SSE client (chunked coding undone, events cut at blank lines), reading
    task events: ids consecutive from 1, countdown steps 1..N in order, then `complete` or `failed`."""

    rec: TaskRec

    def data_received(self, data: bytes) -> None:
        self.wall = wall_ns()  # the clock of the Redis reader's kernel timestamps
        before = self.in_body
        super().data_received(data)
        if self.in_body and not before and not self.rec.t_head:
            self.rec.t_head = self.wall

    def events(self, data: bytes, now: int) -> None:
        now = self.wall
        s = self.tail + data if self.tail else data
        cut = s.rfind(b"\n\n")
        if cut < 0:
            self.tail = s
            return
        block, self.tail = s[: cut + 2], s[cut + 2 :]
        rec = self.rec
        found = 0
        for m in EVENT_RE.finditer(block):
            found += 1
            kind, seq = m[1].decode(), int(m[3])
            if seq != rec.next:
                self.fail(f"SSE id {seq} where {rec.next} was expected")
                return
            rec.next = seq + 1
            rec.tokens += 1
            rec.sse_t[seq], rec.sse_kind[seq] = now, kind
            try:
                payload = orjson.loads(m[2])
            except orjson.JSONDecodeError:
                payload = None
            if not isinstance(payload, dict):
                self.fail(f"event {seq}: data is not a JSON object")
                return
            if kind == "progress":
                step = STEP_RE.fullmatch(str(payload.get("message", "")))
                if step:
                    if int(step[1]) != rec.step_next:
                        self.fail(f"step {step[1]} where {rec.step_next} was expected")
                        return
                    rec.sse_step[seq] = rec.step_next
                    rec.step_next += 1
            elif kind in FINAL:
                rec.done, rec.final, rec.final_data = True, kind, payload
                self.end()
                return
            else:
                self.fail(f"unexpected event {kind!r}")
                return
        if block.count(b"event: ") != found:
            self.fail("an event that does not parse")


class Incomplete(Exception):
    """The buffer ends inside a RESP reply."""


def resp(buf: bytes, i: int = 0) -> tuple[Any, int]:
    """One RESP2 value of `buf` from `i`: (value, the index after it); an error reply raises RuntimeError."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        raise Incomplete
    kind, line, i = buf[i : i + 1], buf[i + 1 : j], j + 2
    if kind == b"*":
        n = int(line)
        out = []
        for _ in range(n):
            value, i = resp(buf, i)
            out.append(value)
        return (out if n >= 0 else None), i
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, i
        if len(buf) < i + n + 2:
            raise Incomplete
        return buf[i : i + n], i + n + 2
    if kind in (b"+", b":"):
        return line, i
    raise RuntimeError(line.decode(errors="replace")[:200])


def xread(key: bytes, after: bytes) -> bytes:
    args = (b"XREAD", b"BLOCK", b"5000", b"STREAMS", key, after)
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def redis_reader_main(port: int) -> None:
    """The Redis side, a process of its own (`--redis-reader PORT`, started by `RedisSide`): follows each
    task's log `log:task:<id>` on a connection of its own with `XREAD BLOCK`, and takes as an entry's time
    the kernel's receive timestamp of the reply that carried it (SO_TIMESTAMPNS, CLOCK_REALTIME): the
    moment Redis pushed the entry, whatever the scheduling of this process. One connection per task, so
    that no entry is written while its connection waits for the reader (a multi-key XREAD would be
    "blind" between a reply and the next call). Entries of the first reply for a key may have been
    written before the call: they get no time (0).

    stdin: a task id a line, then `end`; stdout: `ready`, then at the end one JSON object
    {"tasks": {id: [[seq, kind, arrival ns or 0], ...]}, "conns", "no_timestamp", "errors"}."""
    with contextlib.suppress(OSError):  # the instrument first, when allowed (root)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    sel.register(stdin, selectors.EVENT_READ, None)
    seen: dict[int, list[list[Any]]] = {}
    open_conns: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    pending = b""
    no_ts = 0
    ended_at = 0.0
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()

    def follow(task_id: int) -> None:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        c = {
            "id": task_id,
            "sock": sock,
            "key": f"log:task:{task_id}".encode(),
            "after": b"0-0",
            "buf": b"",
            "t": 0,
            "first": True,
        }
        seen[task_id] = []
        open_conns[task_id] = c
        sel.register(sock, selectors.EVENT_READ, c)
        sock.sendall(xread(c["key"], c["after"]))

    def close(c: dict[str, Any]) -> None:
        sel.unregister(c["sock"])
        c["sock"].close()
        open_conns.pop(c["id"], None)

    def received(c: dict[str, Any]) -> None:
        nonlocal no_ts
        data, anc, _flags, _addr = c["sock"].recvmsg(1 << 20, 64)
        if not data:
            errors.append(f"task {c['id']}: Redis closed the connection")
            close(c)
            return
        if not c["buf"]:  # the first bytes of a reply: its time
            c["t"] = 0
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    c["t"] = sec * 1_000_000_000 + nsec
            no_ts += not c["t"]
        c["buf"] += data
        try:
            reply, end = resp(c["buf"])
        except Incomplete:
            return
        c["buf"] = c["buf"][end:]
        t = 0 if c["first"] else c["t"]
        c["first"] = False
        final = False
        for _key, entries in reply or []:
            for eid, fields in entries:
                c["after"] = eid
                for seq, kind, _data in orjson.loads(dict(zip(fields[::2], fields[1::2], strict=True))[b"e"]):
                    seen[c["id"]].append([seq, kind, t])
                    final = final or kind in FINAL
        if final:
            close(c)
        else:
            c["sock"].sendall(xread(c["key"], c["after"]))

    while not ended_at or (open_conns and time.monotonic() - ended_at < 3):  # logs end before their SSE readers see it
        for key, _mask in sel.select(timeout=0.1):
            if key.data is not None:
                try:
                    received(key.data)
                except (OSError, RuntimeError, ValueError) as e:
                    errors.append(f"task {key.data['id']}: {type(e).__name__}: {e}"[:200])
                    close(key.data)
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                chunk = b"end\n"
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line == b"end":
                    ended_at = ended_at or time.monotonic()
                    sel.unregister(stdin)
                    break
                try:
                    follow(int(line))
                except (OSError, ValueError) as e:
                    errors.append(f"task {line[:20]!r}: {type(e).__name__}: {e}"[:200])
    for c in list(open_conns.values()):
        close(c)
    doc = {"tasks": seen, "conns": len(seen), "nice": os.getpriority(os.PRIO_PROCESS, 0), "no_timestamp": no_ts, "errors": errors}
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.buffer.flush()


class RedisSide:
    """The bench's end of the Redis reader process: start it, hand it each task id, collect what it saw."""

    def __init__(self, procs: Procs, port: int) -> None:
        log = procs.tmp / "redis-reader.log"
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [PY, __file__, "--redis-reader", str(port)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        procs.running.append(self.proc)
        procs.logs[self.proc.pid] = log
        self.procs = procs
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.doc: dict[str, Any] = {"conns": 0, "errors": []}

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self.stdout.readline), 30)
        if line != b"ready\n":
            raise BenchError(f"the Redis reader did not start; its log:\n{self.procs.tail(self.proc)}")

    def add(self, rec: TaskRec) -> None:
        try:
            self.stdin.write(b"%d\n" % rec.task_id)  # a few bytes into a pipe: never blocks for long
            self.stdin.flush()
        except OSError as e:  # the reader is gone: its tasks show up as differing from the log
            self.doc["errors"].append(f"Redis reader: {type(e).__name__}: {e}"[:200])

    async def finish(self, recs: list[TaskRec]) -> None:
        loop = asyncio.get_running_loop()
        try:
            with contextlib.suppress(OSError):
                self.stdin.write(b"end\n")
                self.stdin.close()
            raw = await asyncio.wait_for(loop.run_in_executor(None, self.stdout.read), 20)
            self.doc = orjson.loads(raw)
        except (OSError, ValueError, TimeoutError) as e:
            self.doc["errors"].append(f"Redis reader: {type(e).__name__}: {e}"[:200])
        finally:
            self.procs.stop([self.proc])
        seen = self.doc.pop("tasks", {})
        for rec in recs:
            for seq, kind, t in seen.get(str(rec.task_id), []):
                rec.redis_kind[seq] = kind
                if t:
                    rec.redis_t[seq] = t
                else:
                    rec.redis_backlog += 1


# ------------------------------------------------------------------ the run


def dist(name: str, ns: list[int]) -> dict[str, Any]:
    ns = sorted(ns)
    return {
        f"{name}_samples": len(ns),
        f"{name}_min_ms": pctl_ms(ns, 0.0),
        f"{name}_p1_ms": pctl_ms(ns, 0.01),
        f"{name}_p50_ms": pctl_ms(ns, 0.5),
        f"{name}_p99_ms": pctl_ms(ns, 0.99),
        f"{name}_p999_ms": pctl_ms(ns, 0.999),
        f"{name}_max_ms": pctl_ms(ns, 1.0),
        f"{name}_negative": sum(1 for x in ns if x < 0),  # the SSE reader first: the Redis reader was late
    }


class Bench:
    """The rounds against one set of workers. Single event loop, no locks."""

    def __init__(
        self, a: argparse.Namespace, procs: Procs, t: Target, taskworker: subprocess.Popen[bytes], redis_pid: int, redis_port: int
    ):
        self.a, self.procs, self.t, self.tw, self.redis_pid, self.redis_port = a, procs, t, taskworker, redis_pid, redis_port
        self.reader_pid = 0  # the Redis reader process of the round: part of the load generator

    def snap(self) -> tuple[Any, ...]:
        return (
            wall_ns(),
            [cpu_ticks(p.pid) for p in self.t.procs],
            cpu_ticks(self.tw.pid),
            cpu_ticks(self.redis_pid),
            cpu_ticks(os.getpid()) + (cpu_ticks(self.reader_pid) if self.reader_pid else 0),
            machine_ticks(),
        )

    @staticmethod
    def cpu(c0: tuple[Any, ...], c1: tuple[Any, ...]) -> dict[str, Any]:
        dt = max(c1[0] - c0[0], 1) / 1e9

        def pct(x: int, y: int) -> float:
            return round(100 * (y - x) / CLK_TCK / dt, 1)

        workers = [pct(x, y) for x, y in zip(c0[1], c1[1], strict=True)]
        tw, rd, me = pct(c0[2], c1[2]), pct(c0[3], c1[3]), pct(c0[4], c1[4])
        busy = 100 * NCPU * (c1[5][0] - c0[5][0]) / max(1, c1[5][1] - c0[5][1])
        return {
            "window_s": round(dt, 2),
            "server_cpu_pct": workers,
            "taskworker_cpu_pct": tw,
            "redis_cpu_pct": rd,
            "loadgen_cpu_pct": me,
            "other_cpu_pct": round(max(0.0, busy - sum(workers) - tw - rd - me), 1),
            "server_cpu_s": round(sum(y - x for x, y in zip(c0[1], c1[1], strict=True)) / CLK_TCK, 2),
            "taskworker_cpu_s": round((c1[2] - c0[2]) / CLK_TCK, 2),
        }

    async def quiet(self) -> tuple[float, float]:
        """Until the rest of the machine uses under --quiet-cpu % of a core for a second, at most
        --quiet-wait seconds (the machine may be shared): (seconds waited, that CPU %)."""
        t0 = mono()
        while True:
            c0 = self.snap()
            await asyncio.sleep(1.0)
            other = self.cpu(c0, self.snap())["other_cpu_pct"]
            if other < self.a.quiet_cpu or mono() - t0 >= self.a.quiet_wait:
                return round(mono() - t0 - 1.0, 1), other

    async def round(self, n: int, steps: int, interval_ms: int, ramp: float, timeout: float) -> dict[str, Any]:
        t = self.t
        recs = [TaskRec(i, t.ports[i % len(t.ports)]) for i in range(n)]  # round-robin; users i % 20
        side = RedisSide(self.procs, self.redis_port)
        self.reader_pid = side.proc.pid
        await side.ready()
        body = orjson.dumps({"kind": "countdown", "steps": steps, "interval_ms": interval_ms})
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        clients = {
            p: httpx.AsyncClient(base_url=f"http://{HOST}:{p}", timeout=timeout, limits=limits, trust_env=False) for p in t.ports
        }
        samples: list[tuple[Any, ...]] = []
        sampling = asyncio.Event()

        async def sample() -> None:
            while not sampling.is_set():
                samples.append(self.snap())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sampling.wait(), 0.25)
            samples.append(self.snap())

        t0 = mono()
        deadline = t0 + ramp + timeout

        async def one(rec: TaskRec) -> None:
            await asyncio.sleep(max(0.0, t0 + rec.i * ramp / n - mono()))
            headers = dict(t.headers(rec.i) or [])
            rec.t_post = wall_ns()
            try:
                r = await clients[rec.port].post(
                    "/api/tasks/", content=body, headers={**headers, "Content-Type": "application/json"}
                )
            except httpx.HTTPError as e:
                rec.error = f"POST: {type(e).__name__}: {e}"[:200]
                return
            rec.t_post_done = wall_ns()
            if r.status_code != 202:
                rec.error = f"POST HTTP {r.status_code} {r.text[:80]}"
                return
            try:
                reply = r.json()
                rec.task_id = int(reply["id"])
                events_url = str(reply["events_url"])
            except (ValueError, KeyError, TypeError) as e:
                rec.error = f"POST reply: {type(e).__name__}: {e}"[:200]
                return
            side.add(rec)
            req = http_request("GET", events_url, rec.port, list(headers.items()))
            failed = await follow_sse(lambda fut: TaskReader(req, rec, fut, 0, b""), rec.port, deadline)
            if failed == "timeout":
                got = f"HTTP {rec.status}" if rec.status else "no response"
                rec.error = rec.error or f"timeout ({got}, {rec.tokens} events)"
            elif failed is not None:
                rec.error = f"SSE {failed}"[:200]

        sampler = asyncio.ensure_future(sample())
        try:
            await asyncio.gather(*(one(rec) for rec in recs))
        finally:
            sampling.set()
            await sampler
            await side.finish(recs)
            self.reader_pid = 0
            for c in clients.values():
                await c.aclose()
        return self.report(recs, side, samples, steps, interval_ms, t0)

    def report(
        self, recs: list[TaskRec], side: RedisSide, samples: list[tuple[Any, ...]], steps: int, interval_ms: int, t0: float
    ) -> dict[str, Any]:
        n = len(recs)
        problems = {r.i: r.problem(steps) for r in recs}
        good = [r for r in recs if problems[r.i] is None]
        reasons = Counter(re.sub(r"\d+", "N", p)[:120] for p in problems.values() if p)
        step_t = [[r.sse_t[s] for s in sorted(r.sse_step)] for r in recs if r.sse_step]
        # Steady window: every task stepping (from the last task's first step to the first task's last step).
        steady = True
        if step_t:
            w0, w1 = max(ts[0] for ts in step_t), min(ts[-1] for ts in step_t)
            if w1 - w0 < 1e9:
                steady, w0, w1 = False, min(ts[0] for ts in step_t), max(ts[-1] for ts in step_t)
        else:
            steady, w0, w1 = False, 0, 0
        in_win = sum(1 for ts in step_t for x in ts if w0 <= x <= w1)
        written = sum(1 for r in recs for seq in r.sse_step if w0 <= r.redis_t.get(seq, -1) <= w1)

        def rate(k: int) -> float | None:
            return round(k / (w1 - w0) * 1e9, 1) if w1 > w0 else None

        # Latency: step events whose log entry the Redis reader timed live, after the SSE response began.
        lat: list[int] = []
        lat_win: list[int] = []
        untimed = 0
        gaps_sse, gaps_redis = [], []
        for r in recs:
            prev_s = prev_r = 0
            for seq in sorted(r.sse_step):
                ts, tr = r.sse_t[seq], r.redis_t.get(seq)
                if tr is None or not r.t_head or tr < r.t_head:
                    untimed += 1
                else:
                    lat.append(ts - tr)
                    if w0 <= ts <= w1:
                        lat_win.append(ts - tr)
                # Jitter: the time between a task's consecutive steps (ideally --interval-ms), in the window.
                if prev_s and w0 <= prev_s and ts <= w1:
                    gaps_sse.append(ts - prev_s)
                if prev_r and tr and w0 <= prev_r and tr <= w1:
                    gaps_redis.append(tr - prev_r)
                prev_s, prev_r = ts, tr or 0
        post = sorted(r.t_post_done - r.t_post for r in recs if r.t_post_done)
        first_step = sorted(ts[0] - r.t_post for r, ts in zip([r for r in recs if r.sse_step], step_t, strict=True))
        cpu: dict[str, Any] = {}
        inside = [s for s in samples if w0 <= s[0] <= w1]
        if len(inside) >= 2:
            cpu = self.cpu(inside[0], inside[-1])
        elif len(samples) >= 2:
            cpu = {**self.cpu(samples[0], samples[-1]), "whole_round": True}
        if cpu and in_win and len(inside) >= 2:
            cpu["server_cpu_us_per_event"] = round(1e6 * cpu["server_cpu_s"] / max(1, in_win), 1)
            cpu["taskworker_cpu_us_per_event"] = round(1e6 * cpu["taskworker_cpu_s"] / max(1, in_win), 1)
        return {
            "tasks": n,
            "steps": steps,
            "interval_ms": interval_ms,
            "offered_events_s": round(n * 1000 / interval_ms, 1) if interval_ms else None,
            "wall_s": round(mono() - t0, 2),
            "steady_window": steady,
            "window_s": round((w1 - w0) / 1e9, 2),
            "events_in_window": in_win,
            "events_s": rate(in_win),
            "written_events_s": rate(written),
            "step_events": sum(len(ts) for ts in step_t),
            "events_total": sum(r.tokens for r in recs),
            **dist("lat", lat_win),
            **dist("lat_all", lat),
            "lat_untimed": untimed,
            **{k.replace("lat", "step_gap_sse", 1): v for k, v in dist("lat", gaps_sse).items() if "negative" not in k},
            **{k.replace("lat", "step_gap_written", 1): v for k, v in dist("lat", gaps_redis).items() if "negative" not in k},
            "post_p50_ms": pctl_ms(post, 0.5),
            "post_p99_ms": pctl_ms(post, 0.99),
            "first_step_p50_ms": pctl_ms(first_step, 0.5),
            "first_step_p99_ms": pctl_ms(first_step, 0.99),
            "redis_reader_conns": side.doc.get("conns"),
            "redis_reader_nice": side.doc.get("nice"),
            "redis_reader_backlog_entries": sum(r.redis_backlog for r in recs),
            "redis_reader_no_timestamp": side.doc.get("no_timestamp"),
            "redis_reader_errors": side.doc.get("errors", [])[:3],
            "ok": len(good),
            "errors": n - len(good),
            "error_reasons": dict(reasons.most_common(5)),
            **cpu,
        }

    async def run(self) -> dict[str, Any]:
        a = self.a
        # Warm-up, unjudged: URL resolution, database and Redis connections, the task worker's first claims.
        w = len(self.t.ports) * 2
        warm = await self.round(w, 5, 20, 0.2, a.timeout)
        print(f"  warm-up: {w} tasks, {warm['errors']} errors {warm['error_reasons'] or ''}", file=sys.stderr, flush=True)
        quiet_s, quiet_other = await self.quiet()
        gc.collect()
        gc.disable()
        try:
            res = await self.round(a.tasks, a.steps, a.interval_ms, a.ramp, a.timeout)
        finally:
            gc.enable()
        res["quiet_wait_s"], res["other_cpu_pct_before"] = quiet_s, quiet_other
        print(
            f"  {a.tasks} tasks: {fmt(res['events_s'], 0)} events/s delivered, {fmt(res['written_events_s'], 0)} written"
            f" over {res['window_s']} s (offered {fmt(res['offered_events_s'], 0)})  latency p50 {res['lat_p50_ms']}"
            f" p99 {res['lat_p99_ms']} max {res['lat_max_ms']} ms ({res['lat_samples']} samples, {res['lat_negative']} < 0;"
            f" with the start: p99 {res['lat_all_p99_ms']} max {res['lat_all_max_ms']}, {res['lat_untimed']} untimed)"
            f"  step gap p99 {res['step_gap_sse_p99_ms']} ms  POST p99 {res['post_p99_ms']} ms"
            f"  cpu srv {res.get('server_cpu_pct')} taskworker {res.get('taskworker_cpu_pct')} redis {res.get('redis_cpu_pct')}"
            f" gen {res.get('loadgen_cpu_pct')} other {res.get('other_cpu_pct')} (waited {quiet_s} s for < {a.quiet_cpu:g})"
            f"  errors {res['errors']}" + (f" {res['error_reasons']}" if res["errors"] else ""),
            file=sys.stderr,
            flush=True,
        )
        return {"warmup": {k: warm[k] for k in ("tasks", "errors", "error_reasons")}, "round": res}


# ------------------------------------------------------------------ set-up


def start_taskworker(procs: Procs, env: dict[str, str], concurrency: int) -> subprocess.Popen[bytes]:
    proc = procs.start("taskworker", [PY, "manage.py", "taskworker", "--concurrency", str(concurrency)], env)
    deadline = mono() + 30
    while mono() < deadline and proc.poll() is None:
        if "running up to" in procs.logs[proc.pid].read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready after 30 s"
    raise BenchError(f"task worker (pid {proc.pid}) {state}; last lines of its log:\n{procs.tail(proc)}")


def run(a: argparse.Namespace, tmp: Path, procs: Procs) -> list[dict[str, Any]]:
    rproc, redis_url, rcli = start_redis(procs, tmp)
    # 200 tasks over 20 users is 10 each at once: above the per-user cap meant for abuse.
    env = ours_env(tmp, redis_url, TASKS_MAX_ACTIVE_PER_USER="1000")
    t = Target("ours", f"the project, {a.server}", env, asgi_argv(a.server, "config.asgi:application", backlog=BACKLOG), True)
    t0 = mono()
    print(f"## {t.name}: {t.desc}, {a.workers} workers, task worker concurrency {a.concurrency}", file=sys.stderr, flush=True)
    ours_prepare(t)
    t.start(procs, a.workers)
    tw = start_taskworker(procs, env, a.concurrency)
    res: dict[str, Any] = {"target": t.name, "desc": t.desc, "ports": t.ports, "taskworker_concurrency": a.concurrency}
    try:
        bench = Bench(a, procs, t, tw, rproc.pid, urlsplit(redis_url).port or 6379)
        budget = 2 * (a.ramp + a.timeout) + 60
        res.update(uvloop.run(asyncio.wait_for(bench.run(), budget)))
        if res["round"]["errors"] or res["warmup"]["errors"]:
            res["log_tails"] = {f"w{i}": procs.tail(p, 40) for i, p in enumerate(t.procs)}
            res["log_tails"]["taskworker"] = procs.tail(tw, 40)
    finally:
        procs.stop([tw, *t.procs])
        rcli.flushall()
        rcli.close()
    res["wall_s"] = round(mono() - t0, 1)
    return [res]


# ------------------------------------------------------------------ report


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "target",
        "tasks",
        "events/s (offered)",
        "SSE latency p50 ms",
        "p99 ms",
        "max ms",
        "p99 incl. start ms",
        "srv CPU % per worker",
        "task-worker CPU %",
        "errors",
    )
    rows = []
    for r in results:
        x = r.get("round")
        if not x:
            rows.append((f"{r['target']} ({r['desc']})", "-", *["-"] * (len(head) - 3), r.get("error", "-")))
            continue
        err = f"{x['errors']}/{x['tasks']}"
        if x["error_reasons"]:
            err += " (" + ", ".join(f"{k} \u00d7{v}" for k, v in list(x["error_reasons"].items())[:3]) + ")"
        rate = f"{fmt(x['events_s'], 0)} ({fmt(x['offered_events_s'], 0)})" + ("" if x["steady_window"] else " no steady window")
        rows.append(
            (
                f"{r['target']} ({r['desc']})",
                str(x["tasks"]),
                rate,
                fmt(x["lat_p50_ms"], 1),
                fmt(x["lat_p99_ms"], 1),
                fmt(x["lat_max_ms"], 1),
                fmt(x["lat_all_p99_ms"], 1),
                " / ".join(fmt(c, 0) for c in x.get("server_cpu_pct", [])) or "-",
                fmt(x.get("taskworker_cpu_pct"), 0),
                err,
            )
        )
    return md_table(head, rows)


def goal(x: dict[str, Any]) -> str:
    """The issue's goal: p99 < 50 ms at 2,000 events/s: over the steady window, latency p99 under 50 ms while at least
    2,000 progress events/s were delivered, and no task wrong. Each countdown step sleeps its interval, then writes, so
    a task steps a little slower than nominal: 200 tasks at 100 ms deliver somewhat under 2,000/s."""
    p99, rate, offered = x["lat_p99_ms"], x["events_s"] or 0, x["offered_events_s"] or 0
    load_ok = rate >= GOAL_EVENTS_S
    met = p99 is not None and p99 < GOAL_P99_MS and load_ok and not x["errors"]
    checks = (
        (f"p99 >= {GOAL_P99_MS:g} ms", p99 is None or p99 >= GOAL_P99_MS),
        (f"under {GOAL_EVENTS_S:,.0f} events/s delivered", not load_ok),
        ("errors", bool(x["errors"])),
    )
    why = [name for name, bad in checks if bad]
    return (
        f"goal p99 < {GOAL_P99_MS:g} ms at {GOAL_EVENTS_S:,.0f} events/s: p99 {fmt(p99, 1)} ms at {fmt(rate, 0)} events/s"
        f" delivered, {fmt(x['written_events_s'], 0)}/s written by the task worker (offered {fmt(offered, 0)})"
        f" -> {'met' if met else 'NOT met (' + ', '.join(why) + ')'}"
    )


# ------------------------------------------------------------------ main


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--redis-reader":  # the child process of RedisSide
        redis_reader_main(int(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200, help="concurrent countdown tasks, one SSE stream each")
    ap.add_argument("--steps", type=int, default=100, help="steps of each countdown (one progress event each)")
    ap.add_argument("--interval-ms", type=int, default=100, help="interval_ms of each countdown")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which the tasks are started, evenly")
    ap.add_argument("--workers", "-w", type=int, default=2, help="web server processes")
    ap.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne", help="ASGI server of the web workers")
    ap.add_argument("--concurrency", type=int, help="--concurrency of the task worker (default: max(250, tasks))")
    ap.add_argument("--timeout", type=float, help="seconds a task may take after its start (default: 2 x its duration + 30)")
    ap.add_argument("--quiet-cpu", type=float, default=20.0, help="before the round, wait for other processes under this %%")
    ap.add_argument("--quiet-wait", type=float, default=15.0, help="... but at most this many seconds")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (database, logs); kept anyway on failure")
    a = ap.parse_args()
    if not 1 <= a.tasks <= 5000 or not 1 <= a.steps <= 10_000 or not 0 <= a.interval_ms <= 60_000 or a.workers < 1:
        ap.error("need 1 <= tasks <= 5000, 1 <= steps <= 10000 (the API's limit), 0 <= interval-ms <= 60000, workers >= 1")
    if a.ramp < 0:
        ap.error("--ramp must be >= 0")
    a.concurrency = a.concurrency or max(250, a.tasks)
    if a.concurrency < a.tasks:
        ap.error("--concurrency must be at least --tasks (every task runs at once)")
    a.timeout = a.timeout or 2 * a.steps * a.interval_ms / 1000 + 30
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (make bench-tasks installs it with apt)")

    status, doc, out = session(a, "tasks", lambda tmp, procs: run(a, tmp, procs))
    if out is None:
        return status
    results, stamp = doc["targets"], doc["timestamp"]
    x = results[0]["round"]
    print(
        f"\n### Tasks {stamp}: {a.tasks} countdown tasks x {a.steps} steps every {a.interval_ms} ms"
        f" (offered {fmt(x['offered_events_s'], 0)} progress events/s), started over {a.ramp:g} s, {a.workers} {a.server}"
        f" workers (streams round-robin), one task worker (concurrency {a.concurrency}); latency = SSE arrival -"
        f" kernel receive time of the same log entry at a Redis XREAD reader; events/s, latency p50/p99/max and CPU"
        f" over the {x['window_s']} s{' steady' if x['steady_window'] else ''} window ({x['lat_samples']:,} step events),"
        f" p99 incl. start over all {x['lat_all_samples']:,} step events, the tasks' start included\n"
    )
    print(table(results))
    print(f"\n{goal(x)}")
    print(f"\nJSON: {shown(out)}  (wall {doc['wall_s']:.0f} s)")
    if x["errors"]:
        print(f"bench: FAIL: {x['errors']} tasks incomplete or wrong (see the errors column)", file=sys.stderr)
    return 1 if x["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
