"""README.md's commands work as printed: each shell command of its code blocks and its
Python snippet run against the server its own `make run` or `make serve` started.

Only the address changes: README.md's 127.0.0.1:8000 and Redis on 6379 become a free
port and the test's redis-server. The environment is a newcomer's: no DJANGO_* variable
(no secret key), no TOKEN, no make variables; DATABASE_URL points at a file of the test's
own so that the checkout's db.sqlite3 is left alone. `make test` is the one command not
run: it runs this test. The `py` block (Django code: a group_send) runs in `manage.py
shell` while wscat is in the room, under `make serve` only: README.md says the in-process
layer of `make run` lives in the server's process. A command or block README.md gains
fails here until a check covers it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.support.processes import ROOT, RedisServer, free_port

pytestmark = pytest.mark.multiworker

README = ROOT / "README.md"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
# Every variable a user's shell would not have after a fresh clone and that changes what
# these commands do: the settings', the Makefile's, and a TOKEN from an earlier run.
_NOT_A_NEWCOMERS = re.compile(r"^(DJANGO_|REDIS_|DATABASE_|LLM_|PROMETHEUS_|WS_|CHAT_|HTTP_)")
_MAKE_VARIABLES = {"PORT", "HOST", "WORKERS", "WEB_SERVER", "SERVER", "PYTHON", "TOKEN", "MAKEFLAGS", "MFLAGS"}


def all_blocks() -> list[tuple[str, str]]:
    """README.md's fenced blocks: (language, text)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)


def readme_blocks(language: str) -> list[str]:
    return [text for found, text in all_blocks() if found == language]


def readme_commands() -> list[str]:
    return [line.strip() for block in readme_blocks("sh") for line in block.splitlines() if line.strip()]


def long_running(kind: str) -> str:
    (command,) = [c for c in readme_commands() if re.search(rf"\bmake {kind}\b", bare(c))]
    return command


