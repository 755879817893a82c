from django.apps import AppConfig


class WebConfig(AppConfig):
    """Every HTML page, template and static file: the top layer beside ops (docs/architecture.md)."""

    name = "web"
