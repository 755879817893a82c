"""The venv's installers and `make audit` (docs/security.md, second review, finding 10).

`make audit` needs pip-audit's advisory service, which a test cannot count on: these
tests run deploy/audit.py against a stand-in `pip_audit` that answers as the real one
does when the service is unreachable, knows nothing, or knows of a vulnerability.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, ROOT

UNREACHABLE_LINE = "pip-audit could not reach its advisory service ("


def make_dry_run(*targets: str) -> list[str]:
    """The commands `make` would run for these targets (`-B`: as on a machine with no venv yet)."""
    done = subprocess.run(["make", "-n", "-B", *targets], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.splitlines()


def test_the_venv_step_upgrades_pip_and_setuptools_before_installing():
    """A new venv has the pip and setuptools bundled with Python (23.2 and 65.5 for 3.11),
    which have published advisories: the venv step upgrades both before anything else."""
    commands = make_dry_run(".venv/.installed")
    installs = [i for i, command in enumerate(commands) if "pip install" in command]
    upgrade = commands[installs[0]].split()
    assert "--upgrade" in upgrade and {"pip", "setuptools"} <= set(upgrade), commands
    assert any("-e" in commands[i].split() for i in installs[1:]), "the project is installed after the upgrade"


def test_the_image_upgrades_pip_and_setuptools_before_installing():
    runs = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line]
    assert "--upgrade" in runs[0].split() and {"pip", "setuptools"} <= set(runs[0].split()), runs
    assert len(runs) > 1, "the project is installed after the upgrade"


def test_make_test_does_not_run_the_audit():
    # (npm ci's --no-audit is the opposite: it keeps npm from asking its advisory service.)
    assert not [command for command in make_dry_run("test") if "audit.py" in command or "pip-audit" in command]
    assert [command for command in make_dry_run("audit") if "audit.py" in command], "the check above would see the audit"


FAKE_PIP_AUDIT = """
import json, os, sys

arguments = sys.argv[1:]
pins = [line.split("==") for line in open(arguments[arguments.index("-r") + 1]).read().split()]
with open(os.environ["FAKE_PIP_AUDIT_SAW"], "w") as seen:
    json.dump({"pins": dict(pins), "arguments": arguments}, seen)
answer = os.environ["FAKE_PIP_AUDIT"]
if answer == "blocked":  # what a blocked service looks like: a traceback, no report
    raise ConnectionError("HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded with url: /v1/query")
dependencies = []
for name, version in pins:
    if answer == "not-found":  # PyPI's JSON API missing behind a mirror: 404 for everything
        reason = f"Dependency not found on PyPI and could not be audited: {name} ({version})"
        dependencies.append({"name": name, "skip_reason": reason})
    else:
        vulns = [{"id": "PYSEC-0000-1", "fix_versions": ["99.0"]}] if answer == "vulnerable" and name == "django" else []
        dependencies.append({"name": name, "version": version, "vulns": vulns})
print(json.dumps({"dependencies": dependencies, "fixes": []}))
sys.exit(1 if any(d.get("vulns") for d in dependencies) else 0)
"""


def audit(tmp_path: Path, answer: str, *arguments: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run deploy/audit.py (what `make audit` runs) against the stand-in pip_audit."""
    package = tmp_path / "pip_audit"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(FAKE_PIP_AUDIT))
    saw = tmp_path / "saw.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAKE_PIP_AUDIT": answer, "FAKE_PIP_AUDIT_SAW": str(saw)}
    done = subprocess.run(
        [PYTHON, "deploy/audit.py", *arguments], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    return done, json.loads(saw.read_text())


@pytest.mark.parametrize("answer", ["blocked", "not-found"])
def test_audit_says_in_one_line_when_its_advisory_service_cannot_be_reached(tmp_path: Path, answer: str):
    """Unreachable, pip-audit either crashes or skips every package and says "No known
    vulnerabilities found" with exit status 0; make audit says that nothing was checked."""
    done, _ = audit(tmp_path, answer)
    assert done.returncode == 3, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(UNREACHABLE_LINE) and lines[0].endswith(": nothing was checked"), lines
    assert "Traceback" not in done.stdout + done.stderr


def test_audit_checks_the_runtime_dependencies_and_the_installers_only(tmp_path: Path):
    done, saw = audit(tmp_path, "clean", "-s", "osv")
    assert done.returncode == 0, done
    assert done.stdout.startswith("No known vulnerabilities in "), done.stdout
    pins = saw["pins"]
    assert {"django", "channels", "channels-redis", "daphne", "redis", "uvicorn", "pip", "setuptools"} <= set(pins)
    assert not {"pytest", "mypy", "playwright", "pip-audit", "realtime-rooms"} & set(pins), (
        "test and audit tools never run in production"
    )
    assert saw["arguments"][-2:] == ["-s", "osv"], "AUDIT_ARGS reach pip-audit"


def test_audit_lists_known_vulnerabilities_and_fails(tmp_path: Path):
    done, saw = audit(tmp_path, "vulnerable")
    assert done.returncode == 1, done
    assert f"django {saw['pins']['django']}: PYSEC-0000-1 (fixed in 99.0)" in done.stderr.splitlines()
