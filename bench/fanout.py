#!/usr/bin/env python3
"""Fan-out benchmark: the project (`ours`) and a bare Channels consumer (`bare`) under the same load.

One run starts a private redis-server, then for each target its W workers on free loopback
ports, drives R rooms x C clients (S senders a room) through rising send rates, stops the
workers and FLUSHALLs Redis before the next target. Prints one markdown table and writes the
JSON to bench/results/<UTC timestamp>_fanout.json. Loopback only; every wait is bounded; every
process started here is stopped at the end, also on Ctrl-C or an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import os
import shutil
import sys
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
    session,
    shown,
    start_redis,
    tree_cpu_ticks,
)
from picows import WSListener, WSMsgType, ws_connect

loads = orjson.loads
TEXT = WSMsgType.TEXT


# ------------------------------------------------------------------ targets


def ours_target(a: argparse.Namespace, tmp: Path, redis_url: str) -> Target:
    env = ours_env(tmp, redis_url)
    return Target("ours", f"the project, {a.server}", env, asgi_argv(a.server, "config.asgi:application"), contract=True)


def ours_create_rooms(t: Target, rooms: list[str]) -> None:
    headers = {"Authorization": f"Bearer {t.tokens[0]}"}
    with httpx.Client(base_url=f"http://{HOST}:{t.ports[0]}", headers=headers, timeout=10, trust_env=False) as c:
        for slug in rooms:
            r = c.post("/api/rooms/", json={"slug": slug, "title": slug})
            if r.status_code not in (201, 409):
                raise BenchError(f"ours: POST /api/rooms/ {slug}: HTTP {r.status_code} {r.text[:300]}")


def ours_persisted(t: Target, acked: dict[str, set[str]], sent: dict[str, int]) -> dict[str, Any]:
    """Page GET /api/rooms/<slug>/messages: every acknowledged message must be stored, nothing more than was sent."""
    headers = {"Authorization": f"Bearer {t.tokens[0]}"}
    rooms: dict[str, Any] = {}
    with httpx.Client(base_url=f"http://{HOST}:{t.ports[-1]}", headers=headers, timeout=30, trust_env=False) as c:
        for slug in sent:
            after, rows, nonces = 0, 0, set()
            for _ in range(sent[slug] // 200 + 10):  # bounded: at most what was sent, and some
                r = c.get(f"/api/rooms/{slug}/messages", params={"after": after, "limit": 200})
                r.raise_for_status()
                page = r.json()["messages"]
                if not page:
                    break
                rows += len(page)
                nonces.update(m.get("nonce") for m in page)
                after = page[-1]["id"]
            missing = len(acked[slug] - nonces)
            rooms[slug] = {"sent": sent[slug], "acked": len(acked[slug]), "rows": rows, "acked_missing": missing}
    tot = {k: sum(r[k] for r in rooms.values()) for k in ("sent", "acked", "rows", "acked_missing")}
    tot["ok"] = tot["acked_missing"] == 0 and tot["acked"] <= tot["rows"] <= tot["sent"]
    return {**tot, "rooms": rooms}


def bare_target(a: argparse.Namespace, redis_url: str) -> Target:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "bench"),
        "DJANGO_SETTINGS_MODULE": "bare_channels.settings",
        "BENCH_REDIS_URL": redis_url,
        "BENCH_LAYER": a.bare_layer,
    }
    argv = asgi_argv("daphne", "bare_channels.asgi:application")
    layer = "RedisPubSubChannelLayer" if a.bare_layer == "pubsub" else "RedisChannelLayer"
    return Target("bare", f"bare Channels consumer, {layer}, daphne", env, argv, contract=False)


# ------------------------------------------------------------------ load


class Client(WSListener):
    """One WebSocket. Nonces are "<step>.<sender>.<seq>.<send monotonic ns>"; `seen` tracks, per
    sender, the next expected seq and the gaps, for loss / duplicate / reorder per (receiver, sender)."""

    def __init__(self, load: Load, idx: int, room: str, si: int) -> None:
        self.load, self.idx, self.room, self.si = load, idx, room, si
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()
        self.synced = not load.contract  # the bare peer has no hello / backlog / synced / presence
        self.closed = False
        self.close_code: int | None = None
        self.seen: dict[int, list[Any]] = {}
        self.acked: set[str] = set()  # own messages echoed back: acknowledged

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        if not self.load.contract:
            self.ready.set_result(True)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        self.load.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready (code {self.close_code})"))

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        now = mono_ns()
        ld = self.load
        ld.last_rx = now
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self.close_code = frame.get_close_code()
                transport.send_close(self.close_code)
                transport.disconnect()
            return
        m = loads(frame.get_payload_as_bytes())
        kind = m.get("type")
        if kind == "message" and self.ready.done():
            self.delivered(m.get("nonce"), now)
        elif kind == "ping":
            transport.send(TEXT, b'{"type":"pong"}')
        elif not self.ready.done():
            if kind == "synced":
                self.synced = True
            elif kind == "presence" and self.synced:
                self.ready.set_result(True)
        elif kind == "error":
            ld.errors += 1
            ld.error_sample = ld.error_sample or m

    def delivered(self, nonce: Any, now: int) -> None:
        ld = self.load
        try:
            step_s, sender_s, seq_s, sent_s = nonce.split(".")
            step, sender, seq = int(step_s), int(sender_s), int(seq_s)
        except (AttributeError, ValueError):
            ld.bad += 1
            return
        if sender == self.si:
            self.acked.add(nonce)
        if step != ld.step:
            ld.late += 1
            return
        ld.lat.append(now - int(sent_s))
        ld.recv += 1
        ld.t_last = now
        s = self.seen.get(sender)
        if s is None:
            s = self.seen[sender] = [0, set()]
        if seq == s[0]:
            s[0] = seq + 1
        elif seq > s[0]:
            s[1].update(range(s[0], seq))
            s[0] = seq + 1
        elif seq in s[1]:
            s[1].discard(seq)
            ld.order += 1  # arrived after a later message of the same sender
        else:
            ld.dups += 1
        if ld.recv - ld.dups >= ld.expected:
            ld.all_in.set()


class Load:
    """The load of one target: connect, warm up, step the rate, close. Single event loop, no locks."""

    def __init__(self, a: argparse.Namespace, t: Target, redis_pid: int) -> None:
        self.a, self.t, self.redis_pid, self.contract = a, t, redis_pid, t.contract
        self.rooms = [f"bench-{i}" for i in range(a.rooms)]
        self.clients: list[Client] = []
        self.senders: list[Client] = []
        self.sent = {r: 0 for r in self.rooms}
        self.step = -1
        self.lat = array.array("q")
        self.recv = self.dups = self.order = self.late = self.bad = self.errors = self.disconnects = 0
        self.t_last = self.last_rx = 0
        self.error_sample: Any = None
        self.acked: dict[str, set[str]] = {}
        self.expected = 1 << 62
        self.all_in = asyncio.Event()
        content = ("bench fan-out " * 40)[: a.content_len].strip()
        self.prefix = b'{"type":"message","content":' + orjson.dumps(content) + b',"nonce":"'

    async def connect(self) -> dict[str, Any]:
        a, t = self.a, self.t
        n = a.rooms * a.clients
        sem = asyncio.Semaphore(50)
        clients: list[Client | None] = [None] * n
        errors: list[str] = []

        async def dial(i: int) -> None:
            room = self.rooms[i // a.clients]
            c = Client(self, i, room, -1)
            url = f"ws://{HOST}:{t.ports[i % len(t.ports)]}/ws/rooms/{room}/"  # round-robin, not sticky
            async with sem:
                try:
                    await ws_connect(lambda: c, url, extra_headers=t.headers(i), websocket_handshake_timeout=20, max_redirects=0)
                    await asyncio.wait_for(c.ready, 30)
                    clients[i] = c
                except Exception as e:  # any failure: reported, and the client re-dialled
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    if c.transport is not None:
                        c.transport.disconnect()

        t0 = mono()
        await asyncio.wait_for(asyncio.gather(*(dial(i) for i in range(n))), 60 + n / 10)
        for _ in range(2):  # re-dial failures, bounded
            missing = [i for i in range(n) if clients[i] is None]
            if not missing:
                break
            await asyncio.sleep(0.5)
            await asyncio.wait_for(asyncio.gather(*(dial(i) for i in missing)), 60 + len(missing) / 10)
        if any(c is None for c in clients):
            raise BenchError(f"{t.name}: {sum(c is None for c in clients)} of {n} clients could not connect: {errors[:3]}")
        self.clients = [c for c in clients if c is not None]
        for c in self.clients:
            if c.idx % a.clients < a.senders:  # the first S of each room; with W=2 they alternate workers
                c.si = len(self.senders)
                self.senders.append(c)
        await asyncio.sleep(1.0)
        return {"connect_s": round(mono() - t0, 2), "redialed": len(errors), "error_sample": errors[:3]}

    def snap(self) -> tuple[float, list[int], int, int, tuple[int, int]]:
        workers = [tree_cpu_ticks(p.pid) for p in self.t.procs]
        return mono(), workers, cpu_ticks(self.redis_pid), cpu_ticks(os.getpid()), machine_ticks()

    @staticmethod
    def cpu(a: tuple[Any, ...], b: tuple[Any, ...], deliveries: int) -> dict[str, Any]:
        dt = max(b[0] - a[0], 1e-6)
        workers = [round(100 * (y - x) / CLK_TCK / dt, 1) for x, y in zip(a[1], b[1], strict=True)]
        redis_pct = round(100 * (b[2] - a[2]) / CLK_TCK / dt, 1)
        me = round(100 * (b[3] - a[3]) / CLK_TCK / dt, 1)
        busy = 100 * NCPU * (b[4][0] - a[4][0]) / max(1, b[4][1] - a[4][1])
        srv_s = sum(y - x for x, y in zip(a[1], b[1], strict=True)) / CLK_TCK
        return {
            "server_cpu_pct": workers,
            "redis_cpu_pct": redis_pct,
            "loadgen_cpu_pct": me,
            "other_cpu_pct": round(max(0.0, busy - sum(workers) - redis_pct - me), 1),
            "server_cpu_s": round(srv_s, 3),
            "server_cpu_us_per_delivery": round(1e6 * srv_s / deliveries, 1) if deliveries else None,
        }

    async def quiesce(self, quiet_s: float = 0.5, cap_s: float = 10.0) -> None:
        """Until nothing has arrived for quiet_s (at most cap_s): an overloaded server drains first."""
        for _ in range(int(cap_s / 0.05)):
            if mono_ns() - self.last_rx >= quiet_s * 1e9:
                return
            await asyncio.sleep(0.05)

    async def run_step(self, step: int, rate: float, duration: float) -> dict[str, Any]:
        a = self.a
        for c in self.clients:
            c.seen = {}
        self.expected = 1 << 62  # known once the last message is sent
        self.all_in.clear()
        self.step = step
        self.lat = array.array("q")
        self.recv = self.dups = self.order = self.late = self.bad = self.errors = self.t_last = 0
        self.error_sample = None
        disc0 = self.disconnects
        senders, prefix = self.senders, self.prefix
        ns = len(senders)
        seqs = [0] * ns
        sizes = [a.clients] * ns
        total = max(1, round(rate * duration))
        sent = expected = 0
        gc.collect()
        gc.disable()
        c0 = self.snap()
        t0, t0ns = mono(), mono_ns()
        hard_stop = t0 + 2 * duration + 5
        while sent < total and mono() < hard_stop:
            due = min(total, int((mono() - t0) * rate) + 1)
            while sent < due:
                si = sent % ns
                c = senders[si]
                seq = seqs[si]
                seqs[si] = seq + 1
                c.transport.send(TEXT, prefix + f'{step}.{si}.{seq}.{mono_ns()}"}}'.encode())
                self.sent[c.room] += 1
                expected += sizes[si]
                sent += 1
            if sent < total:
                # never sleep under 1 ms: shorter timers spin, and the generator shares the servers' cores
                await asyncio.sleep(max(0.001, sent / rate - (mono() - t0)))
        t_send = mono() - t0
        self.expected = expected
        if self.recv - self.dups < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_in.wait(), a.drain)
        unique = self.recv - self.dups
        c1 = self.snap()
        self.step = -1
        gc.enable()
        span = max(t_send, (self.t_last - t0ns) / 1e9)
        lat = sorted(self.lat)
        r: dict[str, Any] = {
            "step": step,
            "offered_msgs_s": round(rate, 1),
            "sent": sent,
            "achieved_msgs_s": round(sent / t_send, 1),
            "expected": expected,
            "deliveries": unique,
            "deliveries_s": round(unique / span, 1),
            "lost": max(0, expected - unique),
            "dups": self.dups,
            "reordered": self.order,
            "late_from_earlier_steps": self.late,
            "error_frames": self.errors,
            "error_sample": self.error_sample,
            "disconnects": self.disconnects - disc0,
            "p50_ms": pctl_ms(lat, 0.5),
            "p99_ms": pctl_ms(lat, 0.99),
            "max_ms": pctl_ms(lat, 1.0),
            **self.cpu(c0, c1, unique),
        }
        why = []
        if r["lost"]:
            why.append(f"lost {r['lost']} ({100 * r['lost'] / expected:.1f}%)")
        if r["p99_ms"] is not None and r["p99_ms"] > a.p99_ms:
            why.append(f"p99 {r['p99_ms']} ms > {a.p99_ms:g}")
        if r["disconnects"]:
            why.append(f"{r['disconnects']} disconnects")
        if r["error_frames"]:
            why.append(f"{r['error_frames']} error frames")
        if sent < total or r["achieved_msgs_s"] < 0.95 * rate:
            why.append("the generator could not hold the rate")
        r["ok"] = not why
        r["fail_reason"] = "; ".join(why)
        print(
            f"  {self.t.name} step {step:>2}: {rate:8.1f} msg/s -> {r['deliveries_s']:9.1f} deliveries/s"
            f"  p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms  lost {r['lost']} dup {r['dups']}"
            f" reord {r['reordered']}  cpu srv {r['server_cpu_pct']} redis {r['redis_cpu_pct']}"
            f" gen {r['loadgen_cpu_pct']} other {r['other_cpu_pct']}  {'ok' if r['ok'] else 'FAIL: ' + r['fail_reason']}",
            file=sys.stderr,
            flush=True,
        )
        return r

    async def run(self) -> dict[str, Any]:
        a = self.a
        out: dict[str, Any] = {"connect": await self.connect()}
        steps = [await self.run_step(0, a.start_rate / 2 if a.rate is None else a.rate / 2, a.warmup)]
        steps[0]["warmup"] = True
        await self.quiesce()
        best = fail = None
        t_start = mono()
        if a.rate is not None:
            steps.append(await self.run_step(1, a.rate, a.duration))
            best, fail = (steps[-1], None) if steps[-1]["ok"] else (None, steps[-1])
        else:
            rate, sid, retry_noisy = a.start_rate, 1, 1
            while sid <= a.max_steps and mono() - t_start < a.max_time:
                r = await self.run_step(sid, rate, a.duration)
                steps.append(r)
                sid += 1
                await self.quiesce()
                if r["ok"]:
                    best, rate = r, rate * a.factor
                elif r["other_cpu_pct"] > 50 and retry_noisy:  # the machine is shared: repeat once
                    r["repeated_because_noisy"], retry_noisy = True, 0
                else:
                    fail = r
                    break
            bad = fail  # bisection narrows [best, bad]; `fail` stays the step that stopped the stepping
            for _ in range(a.bisect):
                if best is None or bad is None or mono() - t_start >= a.max_time:
                    break
                r = await self.run_step(sid, (best["offered_msgs_s"] * bad["offered_msgs_s"]) ** 0.5, a.duration)
                r["bisection"] = True
                steps.append(r)
                sid += 1
                await self.quiesce()
                if r["ok"]:
                    best = r
                else:
                    bad = r
        await self.close()
        acked: dict[str, set[str]] = {r: set() for r in self.rooms}
        for c in self.senders:
            acked[c.room] |= c.acked
        out.update(
            steps=steps,
            best=best,
            first_fail=fail,
            stopped_by=(
                f"{fail['offered_msgs_s']:g} msg/s: {fail['fail_reason']}"
                if fail
                else ("fixed rate" if a.rate is not None else "step/time cap, no failure")
            ),
            dups_all_steps=sum(s["dups"] for s in steps),
            reordered_all_steps=sum(s["reordered"] for s in steps),
            lost_all_steps=sum(s["lost"] for s in steps),
        )
        self.acked = acked
        return out

    async def close(self) -> None:
        open_ = [c.transport for c in self.clients if not c.closed]
        for tr in open_:
            tr.send_close()
            tr.disconnect()
        if open_:
            await asyncio.wait([asyncio.ensure_future(tr.wait_disconnected()) for tr in open_], timeout=3)


# ------------------------------------------------------------------ report


def table(a: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    head = (
        "target",
        "workers",
        "best deliveries/s",
        "at offered msg/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost",
        "dup",
        "reorder",
        "srv CPU % per worker",
        "srv CPU \u00b5s/delivery",
        "persisted",
        "stopped by",
    )
    rows = []
    for r in results:
        b = r.get("best") or {}
        p = r.get("persisted")
        persisted = "-" if p is None else f"{'ok' if p['ok'] else 'FAIL'} {p['rows']:,} rows / {p['acked']:,} acked"
        if p and p["acked_missing"]:
            persisted += f", {p['acked_missing']:,} acked missing"
        cells = (
            f"{r['target']} ({r['desc']})",
            str(a.workers),
            fmt(b.get("deliveries_s"), 0),
            fmt(b.get("offered_msgs_s"), 0),
            fmt(b.get("p50_ms"), 2),
            fmt(b.get("p99_ms"), 2),
            fmt(b.get("max_ms"), 2),
            fmt(b.get("lost")),
            fmt(b.get("dups")),
            fmt(b.get("reordered")),
            " / ".join(fmt(x, 0) for x in b.get("server_cpu_pct", [])) or "-",
            fmt(b.get("server_cpu_us_per_delivery")),
            persisted,
            r.get("stopped_by", r.get("error", "-")),
        )
        rows.append(cells)
    return md_table(head, rows)


# ------------------------------------------------------------------ main


def run(a: argparse.Namespace, tmp: Path, procs: Procs) -> list[dict[str, Any]]:
    rproc, redis_url, rcli = start_redis(procs, tmp)
    rooms = [f"bench-{i}" for i in range(a.rooms)]
    results = []
    for name in a.targets:
        t = ours_target(a, tmp, redis_url) if name == "ours" else bare_target(a, redis_url)
        t0 = mono()
        print(f"## {t.name}: {t.desc}, {a.workers} workers", file=sys.stderr, flush=True)
        if t.name == "ours":
            ours_prepare(t)
        t.start(procs, a.workers)
        try:
            if t.name == "ours":
                ours_create_rooms(t, rooms)
            load = Load(a, t, rproc.pid)
            res: dict[str, Any] = {"target": t.name, "desc": t.desc, "ports": t.ports}
            res.update(uvloop.run(asyncio.wait_for(load.run(), a.max_time + 240)))
            if t.name == "ours":
                res["persisted"] = ours_persisted(t, load.acked, load.sent)
                p = res["persisted"]
                print(
                    f"  persisted: {'ok' if p['ok'] else 'FAIL'} sent {p['sent']} acked {p['acked']} rows {p['rows']}"
                    f" acked-but-missing {p['acked_missing']}",
                    file=sys.stderr,
                )
        finally:
            procs.stop(t.procs)
            rcli.flushall()
        res["wall_s"] = round(mono() - t0, 1)
        results.append(res)
    rcli.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="ours,bare", help="comma list of ours, bare (default: both, in that order)")
    ap.add_argument("--workers", "-w", type=int, default=2, help="server processes per target")
    ap.add_argument("--server", choices=("daphne", "uvicorn", "granian"), default="daphne", help="ASGI server for ours")
    ap.add_argument("--bare-layer", choices=("pubsub", "core"), default="pubsub", help="channels_redis layer of bare")
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--clients", type=int, default=20, help="clients per room")
    ap.add_argument("--senders", type=int, default=2, help="senders per room")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--find-max", action="store_true", help="step the rate up until a step fails (the default)")
    mode.add_argument("--rate", type=float, help="one step at this total msg/s instead of --find-max")
    ap.add_argument("--start-rate", type=float, default=200.0, help="first find-max step, total msg/s")
    ap.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of sending per step")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of the unjudged warm-up step")
    ap.add_argument("--drain", type=float, default=3.0, help="seconds to wait for stragglers after a step")
    ap.add_argument("--p99-ms", type=float, default=100.0, help="a step passes with p99 <= this and no loss")
    ap.add_argument("--bisect", type=int, default=1, help="steps between the last good and first bad rate (0: none)")
    ap.add_argument("--max-steps", type=int, default=15)
    ap.add_argument("--max-time", type=float, default=90.0, help="stop stepping after this many seconds per target")
    ap.add_argument("--content-len", type=int, default=80, help="characters of message content")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (database, logs); kept anyway on failure")
    a = ap.parse_args()
    a.targets = [x.strip() for x in a.targets.split(",") if x.strip()]
    if not a.targets or set(a.targets) - {"ours", "bare"}:
        ap.error("--targets: a comma list of ours, bare")
    if not (1 <= a.senders <= a.clients and a.rooms >= 1 and a.workers >= 1 and a.start_rate > 0 and a.factor > 1):
        ap.error("need 1 <= senders <= clients, rooms >= 1, workers >= 1, start-rate > 0, factor > 1")
    if a.rate is not None and a.rate <= 0:
        ap.error("--rate must be > 0")
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (make bench installs it with apt)")

    status, doc, out = session(a, "fanout", lambda tmp, procs: run(a, tmp, procs))
    if out is None:
        return status
    results, stamp = doc["targets"], doc["timestamp"]
    mode = f"fixed {a.rate:g} msg/s" if a.rate is not None else f"find-max from {a.start_rate:g} msg/s x{a.factor:g}"
    print(
        f"\n### fan-out {stamp}: {a.rooms} rooms x {a.clients} clients ({a.senders} senders a room), {mode},"
        f" {a.duration:g} s a step, pass = p99 <= {a.p99_ms:g} ms and no loss\n"
    )
    print(table(a, results))
    print(f"\nJSON: {shown(out)}  (wall {doc['wall_s']:.0f} s)")
    persisted_ok = all(r["persisted"]["ok"] for r in results if "persisted" in r)
    if not persisted_ok:
        print("bench: FAIL: not every acknowledged message of ours was persisted", file=sys.stderr)
    return 0 if persisted_ok else 1


if __name__ == "__main__":
    sys.exit(main())
