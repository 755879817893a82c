"""Production settings: `manage.py check --deploy` is clean, and HTTPS behind the proxy
redirects plain http except for the health and metrics endpoints that are probed directly."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from tests.support.processes import PYTHON, ROOT, free_port


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "REDIS_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_HTTPS="1",
        DJANGO_ALLOWED_HOSTS="chat.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_https_the_deploy_check_asks_for_secure_cookies_and_hsts(tmp_path: Path):
    """The clean check above is due to DJANGO_HTTPS, not to silenced warnings."""
    result = manage(production_env(tmp_path, DJANGO_HTTPS="0"), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr, warning


def test_https_redirects_plain_http_but_not_probes_and_trusts_the_proxys_scheme(tmp_path: Path):
    code = (
        "import json\n"
        "from django.test import Client\n"
        "client = Client()\n"
        "plain = client.get('/api/rooms/')\n"
        "proxied = client.get('/api/rooms/', headers={'X-Forwarded-Proto': 'https'})\n"
        "print(json.dumps({\n"
        "    'plain': plain.status_code,\n"
        "    'location': plain.headers.get('Location'),\n"
        "    'proxied': proxied.status_code,\n"
        "    'hsts': proxied.headers.get('Strict-Transport-Security'),\n"
        "    'healthz': client.get('/healthz').status_code,\n"
        "    'metrics': client.get('/metrics').status_code,\n"
        "}))\n"
    )
    env = production_env(tmp_path, DJANGO_ALLOWED_HOSTS="testserver", LOG_LEVEL="ERROR")
    assert manage(env, "migrate", "--verbosity", "0").returncode == 0
    result = manage(env, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == 301 and seen["location"] == "https://testserver/api/rooms/"
    assert seen["proxied"] == 401, "over the proxy's https the API answers (here: not signed in)"
    assert seen["hsts"] == "max-age=31536000"
    assert seen["healthz"] == 200 and seen["metrics"] == 200, "probes reach workers over plain http"


def test_a_worker_without_a_secret_key_stops_with_one_line_naming_it(tmp_path: Path):
    """DEBUG off and no DJANGO_SECRET_KEY (make serve makes one; a deployment must set it):
    manage.py and both web servers exit with one line naming the variable, no traceback."""
    env = production_env(tmp_path)
    del env["DJANGO_SECRET_KEY"]
    port = str(free_port())
    for command, prefix in (
        (["manage.py", "migrate"], "manage.py"),
        (["-m", "daphne", "-b", "127.0.0.1", "-p", port, "config.asgi:application"], "config.asgi"),
        (["-m", "uvicorn", "--host", "127.0.0.1", "--port", port, "config.asgi:application"], "config.asgi"),
    ):
        result = subprocess.run([PYTHON, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.splitlines() == [f"{prefix}: environment variable DJANGO_SECRET_KEY is required but not set"]
