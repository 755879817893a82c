"""Writes for notifications. Callable from any service, inside its transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from notifications import events
from notifications.models import Notification


def notification_create(*, user_id: int, kind: str, data: dict[str, Any]) -> Notification:
    """Store a notification; it is streamed to the user's devices after commit."""
    notification = Notification.objects.create(user_id=user_id, kind=kind, data=data)
    transaction.on_commit(lambda: events.notification_published(notification=notification))
    return notification


def notifications_mark_read(*, user_id: int, ids: list[int] | None = None, up_to: int | None = None) -> int:
    """Mark the user's notifications read: these ids, or every one up to an id. The
    user's open streams, on every device, report them read after commit."""
    query = Notification.objects.filter(user_id=user_id, read_at__isnull=True)
    if ids is not None:
        query = query.filter(pk__in=ids)
    elif up_to is not None:
        query = query.filter(pk__lte=up_to)
    marked = query.update(read_at=timezone.now())
    if marked:
        transaction.on_commit(lambda: events.notifications_read(user_id=user_id))
    return marked
