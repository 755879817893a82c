#!/usr/bin/env python3
"""Reactions benchmark (issue 17): a fixed rate of `react` frames in one room of M members over W workers.

One run starts a private redis-server and the project's W daphne workers (fresh SQLite, one bearer
token per member), creates one room with a few messages in it, connects M member sockets (distinct
users, round-robin over the workers), then the first R members toggle emoji on those messages at a
fixed total rate for a bounded time. Every `reactions` frame is matched to the `react` that caused
it by its `seq` and measured from that send to its receipt by every member; every member must get
every seq exactly once. Prints one markdown table and writes bench/results/<UTC timestamp>_reactions.json.
Loopback only; every wait is bounded; every process started here is stopped at the end. See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import gc
import os
import shutil
import sqlite3
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
)
from picows import WSListener, WSMsgType, ws_connect

loads = orjson.loads
TEXT = WSMsgType.TEXT
EMOJI = ["\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f389", "\U0001f62e", "\U0001f622"]  # CHAT_REACTIONS' default
ROOM = "bench-reactions"


# ------------------------------------------------------------------ set-up


def create_room(t: Target, messages: int) -> list[int]:
    """The room and `messages` messages to react to (by member 0, over REST); their ids."""
    headers = {"Authorization": f"Bearer {t.tokens[0]}"}
    ids = []
    with httpx.Client(base_url=f"http://{HOST}:{t.ports[0]}", headers=headers, timeout=10, trust_env=False) as c:
        r = c.post("/api/rooms/", json={"slug": ROOM, "title": ROOM})
        if r.status_code not in (201, 409):
            raise BenchError(f"POST /api/rooms/: HTTP {r.status_code} {r.text[:300]}")
        for i in range(messages):
            r = c.post(f"/api/rooms/{ROOM}/messages", json={"content": f"react to me ({i})"})
            if r.status_code != 201:
                raise BenchError(f"POST /api/rooms/{ROOM}/messages: HTTP {r.status_code} {r.text[:300]}")
            ids.append(int(r.json()["id"]))
    return ids


def api_reactions(t: Target, ids: list[int]) -> dict[int, dict[str, list[str]]]:
    """The messages' reaction sets as the database has them (GET .../messages over the other worker)."""
    headers = {"Authorization": f"Bearer {t.tokens[0]}"}
    with httpx.Client(base_url=f"http://{HOST}:{t.ports[-1]}", headers=headers, timeout=30, trust_env=False) as c:
        r = c.get(f"/api/rooms/{ROOM}/messages", params={"after": min(ids) - 1, "limit": 200})
        r.raise_for_status()
        return {m["id"]: m.get("reactions") or {} for m in r.json()["messages"] if m["id"] in ids}


def same_sets(x: dict[str, list[str]] | None, y: dict[str, list[str]] | None) -> bool:
    """Two reaction sets alike (who reacted with what; the order within an emoji aside)."""
    return {e: sorted(u) for e, u in (x or {}).items() if u} == {e: sorted(u) for e, u in (y or {}).items() if u}


class ChangeLog:
    """The room's change log read from the workers' SQLite file (read-only; WAL, so the writers
    are not held up): which seq each reaction change took and on which message."""

    def __init__(self, database_url: str) -> None:
        path = database_url.removeprefix("sqlite:///")
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        self.room_id = self.db.execute("SELECT id FROM chat_room WHERE slug = ?", (ROOM,)).fetchone()[0]

    def reactions_after(self, seq: int) -> list[tuple[int, int]]:
        """(seq, message id) of every reaction change after `seq`, ascending."""
        q = "SELECT seq, message_id FROM chat_roomchange WHERE room_id = ? AND kind = 'reactions' AND seq > ? ORDER BY seq"
        return self.db.execute(q, (self.room_id, seq)).fetchall()

    def close(self) -> None:
        self.db.close()


# ------------------------------------------------------------------ load


