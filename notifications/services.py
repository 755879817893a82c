"""Writes for notifications. Callable from any service, inside its transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from notifications import events
from notifications.models import Notification


def notification_create(*, user_id: int, kind: str, data: dict[str, Any]) -> Notification:
    """Store a notification; it is streamed to the user's devices after commit."""
    notification = Notification.objects.create(user_id=user_id, kind=kind, data=data)
    transaction.on_commit(lambda: events.notification_published(notification=notification))
    return notification
