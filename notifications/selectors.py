"""Reads for notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notifications.models import Notification


def notification_object(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.pk,
        "kind": notification.kind,
        "data": notification.data,
        "created_at": notification.created_at.isoformat(),
        "read": notification.read_at is not None,
    }


def notifications_after(*, user_id: int, after: int, unread_only: bool, limit: int = 200) -> list[Notification]:
    query = Notification.objects.filter(user_id=user_id, pk__gt=after)
    if unread_only:
        query = query.filter(read_at__isnull=True)
    return list(query.order_by("pk")[:limit])


def notification_latest_id(*, user_id: int) -> int:
    latest = Notification.objects.filter(user_id=user_id).order_by("-pk").values_list("pk", flat=True).first()
    return latest or 0


def notifications_read_since(*, user_id: int, since: datetime, limit: int = 1000) -> list[tuple[int, datetime]]:
    """(id, read_at) of the user's notifications marked read at or after ``since``, oldest read first."""
    query = Notification.objects.filter(user_id=user_id, read_at__gte=since).order_by("read_at", "pk")
    return [(pk, read_at) for pk, read_at in query.values_list("pk", "read_at")[:limit] if read_at is not None]
