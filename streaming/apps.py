from django.apps import AppConfig


class StreamingConfig(AppConfig):
    """Token streams and task progress over SSE (docs/protocol.md, "Token streams" and "Other endpoints")."""

    name = "streaming"

    def ready(self) -> None:
        from streaming import catalog

        catalog.check()  # a bad LLM_MODELS fails at start-up, naming it
