"""Join the room's group, group_send every message, send each delivery to the socket."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class RoomConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        self.group = f"room-{self.slug}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = json.loads(text_data or "{}")
        if frame.get("type") == "message":
            event = {"type": "chat.message", "content": frame.get("content"), "nonce": frame.get("nonce")}
            await self.channel_layer.group_send(self.group, event)

    async def chat_message(self, event: dict[str, Any]) -> None:
        frame = {
            "type": "message",
            "id": 0,
            "room": self.slug,
            "user": "u",
            "content": event["content"],
            "ts": "",
            "nonce": event["nonce"],
        }
        await self.send(text_data=json.dumps(frame))
