from django.apps import AppConfig


class StreamingConfig(AppConfig):
    """Token streams and task progress over SSE (docs/protocol.md, "Token streams" and "Other endpoints"); built next."""

    name = "streaming"
