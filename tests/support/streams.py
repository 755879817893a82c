"""Token streams through the REST API of a running cluster: start one, read its SSE events."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.support.processes import Cluster
from tests.support.sse_parsing import parse_events


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_readers: dict[int, tuple[Iterator[str], list[str]]] = {}


def read_events(response: httpx.Response, *, until: int | None = None) -> list[dict]:
    """Read SSE events until ``until`` token events, or a final event, have arrived.

    Can be called again on the same response to read on from where it stopped."""
    texts, buffer = _readers.setdefault(id(response), (response.iter_text(), [""]))
    events: list[dict] = []
    for text in texts:
        buffer[0] += text
        *complete, buffer[0] = buffer[0].split("\n\n")
        for block in complete:
            events.extend(parse_events(block + "\n\n"))
        tokens = [e for e in events if e.get("event") == "token"]
        if (until is not None and len(tokens) >= until) or any(e.get("event") in ("done", "error") for e in events):
            return events
    return events


def start_stream(cluster: Cluster, worker: int, token: str, **body) -> httpx.Response:
    client = httpx.Client(timeout=20)
    request = client.build_request("POST", f"{cluster.http(worker)}/api/assistant/stream", json=body, headers=auth(token))
    return client.send(request, stream=True)
