"""deploy/web-server.sh, the image's command: WEB_SERVER picks daphne or uvicorn."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import PYTHON, ROOT, Cluster, RedisServer, free_port, wait_for_port

pytestmark = pytest.mark.multiworker


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_the_images_web_server_script_runs_the_server_web_server_names(server: str, redis_server: RedisServer):
    database = Cluster(redis_server, workers=0)
    port = free_port()
    env = {
        **database.env,
        "WEB_SERVER": server,
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(port),
        "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(["deploy/web-server.sh"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["status"] == "ok"
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(server.encode()) for part in command), command  # exec'd: the server is the process
    finally:
        process.terminate()
        process.wait(10)
        database.stop()


def test_the_web_server_script_refuses_an_unknown_server():
    result = subprocess.run(
        ["deploy/web-server.sh"],
        cwd=ROOT,
        env={**os.environ, "WEB_SERVER": "gunicorn"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2 and "WEB_SERVER must be daphne or uvicorn" in result.stderr
