"""``make audit``: pip-audit on what the server runs, saying clearly when nothing was checked.

Audited: the runtime dependencies (pyproject's ``[project] dependencies`` and theirs, at
the versions installed in this venv) and the installers (pip, setuptools, wheel); not
the test, benchmark or audit tools, which never run in production.

pip-audit asks an advisory service (PyPI's JSON API by default; ``-s osv`` for OSV)
about each pinned version. Two ways it can end up checking nothing look like success
or like a crash: PyPI's API unreachable behind a mirror answers 404, which pip-audit
reports as "not found on PyPI", skips, and then says "No known vulnerabilities found"
with exit status 0; a blocked service is a traceback. Both end here in one line and
their own exit status.

Exit status: 0 nothing known; 1 known vulnerabilities (listed); 2 pip-audit failed
otherwise; 3 the advisory service could not be reached (or answered for only some
packages): not everything was checked.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "realtime-rooms"
INSTALLERS = ("pip", "setuptools", "wheel")
OK, VULNERABLE, FAILED, UNREACHABLE = 0, 1, 2, 3
# What pip-audit and the HTTP stack under it say when a service cannot be reached.
CONNECTION_SIGNS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Could not connect",
    "Timeout",
    "timed out",
    "blocking this service",
)


def runtime_pins(project: str = PROJECT) -> dict[str, str]:
    """Installed name -> version of the project's runtime dependencies, transitively
    (extras asked for included, markers evaluated here), and of the installers."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(project, frozenset())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        distribution = metadata.distribution(name)  # PackageNotFoundError: not installed
        if canonicalize_name(name) != canonicalize_name(project):
            pins[canonicalize_name(distribution.metadata["Name"])] = distribution.version
        for line in distribution.requires or ():
            requirement = Requirement(line)
            marker = requirement.marker
            # Without an extra, a marker like `extra == "test"` is false: test tools stay out.
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    for name in INSTALLERS:
        with contextlib.suppress(metadata.PackageNotFoundError):  # wheel is optional
            pins[name] = metadata.version(name)
    return pins


@dataclass(frozen=True)
class Verdict:
    status: int
    lines: list[str]


def unreachable(reason: str) -> Verdict:
    return Verdict(UNREACHABLE, [f"pip-audit could not reach its advisory service ({reason}): nothing was checked"])


def verdict(returncode: int, stdout: str, stderr: str) -> Verdict:
    """What pip-audit's run (``--format json``) means for whoever ran ``make audit``."""
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), f"exit status {returncode}")
        if any(sign in stderr for sign in CONNECTION_SIGNS):
            return unreachable(last[:300])
        return Verdict(FAILED, [f"pip-audit failed: {last[:300]}"])
    dependencies = report.get("dependencies", [])
    skipped = [dependency for dependency in dependencies if "skip_reason" in dependency]
    if skipped:
        reason = str(skipped[0]["skip_reason"])
        if len(skipped) == len(dependencies):
            return unreachable(f"every one of the {len(dependencies)} packages was skipped: {reason}")
        names = ", ".join(str(dependency["name"]) for dependency in skipped)
        return Verdict(
            UNREACHABLE,
            [
                f"pip-audit could not reach its advisory service for {len(skipped)} of {len(dependencies)} packages "
                f"({names}: {reason}): those were not checked"
            ],
        )
    lines = []
    for dependency in dependencies:
        for vulnerability in dependency.get("vulns", []):
            fixed = ", ".join(vulnerability.get("fix_versions", [])) or "no fixed version yet"
            lines.append(f"{dependency['name']} {dependency['version']}: {vulnerability['id']} (fixed in {fixed})")
    if lines:
        return Verdict(VULNERABLE, [*lines, f"{len(lines)} known vulnerabilities in {len(dependencies)} packages"])
    return Verdict(OK, [f"No known vulnerabilities in {len(dependencies)} packages (runtime dependencies and installers)"])


def main(argv: list[str]) -> int:
    pins = runtime_pins()
    with tempfile.TemporaryDirectory(prefix="audit-") as directory:
        requirements = Path(directory) / "requirements.txt"
        requirements.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        # Every version is pinned and installed: nothing to resolve, so no pip and no venv.
        command = [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip"]
        command += ["--progress-spinner", "off", "--format", "json", *argv]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
    result = verdict(run.returncode, run.stdout, run.stderr)
    print("\n".join(result.lines), file=sys.stderr if result.status else sys.stdout)
    return result.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