@dataclass
class Session:
    """One user's shell: the environment, and the server the commands talk to."""

    port: int
    redis_url: str
    env: dict[str, str]
    shared_layer: bool = False  # make serve: the channel layer is Redis, other processes reach sockets

    def rewrite(self, command: str) -> str:
        command = command.replace("redis://127.0.0.1:6379/0", self.redis_url)
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        return re.sub(r"\bPORT=8000\b", f"PORT={self.port}", command)

    def run(self, command: str, timeout: float = 60) -> str:
        result = subprocess.run(
            ["bash", "-c", self.rewrite(command)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{command}\nexited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def newcomers_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _NOT_A_NEWCOMERS.match(k) and k not in _MAKE_VARIABLES}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env["LOG_LEVEL"] = "WARNING"
    # npx: wscat from npm's cache once it has been fetched, without asking the registry again.
    env["npm_config_prefer_offline"] = "true"
    env["npm_config_update_notifier"] = "false"
    env["npm_config_fund"] = "false"
    return env


@pytest.fixture(scope="module", autouse=True)
def _venv_installed() -> None:
    """The Makefile's venv step, once (a no-op when the venv is up to date), so that the
    servers' bounded start-up below does not include an install."""
    subprocess.run(["make", ".venv/.installed"], cwd=ROOT, capture_output=True, timeout=600, check=True)


class Started:
    """A README command that keeps running (make run, make serve), in a process group of
    its own, its output in a file."""

    def __init__(self, session: Session, command: str, log: Path) -> None:
        self.command = command
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", session.rewrite(command)],
                cwd=ROOT,
                env=session.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"no 200 from /healthz within {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the group (make, supervisord or runserver and its reloader), then wait
        until none of it is left; SIGKILL what remains after ``timeout``."""
        group = self.process.pid
        with _ignore_gone():
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.poll()
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with _ignore_gone():
            os.killpg(group, signal.SIGKILL)
        self.process.wait(5)


class _ignore_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return kind is ProcessLookupError


# ---- what a user sees from each command ------------------------------------------------


def check_token(session: Session, command: str) -> None:
    out = session.run(command + '\nprintf "\\nTOKEN=%s\\n" "$TOKEN"')
    token = out.strip().splitlines()[-1].removeprefix("TOKEN=")
    assert re.fullmatch(r"rt_[\w-]{20,}", token), out
    session.env["TOKEN"] = token  # as `export` left it in the user's shell


def check_room_created(session: Session, command: str) -> None:
    room = json.loads(session.run(command))
    assert room["slug"] == "lobby" and room["title"] == "Lobby", room


def check_assistant_stream(session: Session, command: str) -> None:
    out = session.run(command)
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", out, flags=re.MULTILINE)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and "token" in kinds, out
    tokens = "".join(json.loads(data)["token"] for kind, data in events if kind == "token")
    assert tokens.startswith("hello there"), out
    assert kinds[-1] == "done", f"the stream ends, here after max_tokens: {kinds}"


def check_task_created(session: Session, command: str) -> None:
    task = json.loads(session.run(command))
    assert task["status"] == "queued" and task["events_url"] == f"/api/tasks/{task['id']}/events", task


def check_room_socket(session: Session, command: str) -> None:
    """A WebSocket client, interactive: wait for the room's greeting, type the line the
    README's comment says to type, see it come back as a message, then end input (as
    Ctrl-D would) and see the client exit 0."""
    typed = re.search(r"# then type (.+)$", command)
    assert typed, command
    process = subprocess.Popen(
        ["bash", "-c", session.rewrite(command)],
        cwd=ROOT,
        env=session.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    lines, pump = _lines(process.stdout)
    seen: list[str] = []
    try:
        _read_until(lines, seen, lambda line: '"type":"presence"' in line, timeout=60)  # npx may fetch wscat
        process.stdin.write(typed.group(1) + "\n")
        process.stdin.flush()
        echo = _read_until(lines, seen, lambda line: '"type":"message"' in line, timeout=15)
        message = json.loads(echo[echo.index("{") :])
        assert message["content"] == json.loads(typed.group(1))["content"] and message["user"] == "alice", echo
        if session.shared_layer:
            for snippet in readme_blocks("py"):  # Django code's group_send, from another process
                check_django_snippet(session, snippet)
                sent = re.search(r'"type": "room\.notice", "content": "([^"]+)"', snippet)
                assert sent, snippet
                notice = _read_until(lines, seen, lambda line: '"type":"notice"' in line, timeout=15)
                assert json.loads(notice[notice.index("{") :]) == {"type": "notice", "content": sent.group(1)}
        process.stdin.close()
        assert process.wait(15) == 0, seen
    finally:
        with _ignore_gone():
            os.killpg(process.pid, signal.SIGKILL)  # npx and the node it started, whatever is left
        process.wait(5)
        pump.join(5)
        process.stdout.close()
        if not process.stdin.closed:
            process.stdin.close()


def check_django_snippet(session: Session, snippet: str) -> None:
    """Django code ("from a view, a signal handler or a task") run as manage.py shell runs it,
    with the server's Redis."""
    env = {**session.env, "REDIS_URL": session.redis_url, "DJANGO_DEBUG": "1"}
    result = subprocess.run(
        [str(VENV_PYTHON), "manage.py", "shell", "-c", snippet],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{snippet}\nexited {result.returncode}:\n{result.stderr}"


def _lines(stream: IO[str]) -> tuple[queue.Queue[str | None], threading.Thread]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _read_until(lines: queue.Queue[str | None], seen: list[str], wanted: Callable[[str], bool], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        assert line is not None, f"ended before the expected line: {seen}"
        seen.append(line)
        if wanted(line):
            return line
    raise AssertionError(f"not within {timeout}s: {seen}")


CHECKS: list[tuple[str, Callable[[Session, str], None]]] = [
    (r"manage\.py mint_token", check_token),
    (r"^curl .*/api/rooms/$", check_room_created),
    (r"ws://\S+/ws/rooms/lobby/$", check_room_socket),
    (r"^curl -N .*/api/assistant/stream$", check_assistant_stream),
    (r"^curl .*/api/tasks/$", check_task_created),
]
SERVERS = (r"^make run$", r"^REDIS_URL=\S+ make serve WORKERS=3 PORT=8000$")
NOT_RUN = (r"^make test\b",)  # it runs this test, and every other one


def talking_commands() -> list[tuple[str, Callable[[Session, str], None]]]:
    """README.md's commands other than the servers' and `make test`, in order, with their
    checks; a command with no check (or two) fails here."""
    planned = []
    for line in readme_commands():
        if any(re.search(p, bare(line)) for p in (*SERVERS, *NOT_RUN)):
            continue
        matching = [check for pattern, check in CHECKS if re.search(pattern, bare(line))]
        assert len(matching) == 1, f"README.md's command {line!r} has {len(matching)} checks here, not one"
        planned.append((line, matching[0]))
    return planned


def bare(command: str) -> str:
    """The command without its trailing comment (bash ignores it; the checks read it)."""
    return re.sub(r"\s+#.*$", "", command)


def test_every_readme_command_is_checked_or_a_server():
    commands = readme_commands()
    for pattern in (*SERVERS, *NOT_RUN):
        assert [c for c in commands if re.search(pattern, bare(c))], pattern
    assert len(talking_commands()) == len(CHECKS)
    kinds = [language for language, _ in all_blocks()]
    # sh: commands; python: a script; py: Django code; no language: not code (the layout).
    assert set(kinds) <= {"sh", "python", "py", ""}, f"a block this test does not run: {kinds}"
    assert len(readme_blocks("python")) == 1 and len(readme_blocks("py")) == 1


@pytest.fixture
def session(redis_server: RedisServer, tmp_path: Path) -> Session:
    return Session(port=free_port(), redis_url=redis_server.url, env=newcomers_env(tmp_path))


@pytest.fixture(params=["run", "serve"])
def server(request: pytest.FixtureRequest, session: Session, tmp_path: Path) -> Iterator[Started]:
    """`make run` (one process, SQLite, the in-process layer) or `make serve` (three daphne
    workers and the task worker on Redis), started as README.md prints it."""
    command = long_running(request.param)
    if request.param == "run":
        session.env["PORT"] = str(session.port)  # `make run` has no address on its line: the Makefile's PORT
    else:
        session.shared_layer = True
    started = Started(session, command, tmp_path / f"make-{request.param}.log")
    try:
        started.wait_healthy(session.port, timeout=60)
        yield started
    finally:
        started.stop()


def test_readme_commands_work_as_printed(server: Started, session: Session):
    if "make serve" in server.command:
        assert "DJANGO_SECRET_KEY is not set: using a random key made for this run" in server.output()
    for command, check in talking_commands():
        check(session, command)
    (snippet,) = readme_blocks("python")
    streamed = subprocess.run(
        [str(VENV_PYTHON), "-c", session.rewrite(snippet)],
        cwd=ROOT,
        env=session.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() == "hi", "the echo model's reply, streamed token by token by the openai SDK"
    assert httpx.get(f"http://127.0.0.1:{session.port}/healthz", timeout=10).status_code == 200
