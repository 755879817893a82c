"""What the benchmarks share: processes, ports, Redis, the project's workers and tokens, CPU, the report.

`bench/fanout.py` and `bench/sse.py` import this as `common` (run as scripts, bench/ is on sys.path).
Loopback only; every wait is bounded; every process started through `Procs` is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
USERS = 20
mono_ns = time.monotonic_ns
mono = time.monotonic
MINT = """
from accounts.services import token_create, user_get_or_create
for i in range(%d):
    user = user_get_or_create(username=f"bench{i}", create=True, staff=False)
    print(token_create(user=user, name="bench")[1])
"""


class BenchError(Exception):
    """A failure of the set-up (not of the server under load): printed, then exit 1."""


# ------------------------------------------------------------------ processes


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: should this script be SIGKILLed, its servers get SIGTERM instead of lingering.
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class Procs:
    """Every process this script starts; `stop` is TERM, up to 5 s, then KILL, only by their pids."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them in order
                preexec_fn=_die_with_parent,
            )
        self.running.append(proc)
        self.logs[proc.pid] = log
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = mono() + 5
        for p in procs:
            try:
                p.wait(max(0.1, deadline - mono()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p in self.running:
                self.running.remove(p)

    def stop_all(self) -> None:
        self.stop(list(reversed(self.running)))

    def tail(self, proc: subprocess.Popen[bytes], lines: int = 30) -> str:
        try:
            return "\n".join(self.logs[proc.pid].read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_listening(procs: Procs, proc: subprocess.Popen[bytes], port: int, name: str, timeout: float = 30.0) -> None:
    deadline = mono() + timeout
    while mono() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not listening after {timeout:.0f} s"
    raise BenchError(f"{name} (pid {proc.pid}, port {port}) {state}; last lines of its log:\n{procs.tail(proc)}")


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of a process and of its living descendants: a worker's CPU where the
    server forks (granian runs its worker as a child of a supervisor process)."""
    total = cpu_ticks(pid)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        total += sum(tree_cpu_ticks(child) for child in children)
    return total


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy, total


def redis_argv(port: int, tmp: Path) -> list[str]:
    """The command line of the benchmarks' redis-server: loopback, nothing saved to disk."""
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    return [*argv, "--dir", str(tmp), "--loglevel", "warning", "--maxclients", "20000"]


def start_redis(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[bytes], str, redis.Redis]:
    """A private redis-server on a free loopback port, nothing saved to disk: (process, URL, client)."""
    port = free_ports(1)[0]
    proc = procs.start("redis", redis_argv(port, tmp), dict(os.environ))
    wait_listening(procs, proc, port, "redis-server", timeout=10)
    print(f"# redis pid {proc.pid} port {port}; logs in {tmp}", file=sys.stderr)
    return proc, f"redis://{HOST}:{port}/0", redis.Redis(host=HOST, port=port, socket_timeout=10)


# ------------------------------------------------------------------ targets


def asgi_argv(server: str, app: str, backlog: int | None = None) -> Callable[[int], list[str]]:
    """The command line of one worker on a port: daphne (default), uvicorn or granian (one
    worker process under granian's supervisor; its CPU is counted with tree_cpu_ticks).
    `backlog`: listen backlog of daphne (Twisted's default is 50; uvicorn's is 2048 anyway,
    granian's 1024)."""
    if server == "granian":

        def argv(port: int) -> list[str]:
            opts = ["--interface", "asgi", "--host", HOST, "--port", str(port), "--workers", "1", "--no-access-log"]
            return [PY, "-m", "granian", *opts, "--log-level", "warning", app]
    elif server == "uvicorn":

        def argv(port: int) -> list[str]:
            opts = ["--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning"]
            return [PY, "-m", "uvicorn", *opts, app]
    elif backlog:

        def argv(port: int) -> list[str]:
            return [PY, "-m", "daphne", "-v", "0", "-e", f"tcp:port={port}:interface={HOST}:backlog={backlog}", app]
    else:

        def argv(port: int) -> list[str]:
            return [PY, "-m", "daphne", "-v", "0", "-b", HOST, "-p", str(port), app]

    return argv


class Target:
    """One server under test: its workers, how a client authenticates, and the protocol it speaks."""

    def __init__(self, name: str, desc: str, env: dict[str, str], argv_for_port: Any, contract: bool) -> None:
        self.name, self.desc, self.env, self.argv_for_port, self.contract = name, desc, env, argv_for_port, contract
        self.tokens: list[str] = []
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def headers(self, i: int) -> list[tuple[str, str]] | None:
        return [("Authorization", f"Bearer {self.tokens[i % len(self.tokens)]}")] if self.tokens else None

    def start(self, procs: Procs, workers: int) -> None:
        self.ports = free_ports(workers)
        self.procs = [procs.start(f"{self.name}-w{i}", self.argv_for_port(p), self.env) for i, p in enumerate(self.ports)]
        for i, (proc, port) in enumerate(zip(self.procs, self.ports, strict=True)):
            wait_listening(procs, proc, port, f"{self.name} worker {i}")


def ours_env(tmp: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """The project's environment: production settings, SQLite in the temp dir, the private Redis,
    chat limits too high to interfere; `extra` on top."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": redis_url,
        "CHAT_RATE_LIMIT": "1000000",
        "CHAT_RATE_WINDOW": "1",
        "CHAT_MAX_CONNECTIONS_PER_USER": "100000",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def ours_prepare(t: Target, users: int = USERS) -> None:
    """Migrate a fresh SQLite database and mint `users` users' tokens (before the workers start)."""
    for what, argv in (
        ("migrate", [PY, "manage.py", "migrate", "-v", "0", "--no-input"]),
        ("mint tokens", [PY, "manage.py", "shell", "-c", MINT % users]),
    ):
        r = subprocess.run(argv, cwd=ROOT, env=t.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise BenchError(f"ours: {what} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    t.tokens = [line for line in r.stdout.split() if line.startswith("rt_")]
    if len(t.tokens) != users:
        raise BenchError(f"ours: expected {users} tokens from manage.py shell, got {len(t.tokens)}:\n{r.stdout[-2000:]}")


# ------------------------------------------------------------------ report


def pctl_ms(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    return round(sorted_ns[min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))] / 1e6, 2)


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def md_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def env_info() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for name in ("django", "channels", "channels-redis", "daphne", "uvicorn", "granian", "redis", "picows", "uvloop", "orjson"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
    return {
        "git": git.stdout.strip() + ("-dirty" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "cpus": NCPU,
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "redis_server": redis_v.stdout.strip(),
        "packages": versions,
    }


# ------------------------------------------------------------------ main


def session(
    a: argparse.Namespace, scenario: str, body: Callable[[Path, Procs], list[dict[str, Any]]]
) -> tuple[int, dict[str, Any], Path | None]:
    """Run `body(tmp, procs)` the benchmarks' way: open-files limit raised, SIGTERM is an exit (so
    the cleanup runs), a temp dir (removed after a good run unless --keep-tmp), every process stopped
    at the end. Returns (0, the JSON document, where it was written), or (exit status, {}, None)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{scenario}-"))
    procs = Procs(tmp)
    t0 = mono()
    done = False
    try:
        env = env_info()
        results = body(tmp, procs)
        done = True
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1, {}, None
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130, {}, None
    finally:
        procs.stop_all()
        if done and not a.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: database and logs kept in {tmp}", file=sys.stderr)

    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    doc = {"timestamp": stamp, "scenario": scenario, "wall_s": round(mono() - t0, 1), "params": params, "env": env}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"{stamp}_{scenario}.json"
    doc["targets"] = results
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0, doc, out


def shown(path: Path) -> Path:
    """`path` relative to the working directory when it is below it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
