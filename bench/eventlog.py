"""The event log's hot path on its own: server-side CPU of one producer's Redis work, per call.

A token stream's producer makes two kinds of Redis calls while it runs: an append per batch of
tokens (`RedisLog.append`, one entry per batch) and a heartbeat every 250 ms (`RedisLog.heartbeat`,
its mark, the log's time to live, the cancel flag). This script times both in this process,
against a private redis-server on a free loopback port, with the code of the tree it is run from:
run it from two worktrees to compare two commits (docs/performance.md, "Per token"). CPU time, not
wall time, so a busy machine moves the figures less than it moves the end-to-end benchmarks.

    .venv/bin/python bench/eventlog.py [--calls 1500] [--batch 32] [--rounds 3]

Loopback only; bounded by --calls and --rounds; the redis-server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Procs, md_table, session, shown, start_redis


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(calls: int, batch: int, rounds: int) -> list[dict[str, Any]]:
    from core.eventlog import LogEvent, get_log

    log = get_log()
    rows = []
    for round_number in range(rounds):
        name = f"bench-{time.time_ns()}"
        await log.create(name, owner_id=1, producer="bench", extra={}, first=[LogEvent(0, "start", {})])
        seq = 1
        started = _cpu()
        for _ in range(calls):
            events = [LogEvent(seq + i, "token", {"index": seq + i - 1, "token": "word "}) for i in range(batch)]
            await log.append(name, events)
            seq += batch
        append_us = (_cpu() - started) / calls * 1e6
        started = _cpu()
        for _ in range(calls):
            await log.heartbeat(name)
        heartbeat_us = (_cpu() - started) / calls * 1e6
        await log.delete(name)
        rows.append({"round": round_number + 1, "append_us": round(append_us, 1), "heartbeat_us": round(heartbeat_us, 1)})
        print(f"  round {round_number + 1}: append {append_us:.0f} µs, heartbeat {heartbeat_us:.0f} µs", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1500, help="appends, then heartbeats, per round")
    ap.add_argument("--batch", type=int, default=32, help="token events per append (the echo backend's batch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    if not 1 <= a.calls <= 100_000 or not 1 <= a.batch <= 1000 or not 1 <= a.rounds <= 20:
        ap.error("--calls 1..100000, --batch 1..1000, --rounds 1..20")

    def body(tmp: Path, procs: Procs) -> list[dict[str, Any]]:
        _, url, _ = start_redis(procs, tmp)
        os.environ["REDIS_URL"] = url  # read by the settings, so before django.setup()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ.setdefault("DJANGO_DEBUG", "1")
        import django

        django.setup()
        return asyncio.run(_measure(a.calls, a.batch, a.rounds))

    status, doc, out = session(a, "eventlog", body)
    if status:
        return status
    rows = doc["targets"]
    print(f"### Event log {doc['timestamp']}: {a.calls} appends of {a.batch} tokens, then {a.calls} heartbeats, per round\n")
    table = [(str(r["round"]), f"{r['append_us']:.0f}", f"{r['heartbeat_us']:.0f}") for r in rows]
    print(md_table(("round", "CPU µs per append", "CPU µs per heartbeat"), table))
    print(f"\nJSON: {shown(out) if out else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
