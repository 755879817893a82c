"""docker-compose.yml, validated without a Docker engine: Debian's docker-compose (v1,
which reads the Compose Specification the v2 plugin reads) checks and resolves it, and
the resolved file is held to the topology the native test (test_topology.py) runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, installed with uvicorn[standard]

from tests.support.processes import NGINX_TEMPLATE, ROOT, nginx_placeholders

WEB = ("web1", "web2", "web3")


def docker_compose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is not installed: run `make test`, which installs Debian's")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DOCKER_", "COMPOSE_"))}
    return subprocess.run([tool, "-f", "docker-compose.yml", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what compose reads, with the .env an operator makes from .env.example."""
    where = tmp_path_factory.mktemp("compose")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, where / name)
    shutil.copytree(ROOT / "deploy", where / "deploy")
    shutil.copy(ROOT / ".env.example", where / ".env")
    return where


@pytest.fixture(scope="module")
def resolved(checkout: Path) -> Iterator[dict[str, Any]]:
    result = docker_compose("config", cwd=checkout)
    assert result.returncode == 0, result.stderr
    yield yaml.safe_load(result.stdout)


def test_docker_compose_config_accepts_the_file(checkout: Path):
    result = docker_compose("config", "-q", cwd=checkout)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"warnings: {result.stderr}"


def test_without_an_env_file_compose_refuses_to_start(checkout: Path, tmp_path: Path):
    bare = tmp_path / "bare"
    shutil.copytree(checkout, bare)
    (bare / ".env").unlink()
    assert docker_compose("config", "-q", cwd=bare).returncode != 0, "the secret key must come from .env"


def test_the_services_and_their_order_of_start(resolved: dict[str, Any]):
    services = resolved["services"]
    assert set(services) == {"redis", "postgres", "migrate", *WEB, "taskworker", "nginx"}
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"], "Redis keeps an append-only file"
    for name in (*WEB, "taskworker"):
        service = services[name]
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert service["environment"]["DATABASE_URL"].startswith("postgres://")
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["WEB_SERVER"] == "daphne", "daphne unless WEB_SERVER says uvicorn"
        assert service["restart"] == "unless-stopped"
        assert "ports" not in service, f"{name} is reachable only through nginx (it trusts X-Forwarded-For)"
    assert services["taskworker"]["command"] == ["python", "manage.py", "taskworker"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "restart" not in services["migrate"], "migrate runs once"
    for name in ("redis", "postgres", *WEB):
        assert services[name]["healthcheck"]["test"], name
    assert services["nginx"]["depends_on"] == {name: {"condition": "service_healthy"} for name in WEB}
    assert services["nginx"]["restart"] == "unless-stopped"


def mounts_of(service: dict[str, Any]) -> list[dict[str, str]]:
    """Volumes as source and target, from either of the two syntaxes `config` may print."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            volume = {"source": source, "target": target}
        mounts.append({"source": volume["source"], "target": volume["target"]})
    return mounts


def test_nginx_renders_the_projects_template_for_every_web_worker(resolved: dict[str, Any]):
    nginx = resolved["services"]["nginx"]
    mounts = mounts_of(nginx)
    assert any(
        m["source"].endswith("deploy/nginx.conf.template") and m["target"] == "/etc/nginx/templates/default.conf.template"
        for m in mounts
    ), mounts
    environment = nginx["environment"]
    assert nginx_placeholders() <= set(environment), "compose sets every variable the template needs"
    assert re.match(environment["NGINX_ENVSUBST_FILTER"], "NGINX_LISTEN")
    assert not re.match(environment["NGINX_ENVSUBST_FILTER"], "host"), "nginx's own variables are left alone"
    servers = re.findall(r"server\s+([\w.-]+):(\d+)\s*;", environment["NGINX_UPSTREAM_SERVERS"])
    assert sorted(host for host, _ in servers) == sorted(WEB) and {port for _, port in servers} == {"8000"}
    static = next(m for m in mounts if m["target"] == environment["NGINX_STATIC_ROOT"])
    assert static["source"] == "static" and any(
        m["source"] == "static" and m["target"] == "/app/staticfiles" for m in mounts_of(resolved["services"]["web1"])
    ), "nginx serves the files collectstatic put in the web image"


def test_the_nginx_template_balances_round_robin_and_passes_streams_unbuffered():
    text = NGINX_TEMPLATE.read_text()
    directives = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # comments aside
    assert re.search(r"upstream web \{\s*\$\{NGINX_UPSTREAM_SERVERS\}\s*\}", directives), "servers only: round-robin"
    for sticky in ("ip_hash", "hash ", "sticky", "least_conn", "random"):
        assert sticky not in directives, sticky
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in directives
    assert "$proxy_add_x_forwarded_for" not in directives, "a client's X-Forwarded-For is replaced, never extended"
    assert "proxy_set_header Upgrade $http_upgrade;" in directives
    assert "proxy_set_header Connection $connection_upgrade;" in directives
    assert "proxy_buffering off;" in directives
    timeouts = dict(re.findall(r"(proxy_read_timeout|proxy_send_timeout) (\d+)s;", directives))
    assert set(timeouts) == {"proxy_read_timeout", "proxy_send_timeout"} and min(map(int, timeouts.values())) >= 60


def _application_packages() -> set[str]:
    return {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}


def test_the_image_copies_every_application_package():
    """A package the Dockerfile leaves out is an image that fails at its first import."""
    copied = {line.split()[1].strip("./") for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert _application_packages() <= copied, sorted(_application_packages() - copied)


def test_the_wheel_carries_every_application_package():
    """`pip install .` (the image's install) packages what pyproject.toml's find lists."""
    import tomllib

    from setuptools import find_packages

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    top_level = {name.split(".")[0] for name in find_packages(str(ROOT), include=found["include"])}
    assert top_level == _application_packages()
