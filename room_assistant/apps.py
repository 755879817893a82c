from django.apps import AppConfig


class RoomAssistantConfig(AppConfig):
    """The assistant in a room (docs/protocol.md, "The assistant in a room"): chat's rooms
    meet streaming's models here, above both."""

    name = "room_assistant"

    def ready(self) -> None:
        from chat.signals import assistant_asked
        from room_assistant import services

        assistant_asked.connect(services.on_assistant_asked, dispatch_uid="room_assistant")
