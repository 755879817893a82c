"""Reading a whole event log in tests (core.eventlog), on whichever Redis is in use."""

from __future__ import annotations

from core.eventlog import LogEvent, get_log


async def logged_events(name: str) -> list[LogEvent]:
    """Every event log ``name`` holds, in order (a read returns a bounded number)."""
    events: list[LogEvent] = []
    while batch := await get_log().read(name, after=events[-1].seq if events else -1, wait=0):
        events.extend(batch)
    return events