class Member(WSListener):
    """One member's socket: hello (its username), backlog, synced (the room's seq), presence, then
    every `reactions` frame's seq, message and arrival time, appended to arrays (judged afterwards),
    and the last set it was told for each message."""

    def __init__(self, load: Load, idx: int) -> None:
        self.load, self.idx = load, idx
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()
        self.user = ""
        self.synced_seq: int | None = None
        self.closed = False
        self.close_code: int | None = None
        self.seqs = array.array("q")
        self.ids = array.array("q")
        self.at = array.array("q")
        self.last: dict[int, tuple[int, dict[str, list[str]]]] = {}  # message -> (seq, set) of its newest frame

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        self.load.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready (code {self.close_code})"))

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        now = mono_ns()
        ld = self.load
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self.close_code = frame.get_close_code()
                transport.send_close(self.close_code)
                transport.disconnect()
            return
        m = loads(frame.get_payload_as_bytes())
        kind = m.get("type")
        if kind == "reactions":
            seq, mid = m.get("seq"), m.get("id")
            self.seqs.append(seq)
            self.ids.append(mid)
            self.at.append(now)
            ld.recv += 1
            prev = self.last.get(mid)
            if prev is None or seq > prev[0]:
                self.last[mid] = (seq, m.get("reactions"))
        elif kind == "ping":
            transport.send(TEXT, b'{"type":"pong"}')
        elif kind == "error":
            ld.errors.append(m)
        elif not self.ready.done():
            if kind == "hello":
                self.user = m.get("user", "")
            elif kind == "synced":
                self.synced_seq = m.get("seq")
            elif kind == "presence" and self.synced_seq is not None:
                self.ready.set_result(True)
        elif kind in ("message", "message_edited", "message_deleted", "message_restored"):
            ld.other_changes += 1  # nothing else changes the room during a run


