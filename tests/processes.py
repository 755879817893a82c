"""Real processes for tests: a redis-server and daphne workers on free loopback ports.

Every wait here is bounded; every process started is stopped (and killed if it does
not stop) when its fixture ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class RedisServer:
    """A private redis-server; ``restart`` keeps the port, like an operator's restart."""

    def __init__(self, *, persistent: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class Cluster:
    """Several daphne workers sharing one SQLite database and one Redis."""

    tokens: dict[str, str]  # username -> bearer token, for the users a fixture minted

    def __init__(self, redis: RedisServer, *, workers: int = 3, env: dict[str, str] | None = None) -> None:
        self.redis = redis
        self.dir = Path(tempfile.mkdtemp(prefix="test-cluster-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "test-cluster-not-secret",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{self.dir / 'db.sqlite3'}",
            "REDIS_URL": redis.url,
            "WS_HEARTBEAT_SECONDS": "1",
            "CHAT_RATE_LIMIT": "100000",
            "CHAT_RATE_WINDOW": "1",
            "CHAT_MAX_CONNECTIONS_PER_USER": "1000",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.manage("migrate", "--verbosity", "0")
        self.ports = [free_port() for _ in range(workers)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.taskworkers: list[subprocess.Popen[bytes]] = []
        for index in range(workers):
            self.start_worker(index)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def mint_tokens(self, *usernames: str, staff: bool = False) -> dict[str, str]:
        """Create the users (in one process, not one per user) and return their tokens."""
        code = (
            "import sys, json\n"
            "from accounts.services import token_create, user_get_or_create\n"
            f"names = {list(usernames)!r}\n"
            f"users = [user_get_or_create(username=n, create=True, staff={staff!r}) for n in names]\n"
            "print(json.dumps({u.username: token_create(user=u)[1] for u in users}))"
        )

        return dict(json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1]))

    def start_worker(self, index: int) -> None:
        log = open(self.dir / f"worker{index}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.ports[index]), "project.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[index] = process
        wait_for_port(self.ports[index], process)

    def start_taskworker(self) -> subprocess.Popen[bytes]:
        """A task worker on the cluster's database and Redis (stopped with the cluster)."""
        log = open(self.dir / "taskworker.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [PYTHON, "manage.py", "taskworker"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.taskworkers.append(process)
        return process

    def kill_worker(self, index: int) -> None:
        process = self.processes[index]
        assert process is not None
        process.kill()
        process.wait(5)
        self.processes[index] = None

    def http(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def ws(self, index: int, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.dir.glob("*worker*.log")))

    def stop(self) -> None:
        for process in [*self.processes, *self.taskworkers]:
            if process is not None:
                stop(process)
        shutil.rmtree(self.dir, ignore_errors=True)
