from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Long-running tasks with SSE progress (docs/protocol.md, "Other endpoints")."""

    name = "tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tasks import kinds  # noqa: F401 - registers the built-in kinds
