from django.apps import AppConfig


class StreamingConfig(AppConfig):
    """Token streams and task progress over SSE (CONTRACT §4, §5); built next."""

    name = "streaming"
