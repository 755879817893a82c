from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Runs once Django's apps are loaded: connects chat's signal receivers."""
        from chat import receivers

        receivers.connect()
