from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Per-user notifications (CONTRACT §7): mention, task, moderation, dm."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"
