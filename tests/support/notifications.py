"""Notifications in process: make one, read a stream's next events."""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from notifications.models import Notification
from notifications.services import notification_create
from tests.support.sse_parsing import parse_events


async def notify(user: User, kind: str, **data) -> Notification:
    return await database_sync_to_async(notification_create)(user_id=user.pk, kind=kind, data=data)


async def next_events(response, count: int, timeout: float = 5) -> list[dict]:
    """The next ``count`` events of a streaming response (comments skipped)."""
    events: list[dict] = []
    buffer = ""
    iterator = response.streaming_content.__aiter__()
    async with asyncio.timeout(timeout):
        while len(events) < count:
            buffer += (await anext(iterator)).decode()
            *blocks, buffer = buffer.split("\n\n")
            events += [e for b in blocks for e in parse_events(b + "\n\n") if "event" in e]
    return events
