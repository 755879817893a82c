from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Per-user notifications (docs/protocol.md, "Other endpoints"): mention, task, moderation, dm."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"
