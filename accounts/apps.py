from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Runs once Django's apps are loaded: turns Django's log-outs, password changes
        and deactivations into "credentials changed" (accounts.receivers)."""
        from accounts import receivers

        receivers.connect()
