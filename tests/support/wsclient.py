"""A test client for the room protocol, every wait bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_TIMEOUT = 10.0


class RoomClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.messages: list[dict[str, Any]] = []  # every message frame received, in order
        self.frames: list[dict[str, Any]] = []

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame; pings are answered and recorded like any other frame."""
        text = await asyncio.wait_for(self.connection.recv(), timeout)
        frame: dict[str, Any] = json.loads(text)
        self.frames.append(frame)
        if frame["type"] == "message":
            self.messages.append(frame)
        elif frame["type"] == "ping":
            await self.connection.send('{"type":"pong"}')
        return frame

    async def until(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Read until a frame of this type (with these field values) arrives."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
                    return frame

    async def sync(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read the handshake sequence up to presence; returns (synced, presence)."""
        hello = await self.recv(timeout)
        assert hello["type"] == "hello", hello
        synced = await self.until("synced", timeout)
        presence = await self.recv(timeout)
        assert presence["type"] == "presence", f"expected presence after synced, got {presence}"
        return synced, presence

    async def wait_messages(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Read until ``count`` message frames in all have arrived."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    await self.recv(timeout)
        except TimeoutError:
            raise AssertionError(f"got {len(self.messages)} of {count} messages within {timeout}s") from None
        return self.messages

    async def quiet(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds`` (to catch duplicates)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    await self.recv(seconds)
        except TimeoutError:
            pass

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.connection.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def say(self, content: str, nonce: str | None = None) -> None:
        await self.send({"type": "message", "content": content, "nonce": nonce})

    async def close_code(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.recv(timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@asynccontextmanager
async def room_client(url: str, token: str | None = None, *, origin: str | None = None) -> AsyncIterator[RoomClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, origin=origin, open_timeout=DEFAULT_TIMEOUT, max_size=None) as connection:  # type: ignore[arg-type]
        yield RoomClient(connection)
