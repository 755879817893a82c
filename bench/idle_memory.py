#!/usr/bin/env python3
"""Idle memory per WebSocket: the project's room socket (`ours`) beside an ASGI app that only
accepts (`bare`, bench/bare_accept.py: the server's own floor), one worker each.

For each target, two short runs on a fresh worker:

1. RSS: open --warmup sockets (one-time costs: imports, the hub, caches), read the worker's RSS,
   open --conns more idle sockets, hold them --hold seconds, read it again: growth / conns.
2. Heap (unless --trace-conns 0): after the warm-up the worker starts tracing allocations and
   writes a snapshot (TRACEMALLOC_SNAPSHOT_DIR, SIGUSR2: core.memtrace); --trace-conns more
   sockets, another snapshot; the difference per socket, grouped by
   the allocation site that owns it (the innermost frame outside the standard library) and by
   who that is: the server (daphne/twisted/autobahn), channels/asgiref, django, redis-py, ours.

Clients authenticate as the project's scripts do (`Authorization: Bearer`, bench users minted
as in bench/common.py), join rooms of --room-size and count as open once the server's hello,
backlog, `synced` and presence have arrived; pings are answered. Loopback only, every wait is
bounded, every process started is stopped by its pid (bench/common.py). Prints a markdown
report and writes bench/results/<UTC stamp>_idle_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from common import (
    HOST,
    ROOT,
    BenchError,
    Procs,
    Target,
    asgi_argv,
    fmt,
    md_table,
    mono,
    ours_env,
    ours_prepare,
    rss_kib,
    session,
    shown,
    start_redis,
)
from picows import WSListener, WSMsgType, ws_connect

TEXT = WSMsgType.TEXT

# Who owns an allocation: the innermost frame that is not the standard library's.
SERVER_PACKAGES = {"daphne", "twisted", "autobahn", "txaio", "zope", "hyperlink", "automat", "constantly", "incremental"}
ASYNCIO_SERVER_PACKAGES = {"uvicorn", "websockets", "h11", "httptools", "uvloop", "wsproto"}


def owner_of(filename: str) -> str | None:
    """The group of a frame's file, or None for the standard library (its caller owns it)."""
    if "/site-packages/" in filename:
        package = filename.split("/site-packages/", 1)[1].split("/", 1)[0]
        if package in SERVER_PACKAGES:
            return "server: daphne/twisted/autobahn"
        if package in ASYNCIO_SERVER_PACKAGES:
            return "server: uvicorn/websockets"
        if package in ("channels", "asgiref"):
            return "channels/asgiref"
        if package == "django":
            return "django"
        if package == "redis":
            return "redis-py"
        return f"other: {package}"
    if filename.startswith(str(ROOT) + "/core/servers/"):
        return "server: ours (core/servers: our guards and patches)"
    if filename.startswith(str(ROOT) + "/"):
        return "ours"
    return None


def short(filename: str) -> str:
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1]
    if filename.startswith(str(ROOT) + "/"):
        return filename[len(str(ROOT)) + 1 :]
    parts = filename.split("/")
    return "/".join(parts[-2:]) if "python3" in filename else filename


# ------------------------------------------------------------------ clients


class Idle(WSListener):
    """One idle socket: ready once the room's hello, backlog, synced and presence are in (ours)
    or once accepted (bare); answers pings; counts a close."""

    def __init__(self, contract: bool) -> None:
        self.contract = contract
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()
        self.synced = False
        self.closed = False

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        if not self.contract:
            self.ready.set_result(True)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        m = orjson.loads(frame.get_payload_as_bytes())
        kind = m.get("type")
        if kind == "ping":
            transport.send(TEXT, b'{"type":"pong"}')
        elif not self.ready.done():
            if kind == "synced":
                self.synced = True
            elif kind == "presence" and self.synced:
                self.ready.set_result(True)
            elif kind == "error":
                self.ready.set_exception(ConnectionError(f"error frame: {m}"))