class Load:
    """Connect, warm up, one judged window at a fixed rate, close. Single event loop, no locks.

    Reactor r reacts to message r only, so the changes of message r (the change log, in seq
    order) are reactor r's reacts in the order sent: its socket handles them one after the other,
    and each one toggles an emoji, so each takes exactly one seq."""

    def __init__(self, a: argparse.Namespace, t: Target, redis_pid: int, ids: list[int], log: ChangeLog) -> None:
        self.a, self.t, self.redis_pid, self.ids, self.log = a, t, redis_pid, ids, log
        self.members: list[Member] = []
        self.recv = self.disconnects = self.other_changes = 0
        self.errors: list[dict[str, Any]] = []
        self.sends: list[list[tuple[int, int, str]]] = [[] for _ in ids]  # per reactor: (send ns, window, nonce)
        self.matched = [0] * len(ids)  # per reactor: sends matched to a change so far
        self.on: dict[tuple[int, str], bool] = {}  # (reactor, emoji) -> reacted
        self.change: dict[int, tuple[int, int, int]] = {}  # seq -> (message, send ns, window)
        self.logged = 0  # the highest seq read from the change log
        self.unmatched: list[dict[str, Any]] = []
        self.base_seq = 0

    async def connect(self) -> dict[str, Any]:
        a, t = self.a, self.t
        n = a.members
        sem = asyncio.Semaphore(50)
        members: list[Member | None] = [None] * n
        errors: list[str] = []

        async def dial(i: int) -> None:
            c = Member(self, i)
            url = f"ws://{HOST}:{t.ports[i % len(t.ports)]}/ws/rooms/{ROOM}/"  # round-robin, not sticky
            async with sem:
                try:
                    await ws_connect(lambda: c, url, extra_headers=t.headers(i), websocket_handshake_timeout=20, max_redirects=0)
                    await asyncio.wait_for(c.ready, 30)
                    members[i] = c
                except Exception as e:  # any failure: reported, and the member re-dialled
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    if c.transport is not None:
                        c.transport.disconnect()

        t0 = mono()
        await asyncio.wait_for(asyncio.gather(*(dial(i) for i in range(n))), 60 + n / 10)
        for _ in range(2):  # re-dial failures, bounded
            missing = [i for i in range(n) if members[i] is None]
            if not missing:
                break
            await asyncio.sleep(0.5)
            await asyncio.wait_for(asyncio.gather(*(dial(i) for i in missing)), 60 + len(missing) / 10)
        if any(c is None for c in members):
            raise BenchError(f"{sum(c is None for c in members)} of {n} members could not connect: {errors[:3]}")
        self.members = [c for c in members if c is not None]
        seqs = {c.synced_seq for c in self.members}
        if len(seqs) != 1:
            raise BenchError(f"the members were synced at different seqs: {sorted(s or 0 for s in seqs)}")
        self.base_seq = self.logged = seqs.pop() or 0
        await asyncio.sleep(1.0)  # the presence frames of the last joins
        return {
            "connect_s": round(mono() - t0, 2),
            "redialed": len(errors),
            "error_sample": errors[:3],
            "base_seq": self.base_seq,
        }

    def snap(self) -> tuple[float, list[int], int, int, tuple[int, int]]:
        workers = [cpu_ticks(p.pid) for p in self.t.procs]
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

    def read_log(self) -> None:
        """Match the change log's new reaction changes to the sends, reactor by reactor, in order."""
        index = {mid: r for r, mid in enumerate(self.ids)}
        for seq, mid in self.log.reactions_after(self.logged):
            self.logged = seq
            r = index.get(mid)
            if r is None or self.matched[r] >= len(self.sends[r]):
                self.unmatched.append({"seq": seq, "id": mid, "why": "a change with no react to explain it"})
                continue
            t_ns, window, _nonce = self.sends[r][self.matched[r]]
            self.matched[r] += 1
            self.change[seq] = (mid, t_ns, window)

    def covered(self) -> bool:
        """Every send has its change, and every member has a frame at or past each message's last one."""
        self.read_log()
        if any(m < len(s) for m, s in zip(self.matched, self.sends, strict=True)):
            return False
        newest: dict[int, int] = {}
        for seq, (mid, _t, _w) in self.change.items():
            newest[mid] = max(newest.get(mid, 0), seq)
        return all(c.last.get(mid, (0,))[0] >= seq for c in self.members for mid, seq in newest.items())

    async def run_window(self, window: int, rate: float, duration: float) -> dict[str, Any]:
        a, members = self.a, self.members
        reactors = members[: a.reactors]
        nr, ids = len(reactors), self.ids
        total = max(1, round(rate * duration))
        ks = [len(s) for s in self.sends]
        errors0, disc0 = len(self.errors), self.disconnects
        marks = [len(c.seqs) for c in members]
        seq0 = self.logged
        sent = 0
        gc.collect()
        gc.disable()
        c0 = self.snap()
        t0 = mono()
        hard_stop = t0 + 2 * duration + 5
        while sent < total and mono() < hard_stop:
            due = min(total, int((mono() - t0) * rate) + 1)
            while sent < due:
                r = sent % nr
                k = ks[r]
                ks[r] = k + 1
                emoji = EMOJI[k % a.emoji]
                on = not self.on.get((r, emoji), False)  # a toggle: every react changes the set
                self.on[(r, emoji)] = on
                nonce = f"{window}.{r}.{k}"
                frame = {"type": "react", "id": ids[r], "emoji": emoji, "on": on, "nonce": nonce}
                t_ns = mono_ns()
                reactors[r].transport.send(TEXT, orjson.dumps(frame))
                self.sends[r].append((t_ns, window, nonce))
                sent += 1
            if sent < total:
                # never sleep under 1 ms: shorter timers spin, and the generator shares the servers' cores
                await asyncio.sleep(max(0.001, sent / rate - (mono() - t0)))
        t_send = mono() - t0
        # Wait until every react is in the change log and every member is told, as long as that
        # progresses (an overloaded server works off its backlog first): at most --drain s without
        # a new frame or change, and at most 2 x duration + 30 s in all.
        cap, progress, last = mono() + 2 * duration + 30, mono(), (self.recv, self.logged)
        while mono() < cap and mono() - progress < a.drain:
            if len(self.errors) > errors0:
                # a refused react takes no seq: it explains no change (and fails the window)
                refused = {e.get("nonce") for e in self.errors[errors0:]}
                for r, s in enumerate(self.sends):
                    keep = [x for i, x in enumerate(s) if i < self.matched[r] or x[2] not in refused]
                    s[:] = keep
            if self.covered():
                break
            if (self.recv, self.logged) != last:
                progress, last = mono(), (self.recv, self.logged)
            await asyncio.sleep(0.05)
        c1 = self.snap()
        gc.enable()
        self.read_log()
        return self.judge(window, rate, duration, total, sent, t_send, seq0, marks, c0, c1, errors0, disc0)

    def judge(
        self,
        window: int,
        rate: float,
        duration: float,
        total: int,
        sent: int,
        t_send: float,
        seq0: int,
        marks: list[int],
        c0: Any,
        c1: Any,
        errors0: int,
        disc0: int,
    ) -> dict[str, Any]:
        """Per member and change of the window: delivered when the member got a frame of that
        message with this seq or a later one (the hub's backfill may fold several changes of a
        message into one frame of its current state: docs/protocol.md, "Room changes"); its
        latency is the first such frame's arrival minus the react's send."""
        a, members = self.a, self.members
        changes = sorted((s, mid, t) for s, (mid, t, w) in self.change.items() if w == window)
        by_msg: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)  # message -> (seq, send ns)
        for s, mid, t in changes:
            by_msg[mid].append((s, t))
        lat = array.array("q")
        per_member_p99: list[float] = []
        lost = dups = reordered = direct = frames = 0
        lost_sample: list[dict[str, Any]] = []
        for c, mark in zip(members, marks, strict=True):
            got: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)  # message -> (seq, arrival ns)
            seen: set[int] = set()
            prev = 0
            for i in range(len(c.seqs)):
                s = c.seqs[i]
                if i >= mark:
                    frames += 1
                    if s in seen:
                        dups += 1
                    elif s < prev:
                        reordered += 1
                    prev = max(prev, s)
                seen.add(s)
                got[c.ids[i]].append((s, c.at[i]))
            mlat = array.array("q")
            missing = []
            for mid, wanted in by_msg.items():
                rx = sorted(got.get(mid, ()))
                # the earliest arrival among the frames at or after each seq (suffix minimum)
                first = [0] * len(rx)
                best = 1 << 62
                for j in range(len(rx) - 1, -1, -1):
                    best = min(best, rx[j][1])
                    first[j] = best
                j = 0
                for s, t in wanted:
                    while j < len(rx) and rx[j][0] < s:
                        j += 1
                    if j == len(rx):
                        missing.append(s)
                        continue
                    mlat.append(first[j] - t)
                    direct += rx[j][0] == s
            if missing:
                lost += len(missing)
                if len(lost_sample) < 10:
                    lost_sample.append({"member": c.idx, "user": c.user, "missing": sorted(missing)[:20]})
            lat.extend(mlat)
            per_member_p99.append(pctl_ms(sorted(mlat), 0.99) or 0.0)
        refused = self.errors[errors0:]
        codes = collections.Counter(e.get("code") for e in refused)
        deliveries = len(changes) * len(members) - lost
        unsent = sum(len(s) - m for s, m in zip(self.sends, self.matched, strict=True))
        slat = sorted(lat)
        r: dict[str, Any] = {
            "window": window,
            "offered_reacts_s": round(rate, 1),
            "duration_s": duration,
            "sent": sent,
            "achieved_reacts_s": round(sent / t_send, 1),
            "refused": len(refused),
            "refused_codes": dict(codes),
            "refused_sample": refused[:3],
            "changes": len(changes),
            "seq_range": [changes[0][0], changes[-1][0]] if changes else None,
            "reacts_without_change": unsent,
            "changes_without_react": len(self.unmatched),
            "unmatched_sample": self.unmatched[:5],
            "members": len(members),
            "expected_deliveries": len(changes) * len(members),
            "deliveries": deliveries,
            "delivered_as_own_seq": direct,
            "folded_into_later_seq": deliveries - direct,
            "frames_received": frames,
            "lost": lost,
            "lost_sample": lost_sample,
            "dups": dups,
            "reordered": reordered,
            "other_changes": self.other_changes,
            "disconnects": self.disconnects - disc0,
            "p50_ms": pctl_ms(slat, 0.5),
            "p95_ms": pctl_ms(slat, 0.95),
            "p99_ms": pctl_ms(slat, 0.99),
            "max_ms": pctl_ms(slat, 1.0),
            "worst_member_p99_ms": max(per_member_p99) if per_member_p99 else None,
            **self.cpu(c0, c1, deliveries),
        }
        why = []
        if lost:
            why.append(f"lost {lost}")
        if dups:
            why.append(f"{dups} duplicated")
        if reordered:
            why.append(f"{reordered} reordered")
        if unsent or self.unmatched:
            why.append(f"{unsent} reacts without a change, {len(self.unmatched)} changes without a react")
        if r["p99_ms"] is not None and r["p99_ms"] > a.p99_ms:
            why.append(f"p99 {r['p99_ms']} ms > {a.p99_ms:g}")
        if r["disconnects"]:
            why.append(f"{r['disconnects']} disconnects")
        if refused:
            why.append(f"{len(refused)} reacts refused {dict(codes)}")
        if sent < total or r["achieved_reacts_s"] < 0.95 * rate:
            why.append("the generator could not hold the rate")
        r["ok"] = not why
        r["fail_reason"] = "; ".join(why)
        print(
            f"  window {window}: {rate:g} reacts/s x {duration:g} s -> {len(changes)} changes x {len(members)} members,"
            f" {deliveries} delivered ({deliveries - direct} folded)  p50 {r['p50_ms']} p95 {r['p95_ms']} p99 {r['p99_ms']}"
            f" max {r['max_ms']} ms  lost {lost} dup {dups} reord {reordered}  cpu srv {r['server_cpu_pct']}"
            f" redis {r['redis_cpu_pct']} gen {r['loadgen_cpu_pct']} other {r['other_cpu_pct']}"
            f"  {'ok' if r['ok'] else 'FAIL: ' + r['fail_reason']}",
            file=sys.stderr,
            flush=True,
        )
        return r

    async def run(self) -> dict[str, Any]:
        a = self.a
        out: dict[str, Any] = {"connect": await self.connect()}
        windows = []
        if a.warmup > 0:
            windows.append(await self.run_window(0, a.rate, a.warmup))
            windows[0]["warmup"] = True
            await asyncio.sleep(0.5)
        windows.append(await self.run_window(1, a.rate, a.duration))
        await asyncio.sleep(0.5)
        out["windows"] = windows
        out["result"] = windows[-1]
        out["member_sets"] = [{mid: s for mid, (_seq, s) in c.last.items()} for c in self.members]
        await self.close()
        return out

    async def close(self) -> None:
        open_ = [c.transport for c in self.members if not c.closed]
        for tr in open_:
            tr.send_close()
            tr.disconnect()
        if open_:
            await asyncio.wait([asyncio.ensure_future(tr.wait_disconnected()) for tr in open_], timeout=3)


