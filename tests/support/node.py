"""Runs a Node script against the npm clients of package.json (eventsource, openai,
axe-core; `make test` installs them with `npm ci`), so tests can drive clients nobody
here wrote.

The script is an ES module evaluated in the repository's root, so ``import … from
"eventsource"`` finds node_modules. It gets ``input`` (any JSON value) as the global
``INPUT`` and answers by printing one JSON value as its last line of output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from tests.support.processes import ROOT

NODE_MODULES = ROOT / "node_modules"


class NodeScriptError(AssertionError):
    """The script failed, timed out or printed no JSON: the message carries its output."""


def run_node(script: str, *, input: Any = None, timeout: float = 30.0) -> Any:
    """Run ``script`` with ``INPUT`` = ``input``; return the JSON of its last output line.

    ``timeout`` bounds the whole run: the process is killed after it."""
    node = shutil.which("node")
    if node is None or not NODE_MODULES.is_dir():
        raise NodeScriptError("Node or the npm clients are missing: run `make test` (or deploy/install-system-deps.sh, npm ci)")
    source = f"globalThis.INPUT = JSON.parse({json.dumps(json.dumps(input))});\n{script}"
    try:
        done = subprocess.run(
            [node, "--input-type=module", "--eval", source],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = f"{error.stdout!s}\n{error.stderr!s}"
        raise NodeScriptError(f"the Node script ran for more than {timeout} s; its output:\n{output}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise NodeScriptError(f"the Node script exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise NodeScriptError(f"the Node script's last line is not JSON:\n{done.stdout}\n{done.stderr}") from None


# The npm `eventsource` package (what a browser's EventSource does, reconnects included),
# reading ``url`` with ``headers`` on every request until the server tells it to stop
# (the connection is CLOSED for good) or ``seconds`` pass. It answers with every event
# (``type``, parsed ``data``, ``id``), every request it made (the Last-Event-ID it sent
# and the status it got) and whether it stopped by itself.
EVENTSOURCE_SCRIPT = """
import { EventSource } from "eventsource";
const { url, headers, kinds, seconds } = INPUT;
const events = [], requests = [], errors = [];
const source = new EventSource(url, {
  fetch: async (input, init) => {
    const sent = { ...init.headers, ...headers };
    const request = { lastEventId: sent["Last-Event-ID"] ?? null, status: null };
    requests.push(request);
    const response = await fetch(input, { ...init, headers: sent });
    request.status = response.status;
    return response;
  },
});
for (const kind of kinds) {
  // An "error" listener also hears the EventSource's own errors, which carry no data.
  source.addEventListener(kind, (e) => {
    if (typeof e.data === "string") events.push({ type: e.type, data: JSON.parse(e.data), id: e.lastEventId });
  });
}
source.onerror = (e) => errors.push({ message: e.message ?? null, code: e.code ?? null });
const deadline = Date.now() + seconds * 1000;
while (source.readyState !== EventSource.CLOSED && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const stopped = source.readyState === EventSource.CLOSED;
source.close();
console.log(JSON.stringify({ events, requests, errors, stopped }));
"""


def eventsource_read(url: str, *, headers: dict[str, str], kinds: list[str], seconds: float = 20.0) -> dict[str, Any]:
    """Read ``url`` with the npm ``eventsource`` package until it stops reconnecting or
    ``seconds`` pass; ``kinds`` are the event names to listen for (EVENTSOURCE_SCRIPT)."""
    result: dict[str, Any] = run_node(
        EVENTSOURCE_SCRIPT, input={"url": url, "headers": headers, "kinds": kinds, "seconds": seconds}, timeout=seconds + 15
    )
    return result