async def open_sockets(
    t: Target, rooms: list[str], n: int, first: int, room_size: int, concurrency: int, errors: list[str]
) -> list[Idle]:
    """`n` idle sockets, socket i in room rooms[i // room_size] as user (first + i) % users;
    the failures of dials tried again are added to `errors`."""
    sem = asyncio.Semaphore(concurrency)
    opened: list[Idle] = []

    async def dial(i: int) -> None:
        c = Idle(t.contract)
        url = f"ws://{HOST}:{t.ports[0]}/ws/rooms/{rooms[i // room_size]}/"
        async with sem:
            for _attempt in range(3):  # bounded: a 1013 (admission) or a refused dial is tried again
                try:
                    await ws_connect(lambda c=c: c, url, extra_headers=t.headers(first + i), websocket_handshake_timeout=20)
                    await asyncio.wait_for(c.ready, 30)
                    opened.append(c)
                    return
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    if c.transport is not None:
                        c.transport.disconnect()
                    await asyncio.sleep(0.5)
                    c = Idle(t.contract)

    await asyncio.wait_for(asyncio.gather(*(dial(i) for i in range(n))), 60 + n / 20)
    if len(opened) < n:
        raise BenchError(f"{t.name}: {n - len(opened)} of {n} sockets did not open: {errors[:3]}")
    return opened


async def close_sockets(sockets: list[Idle]) -> None:
    for c in sockets:
        if c.transport is not None and not c.closed:
            c.transport.send_close()
            c.transport.disconnect()
    await asyncio.sleep(0.5)


# ------------------------------------------------------------------ targets


def make_target(name: str, a: argparse.Namespace, tmp: Path, redis_url: str, trace: bool) -> Target:
    # Tracing starts with the first snapshot (core.memtrace), after the warm-up: a worker traced
    # from its first import takes minutes to start.
    extra = {"TRACEMALLOC_FRAMES": str(a.trace_frames), "TRACEMALLOC_SNAPSHOT_DIR": str(tmp)} if trace else {}
    if name == "ours":
        # Handshakes are admitted as fast as they come (WS_ADMIT_PER_SECOND): not what is measured.
        # While tracing, no heartbeat: a ping and its pong re-make every socket's receive
        # futures, the warm-up's too, and those would count as the new sockets' heap.
        quiet = {"WS_HEARTBEAT_SECONDS": "3600"} if trace else {}
        env = ours_env(tmp, redis_url, WS_ADMIT_PER_SECOND="100000", **quiet, **extra)
        return Target("ours", f"the project, {a.server}", env, asgi_argv(a.server, "config.asgi:application"), contract=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench"), **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return Target(
        "bare", f"ASGI app that only accepts, {a.server}", env, asgi_argv(a.server, "bare_accept:application"), contract=False
    )


def create_rooms(t: Target, rooms: list[str]) -> None:
    if not t.contract:
        return
    headers = {"Authorization": f"Bearer {t.tokens[0]}"}
    with httpx.Client(base_url=f"http://{HOST}:{t.ports[0]}", headers=headers, timeout=10, trust_env=False) as c:
        for slug in rooms:
            r = c.post("/api/rooms/", json={"slug": slug, "title": slug})
            if r.status_code not in (201, 409):
                raise BenchError(f"ours: POST /api/rooms/ {slug}: HTTP {r.status_code} {r.text[:300]}")


def snapshot(pid: int, tmp: Path, timeout: float = 90.0) -> tracemalloc.Snapshot:
    """Ask the worker for a heap snapshot (core.memtrace) and load it."""
    before = set(tmp.glob(f"{pid}-*.snapshot"))
    os.kill(pid, signal.SIGUSR2)
    deadline = mono() + timeout
    while mono() < deadline:
        new = set(tmp.glob(f"{pid}-*.snapshot")) - before
        if new:
            path = new.pop()
            snap = tracemalloc.Snapshot.load(str(path))
            path.unlink()
            return snap.filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
            )
        time.sleep(0.2)
    raise BenchError(f"worker {pid} wrote no heap snapshot in {timeout:.0f} s (is TRACEMALLOC_SNAPSHOT_DIR handled?)")


