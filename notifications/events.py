"""Publishing notifications to the user's live streams (after commit)."""

from __future__ import annotations

from core.layer import RealtimeChannelLayer
from notifications.models import Notification
from notifications.wakeups import user_topic


def notification_published(*, notification: Notification) -> None:
    """Wake the user's open notification streams, on every worker."""
    RealtimeChannelLayer.publish(user_topic(notification.user_id), str(notification.pk))


def notifications_read(*, user_id: int) -> None:
    """Wake the user's open notification streams to report what was marked read."""
    RealtimeChannelLayer.publish(user_topic(user_id), "read")
