"""GET /api/notifications/stream (SSE), the unread list, and marking them read (docs/protocol.md, "Other endpoints")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from accounts import connections
from accounts.connections import credential_watch, get_connections
from core import sse
from core.http import MAX_ID, api_view, error_response, parse_id, signed_in_user
from notifications import selectors, services
from notifications.models import Notification
from notifications.wakeups import get_wakeups, user_topic

# Besides wake-ups, the table is read this often. Wake-ups are lost only while Redis is
# unreachable, and every stream is woken when its worker reconnects, so this only
# bounds the delay of a wake-up whose publish failed; 15 s keeps an idle stream at one
# query per keepalive instead of one every 2 s.
POLL_SECONDS = 15.0
# How far back each look for notifications marked read reaches before the previous look.
READ_SKEW_SECONDS = 5.0


@api_view("GET")
async def notification_list(request: HttpRequest) -> HttpResponseBase:
    """GET /api/notifications/?after=<id>: the unread notifications after that id."""
    after = parse_id(request.GET.get("after", "0"))
    if after is None:
        return error_response(400, "invalid", "after must be a non-negative integer")
    found = await database_sync_to_async(selectors.notifications_after)(
        user_id=signed_in_user(request).pk, after=after, unread_only=True
    )
    return JsonResponse({"notifications": [selectors.notification_object(n) for n in found]})


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


@api_view("POST")
async def notification_read(request: HttpRequest) -> HttpResponseBase:
    """POST /api/notifications/read {"ids":[…]} or {"up_to": id} -> {"marked": n}."""
    try:
        body: Any = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return error_response(400, "bad_json", "request body is not valid JSON")
    ids, up_to = (body.get("ids"), body.get("up_to")) if isinstance(body, dict) else (None, None)
    # Ids are database integers: a larger number would fail in the driver (a 500).
    valid_ids = isinstance(ids, list) and all(_is_id(i) for i in ids)
    valid_up_to = _is_id(up_to)
    # Each field sent must be valid: a malformed one is an error, not silently ignored.
    if not (valid_ids or valid_up_to) or (ids is not None and not valid_ids) or (up_to is not None and not valid_up_to):
        return error_response(400, "invalid", 'send {"ids": [<id>, …]} or {"up_to": <id>}')
    marked = await database_sync_to_async(services.notifications_mark_read)(
        user_id=signed_in_user(request).pk, ids=ids if valid_ids else None, up_to=up_to if valid_up_to else None
    )
    return JsonResponse({"marked": marked})


@api_view("GET")
async def notification_stream(request: HttpRequest) -> HttpResponseBase:
    """SSE of the user's notifications: ``event: <kind>``, ``id: <notification id>``.

    With Last-Event-ID: every notification after it, then live ones. Without: live
    ones only (the unread list is GET /api/notifications/). The stream never ends, so
    no reader is ever past its end (no 204, docs/protocol.md, "After the end"); a
    malformed Last-Event-ID is a 400."""
    user_id = signed_in_user(request).pk
    # Checked before a connection is reserved: a refused request holds none.
    last = sse.parse_last_event_id(sse.last_event_id(request), example="42")
    reservation = await get_connections().reserve(
        kind=connections.NOTIFICATIONS, user_id=user_id, limit=int(settings.NOTIFICATIONS_MAX_STREAMS_PER_USER)
    )
    if reservation is None:
        detail = f"at most {settings.NOTIFICATIONS_MAX_STREAMS_PER_USER} notification streams per user; close one"
        return error_response(429, "too_many_connections", detail, headers={"Retry-After": "5"})
    if last is not None:
        after = last
    else:
        after = await database_sync_to_async(selectors.notification_latest_id)(user_id=user_id)
    return sse.sse_response(
        body=sse.follow(batches=_batches(user_id, after), render=_render),
        watch=credential_watch(request, user_id=user_id, reservation=reservation),
    )


@dataclass(frozen=True, slots=True)
class MarkedRead:
    """Notifications marked read (on any device) since the stream last said so."""

    ids: list[int]


def _render(item: Notification | MarkedRead) -> str:
    if isinstance(item, MarkedRead):
        # No id: Last-Event-ID stays the last notification's, for resuming.
        return sse.encode_event(event="read", data={"ids": item.ids})
    return sse.encode_event(event=item.kind, data=item.data, id=str(item.pk))


class ReadWatch:
    """Which of a user's notifications were marked read since a stream opened.

    The rows are the truth (a lost wake-up only delays the news until the next look):
    each look reads the rows whose read_at is at or after the previous look, less
    READ_SKEW_SECONDS (for clocks of other hosts a little behind, and an update committed
    a moment after it took its time), and reports those it has not reported yet."""

    def __init__(self, *, user_id: int) -> None:
        self.user_id = user_id
        self.since = timezone.now() - timedelta(seconds=READ_SKEW_SECONDS)
        self.reported: dict[int, datetime] = {}

    def look(self) -> list[int]:
        looked_at = timezone.now()
        read = selectors.notifications_read_since(user_id=self.user_id, since=self.since)
        fresh = [pk for pk, _ in read if pk not in self.reported]
        self.reported.update(read)
        self.since = looked_at - timedelta(seconds=READ_SKEW_SECONDS)
        self.reported = {pk: at for pk, at in self.reported.items() if at >= self.since}
        return fresh


def _look(*, user_id: int, after: int, reads: ReadWatch) -> tuple[list[Notification], list[int]]:
    """The notifications after ``after``, and the ids newly marked read (one thread hop)."""
    return selectors.notifications_after(user_id=user_id, after=after, unread_only=False), reads.look()


async def _batches(user_id: int, after: int) -> AsyncIterator[list[Notification | MarkedRead]]:
    """The user's notifications after ``after`` as they come, and which were marked
    read; an empty batch after each wait without any (core.sse.follow's chance to send a
    keepalive); ends after NOTIFICATIONS_STREAM_IDLE_SECONDS without a notification."""
    reads = ReadWatch(user_id=user_id)
    async with get_wakeups().watch(user_topic(user_id)) as woken:
        last_sent = time.monotonic()
        while time.monotonic() - last_sent < float(settings.NOTIFICATIONS_STREAM_IDLE_SECONDS):
            woken.clear()
            found, read = await database_sync_to_async(_look)(user_id=user_id, after=after, reads=reads)
            batch: list[Notification | MarkedRead] = [*found]
            if read:
                batch.append(MarkedRead(ids=read))
            if found:
                after = found[-1].pk
                last_sent = time.monotonic()
            if batch:
                yield batch
                continue
            yield []
            idle_left = float(settings.NOTIFICATIONS_STREAM_IDLE_SECONDS) - (time.monotonic() - last_sent)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(POLL_SECONDS, idle_left))):
                    await woken.wait()