def heap_report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> dict[str, Any]:
    """The heap grown between the snapshots, per socket: by owner group and by owning site."""
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    sites: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    stacks: dict[tuple[str, str, str], str] = {}  # the largest traceback of each site, outermost first
    largest: dict[tuple[str, str, str], int] = defaultdict(int)
    for diff in after.compare_to(before, "traceback"):
        if not diff.size_diff and not diff.count_diff:
            continue
        frames = list(reversed(diff.traceback))  # innermost first
        owner, site = "stdlib", frames[0] if frames else None
        for frame in frames:
            group = owner_of(frame.filename)
            if group is not None:
                owner, site = group, frame
                break
        inner = frames[0] if frames else None
        where = f"{short(site.filename)}:{site.lineno}" if site else "?"
        via = f"{short(inner.filename)}:{inner.lineno}" if inner is not None and inner is not site else ""
        key = (owner, where, via)
        for acc in (groups[owner], sites[key]):
            acc[0] += diff.size_diff
            acc[1] += diff.count_diff
        if diff.size_diff > largest[key]:
            largest[key] = diff.size_diff
            stacks[key] = " < ".join(f"{short(f.filename)}:{f.lineno}" for f in frames)
    total = sum(v[0] for v in groups.values())
    by_group = {
        g: {"kib": round(v[0] / n / 1024, 3), "blocks": round(v[1] / n, 2)}
        for g, v in sorted(groups.items(), key=lambda kv: -kv[1][0])
    }
    ranked = sorted(sites.items(), key=lambda kv: -abs(kv[1][0]))[:top]
    return {
        "kib_per_conn": round(total / n / 1024, 3),
        "by_group": by_group,
        "top_sites": [
            {
                "group": g,
                "site": s,
                "via": v,
                "bytes": round(val[0] / n),
                "blocks": round(val[1] / n, 2),
                "stack": stacks.get((g, s, v), ""),
            }
            for (g, s, v), val in ranked
        ],
    }


