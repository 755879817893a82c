"""Parse SSE text the way a browser's EventSource does (for assertions)."""

from __future__ import annotations

import json
from typing import Any


def parse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, Any] = {"comments": []}
        data = []
        for line in block.split("\n"):
            if line.startswith(":"):
                event["comments"].append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            else:
                event[field] = value
        if data:
            joined = "\n".join(data)
            try:
                event["data"] = json.loads(joined)
            except ValueError:
                event["data"] = joined
        if len(event) > 1:  # like EventSource, a block of comments only dispatches nothing
            events.append(event)
    return events
