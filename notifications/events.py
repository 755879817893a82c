"""Publishing notifications to the user's live streams (after commit)."""

from __future__ import annotations

from notifications.models import Notification


def notification_published(*, notification: Notification) -> None:
    """Wake the user's open notification streams. The row is the truth: a stream that
    misses this reads the table (see notifications.views)."""
    from chat import broker

    broker.publish(f"notify:{notification.user_id}", str(notification.pk))