# ------------------------------------------------------------------ report


def table(a: argparse.Namespace, res: dict[str, Any]) -> str:
    head = (
        "workers",
        "members",
        "reacts/s offered / achieved",
        "changes",
        "deliveries (folded)",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "worst member p99 ms",
        "lost",
        "dup",
        "reorder",
        "refused",
        "srv CPU % per worker",
        "srv CPU \u00b5s/delivery",
        "redis CPU %",
        "other CPU %",
        "members converged",
        "verdict",
    )
    r = res["result"]
    cells = (
        str(a.workers),
        fmt(r["members"]),
        f"{fmt(r['offered_reacts_s'], 0)} / {fmt(r['achieved_reacts_s'], 1)}",
        fmt(r["changes"]),
        f"{fmt(r['deliveries'])} of {fmt(r['expected_deliveries'])} ({fmt(r['folded_into_later_seq'])})",
        fmt(r["p50_ms"], 2),
        fmt(r["p95_ms"], 2),
        fmt(r["p99_ms"], 2),
        fmt(r["max_ms"], 2),
        fmt(r["worst_member_p99_ms"], 2),
        fmt(r["lost"]),
        fmt(r["dups"]),
        fmt(r["reordered"]),
        fmt(r["refused"]),
        " / ".join(fmt(x, 0) for x in r["server_cpu_pct"]),
        fmt(r["server_cpu_us_per_delivery"]),
        fmt(r["redis_cpu_pct"]),
        fmt(r["other_cpu_pct"], 0),
        f"{res['converged_members']} of {r['members']}",
        "pass" if r["ok"] and res["converged"] else "FAIL: " + "; ".join(x for x in (r["fail_reason"], res["convergence"]) if x),
    )
    return md_table(head, [cells])