def run_target(name: str, a: argparse.Namespace, tmp: Path, procs: Procs, redis_url: str, flush: Any) -> dict[str, Any]:
    rooms = [f"idle-{i}" for i in range(max(1, -(-max(a.conns, a.trace_conns) // a.room_size)))]
    warm_rooms = ["idle-warm"]
    out: dict[str, Any] = {"name": name}
    tokens: list[str] = []
    for phase in ("rss", "heap"):
        if phase == "heap" and not a.trace_conns:
            continue
        t = make_target(name, a, tmp, redis_url, trace=phase == "heap")
        out["desc"] = t.desc
        if name == "ours":
            if not tokens:
                ours_prepare(t, a.users)
                tokens = t.tokens
            t.tokens = tokens
        t.start(procs, 1)
        pid = t.procs[0].pid
        try:
            if phase == "rss":
                create_rooms(t, rooms + warm_rooms)
            out[phase] = uvloop.run(asyncio.wait_for(measure(a, t, pid, phase, rooms, warm_rooms, tmp), 110))
        finally:
            procs.stop(t.procs)
            flush()
        r = out[phase]
        if phase == "rss":
            print(
                f"  {name} rss: {r['conns']} sockets, {r['rss_before_kib']} -> {r['rss_after_kib']} KiB:"
                f" {r['kib_per_conn']} KiB each",
                file=sys.stderr,
            )
        else:
            print(f"  {name} heap: {r['conns']} sockets, {r['kib_per_conn']} KiB each (traced)", file=sys.stderr)
    return out


async def measure(
    a: argparse.Namespace, t: Target, pid: int, phase: str, rooms: list[str], warm_rooms: list[str], tmp: Path
) -> dict[str, Any]:
    n = a.conns if phase == "rss" else a.trace_conns
    errors: list[str] = []
    warm = await open_sockets(t, warm_rooms, a.warmup, 10_000, a.warmup, a.concurrency, errors)
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    if phase == "rss":
        before: Any = rss_kib(pid)
    else:
        before = await loop.run_in_executor(None, snapshot, pid, tmp)
    t0 = mono()
    concurrency = a.concurrency if phase == "rss" else a.trace_concurrency
    sockets = await open_sockets(t, rooms, n, 0, a.room_size, concurrency, errors)
    open_s = mono() - t0
    await asyncio.sleep(a.hold)
    alive = sum(1 for c in sockets if not c.closed)
    if phase == "rss":
        after = rss_kib(pid)
        res: dict[str, Any] = {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": round((after - before) / n, 2) if after and before else None,
        }
    else:
        res = heap_report(before, await loop.run_in_executor(None, snapshot, pid, tmp), n, a.top)
    await close_sockets(sockets + warm)
    return {
        "conns": n,
        "warmup": a.warmup,
        "open_s": round(open_s, 2),
        "alive_after_hold": alive,
        "redialed": len(errors),
        "redial_errors": errors[:5],
        **res,
    }


# ------------------------------------------------------------------ main


def report(results: list[dict[str, Any]]) -> str:
    head = ("target", "sockets", "RSS KiB per socket", "traced heap KiB per socket")
    rows: list[tuple[str, ...]] = [
        (str(r["desc"]), fmt(r["rss"]["conns"]), fmt(r["rss"]["kib_per_conn"], 2), fmt(r.get("heap", {}).get("kib_per_conn"), 2))
        for r in results
    ]
    parts = [md_table(head, rows)]
    for r in results:
        heap = r.get("heap")
        if not heap:
            continue
        parts.append(f"\n{r['desc']}: traced heap per socket by owner ({heap['conns']} sockets)\n")
        parts.append(
            md_table(
                ("owner", "KiB", "blocks"), [(g, fmt(v["kib"], 3), fmt(v["blocks"], 2)) for g, v in heap["by_group"].items()]
            )
        )
        parts.append(f"\n{r['desc']}: top allocation sites per socket\n")
        parts.append(
            md_table(
                ("owner", "site", "via (innermost)", "bytes", "blocks"),
                [(s["group"], s["site"], s["via"], fmt(s["bytes"]), fmt(s["blocks"], 2)) for s in heap["top_sites"]],
            )
        )
    return "\n".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="ours,bare", help="which of ours,bare, in that order")
    p.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    p.add_argument("--conns", type=int, default=1000, help="idle sockets measured for RSS")
    p.add_argument("--trace-conns", type=int, default=200, help="idle sockets measured with tracemalloc (0: skip)")
    p.add_argument("--trace-frames", type=int, default=10, help="frames kept per traced allocation")
    p.add_argument(
        "--trace-concurrency", type=int, default=10, help="handshakes in flight while tracing (a traced worker is slow)"
    )
    p.add_argument(
        "--warmup", type=int, default=200, help="sockets opened before the first reading (caches fill, one-time costs)"
    )
    p.add_argument("--room-size", type=int, default=100)
    p.add_argument("--users", type=int, default=20, help="bench users (tokens used round-robin)")
    p.add_argument("--hold", type=float, default=3.0, help="seconds the sockets stay idle before the reading")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    p.add_argument("--top", type=int, default=20, help="allocation sites listed")
    p.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args()
    targets = [x for x in a.targets.split(",") if x]
    if not set(targets) <= {"ours", "bare"}:
        p.error("--targets takes ours and bare")

    def body(tmp: Path, procs: Procs) -> list[dict[str, Any]]:
        _redis_proc, url, client = start_redis(procs, tmp)
        return [run_target(name, a, tmp, procs, url, client.flushall) for name in targets]

    status, doc, out = session(a, "idle_memory", body)
    if status:
        return status
    print(report(doc["targets"]))
    print(f"\n{doc['env']['git']}; JSON: {shown(out)}" if out else "")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
