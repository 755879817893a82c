"""The built-in task kinds: Django tasks (``@task``) that clients may start by name."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django_tasks import TaskContext, task

from chat.models import Message, Room
from chat.selectors import room_get_for, user_is_banned_site_wide
from streaming.backends import ChatTurn, get_backend
from tasks.context import context_owner_id, report_progress
from tasks.registry import TaskRequestError, startable

# Read a room this many messages at a time, reporting progress after each chunk.
SUMMARY_CHUNK = 200
# The transcript handed to the model is cut to its newest characters (a context window).
SUMMARY_MAX_CHARS = 12_000
SUMMARY_MAX_TOKENS = 120


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TaskRequestError("invalid", f"{name} must be an integer from {low} to {high}")
    return value


# A countdown is a diagnostic: an hour in all is plenty, and a bound keeps one account's
# countdowns from holding runner slots for days.
COUNTDOWN_MAX_MS = 3_600_000


def validate_countdown(body: dict[str, Any], *, owner_id: int) -> dict[str, Any]:
    steps, interval_ms = _int(body, "steps", 1, 10_000), _int(body, "interval_ms", 0, 60_000)
    if steps * interval_ms > COUNTDOWN_MAX_MS:
        raise TaskRequestError("invalid", f"steps x interval_ms must be at most {COUNTDOWN_MAX_MS} (an hour)")
    return {"steps": steps, "interval_ms": interval_ms}


@startable("countdown", validate=validate_countdown)
@task(takes_context=True)
async def countdown(context: TaskContext, *, steps: int, interval_ms: int) -> dict[str, Any]:
    """A diagnostic: N steps of M ms, a progress event after each."""
    for step in range(1, steps + 1):
        await asyncio.sleep(interval_ms / 1000)
        await report_progress(context, percent=step * 100 // steps, message=f"step {step} of {steps}")
    return {"steps": steps}


def _readable_room(slug: str, owner_id: int) -> Room | None:
    """The room if the task's owner may read it (a private room only for its members)."""
    owner = User.objects.filter(pk=owner_id, is_active=True).first()
    return None if owner is None else room_get_for(slug=slug, user=owner)


def _refuse_if_banned(owner_id: int) -> None:
    """A user banned site-wide may not have rooms read for them (docs/protocol.md, "Authentication and the handshake")."""
    if user_is_banned_site_wide(user_id=owner_id):
        raise TaskRequestError("banned", "you are banned site-wide: tasks that read rooms are refused", kind="forbidden")


def validate_summarize_room(body: dict[str, Any], *, owner_id: int) -> dict[str, Any]:
    _refuse_if_banned(owner_id)  # first: a banned user learns nothing of which rooms exist
    slug = body.get("room")
    if not isinstance(slug, str):
        raise TaskRequestError("no_such_room", "room must name an existing room")
    if _readable_room(slug, owner_id) is None:  # a private room the owner is not in does not exist for them
        raise TaskRequestError("no_such_room", "room must name an existing room", kind="not_found")
    return {"room": slug}


def _chunk(room_slug: str, after: int) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(room__slug=room_slug, removed_at__isnull=True, pk__gt=after)
        .order_by("pk")
        .values_list("pk", "user__username", "content")[:SUMMARY_CHUNK]
    )


def _count(room_slug: str) -> int:
    return Message.objects.filter(room__slug=room_slug, removed_at__isnull=True).count()


@startable("summarize_room", validate=validate_summarize_room)
@task(takes_context=True)
async def summarize_room(context: TaskContext, *, room: str) -> dict[str, Any]:
    """Read the room in chunks (progress per chunk), then ask the model for a summary."""
    owner_id = context_owner_id(context)
    # Again when it runs: the owner may have left the room, been removed or been banned since.
    if await database_sync_to_async(user_is_banned_site_wide)(user_id=owner_id):
        raise PermissionError("this task's owner is banned site-wide")
    if await database_sync_to_async(_readable_room)(room, owner_id) is None:
        raise LookupError(f"room {room} no longer exists for this task's owner")
    total = await database_sync_to_async(_count)(room)
    lines: list[str] = []
    after, read = 0, 0
    while True:
        chunk = await database_sync_to_async(_chunk)(room, after)
        if not chunk:
            break
        after, read = chunk[-1][0], read + len(chunk)
        lines.extend(f"{user}: {content}" for _, user, content in chunk)
        # Reading is 0-80 %, asking the model 90 %: a new percentage is always shown
        # (tasks/runner.py writes a repeated one at most every few seconds).
        await report_progress(context, percent=min(80, read * 80 // max(total, 1)), message=f"read {read} of {total} messages")
    transcript = "\n".join(lines)[-SUMMARY_MAX_CHARS:]
    await report_progress(context, percent=90, message="asking the model")
    generation = get_backend().generate(
        messages=[ChatTurn("system", "Summarise this chat in a few sentences."), ChatTurn("user", transcript or "(no messages)")],
        max_tokens=SUMMARY_MAX_TOKENS,
    )
    tokens: list[str] = []
    try:
        async for batch in generation:
            tokens.extend(batch)
    finally:
        await generation.aclose()
    return {"summary": "".join(tokens).strip(), "messages": read}