# ------------------------------------------------------------------ main


def run(a: argparse.Namespace, tmp: Path, procs: Procs) -> list[dict[str, Any]]:
    rproc, redis_url, rcli = start_redis(procs, tmp)
    env = ours_env(tmp, redis_url)
    t = Target("ours", f"the project, {a.server}", env, asgi_argv(a.server, "config.asgi:application", 2048), contract=True)
    t0 = mono()
    print(f"## {t.desc}, {a.workers} workers, {a.members} members, {a.reactors} reactors", file=sys.stderr, flush=True)
    ours_prepare(t, users=a.members)
    t.start(procs, a.workers)
    try:
        ids = create_room(t, a.reactors)
        log = ChangeLog(env["DATABASE_URL"])
        try:
            load = Load(a, t, rproc.pid, ids, log)
            res: dict[str, Any] = {"target": t.name, "desc": t.desc, "ports": t.ports, "message_ids": ids}
            budget = 3 * (a.warmup + a.duration) + 2 * a.drain + a.members / 5 + 180
            res.update(uvloop.run(asyncio.wait_for(load.run(), budget)))
        finally:
            log.close()
        stored = api_reactions(t, ids)
        res["stored_sets"] = {str(k): v for k, v in stored.items()}
        # Each member's last set of each message (by seq) against the database's (order within a set aside).
        member_sets = res.pop("member_sets")
        bad = [i for i, sets in enumerate(member_sets) if not all(same_sets(sets.get(mid), stored.get(mid)) for mid in ids)]
        res["converged_members"] = len(member_sets) - len(bad)
        res["converged"] = not bad
        res["convergence"] = f"members {bad[:10]} end with sets other than the database's" if bad else ""
        print(
            f"  members whose last sets equal the database's: {res['converged_members']} of {len(member_sets)}", file=sys.stderr
        )
    finally:
        procs.stop(t.procs)
        rcli.flushall()
        rcli.close()
    res["wall_s"] = round(mono() - t0, 1)
    return [res]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", "-w", type=int, default=2, help="server processes")
    ap.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne", help="ASGI server")
    ap.add_argument("--members", type=int, default=200, help="member sockets in the room, one user each")
    ap.add_argument("--reactors", type=int, default=10, help="members that send the reacts (the first R), one message each")
    ap.add_argument("--emoji", type=int, default=len(EMOJI), help=f"how many of the {len(EMOJI)} default emoji are used")
    ap.add_argument("--rate", type=float, default=100.0, help="reacts per second, in total")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of the judged window")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of an unjudged window first (0: none)")
    ap.add_argument("--drain", type=float, default=5.0, help="after a window, stop waiting after this many s without progress")
    ap.add_argument("--p99-ms", type=float, default=100.0, help="the window passes with p99 <= this and nothing lost")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (database, logs); kept anyway on failure")
    a = ap.parse_args()
    if not (1 <= a.reactors <= a.members <= 5000 and a.workers >= 1 and 1 <= a.emoji <= len(EMOJI)):
        ap.error(f"need 1 <= reactors <= members <= 5000, workers >= 1, 1 <= emoji <= {len(EMOJI)}")
    if not (0 < a.rate <= 5000 and 0 < a.duration <= 600 and 0 <= a.warmup <= 60 and 0 < a.drain <= 60):
        ap.error("need 0 < rate <= 5000, 0 < duration <= 600, 0 <= warmup <= 60, 0 < drain <= 60")
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (make bench-reactions installs it with apt)")

    status, doc, out = session(a, "reactions", lambda tmp, procs: run(a, tmp, procs))
    if out is None:
        return status
    res = doc["targets"][0]
    print(
        f"\n### reactions {doc['timestamp']}: 1 room, {a.members} members over {a.workers} workers, {a.reactors} reactors"
        f" (one message each) toggling {a.emoji} emoji at {a.rate:g}/s in total for {a.duration:g} s,"
        f" pass = p99 <= {a.p99_ms:g} ms and nothing lost\n"
    )
    print(table(a, res))
    print(f"\nJSON: {shown(out)}  (wall {doc['wall_s']:.0f} s)")
    r = res["result"]
    broken = r["lost"] or r["dups"] or r["reordered"] or r["reacts_without_change"] or r["changes_without_react"]
    if broken or not res["converged"]:
        print(
            "bench: FAIL: changes lost, duplicated, reordered or unmatched, or a member's view differs (see the JSON)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
