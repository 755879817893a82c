"""A test client for the room protocol, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_TIMEOUT = 10.0


class RoomClient:
    """A client that answers the server's pings as soon as they arrive, as a browser's
    handler does, whether or not the test is reading at that moment: with 1 s heartbeats
    a member the test leaves unread for three seconds (thirty joins in a row on a slow
    machine) would otherwise be closed with 4000."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.messages: list[dict[str, Any]] = []  # every message frame received, in order
        self.frames: list[dict[str, Any]] = []
        self._inbox: asyncio.Queue[dict[str, Any] | ConnectionClosed] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame: dict[str, Any] = json.loads(await self.connection.recv())
                if frame["type"] == "ping":
                    await self.connection.send('{"type":"pong"}')
                self._inbox.put_nowait(frame)
        except ConnectionClosed as closed:
            self._inbox.put_nowait(closed)

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame; pings (already answered) are recorded like any other frame.
        Raises ConnectionClosed, every time, once the server has closed."""
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, ConnectionClosed):
            self._inbox.put_nowait(item)
            raise item
        self.frames.append(item)
        if item["type"] == "message":
            self.messages.append(item)
        return item

    async def close(self) -> None:
        """Close the socket and stop reading (room_client does it on the way out)."""
        try:
            await self.connection.close()
        finally:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def until(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Read until a frame of this type (with these field values) arrives."""
        deadline = _deadline(timeout)
        while True:
            frame = await self.recv(_left(deadline))
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
        deadline = _deadline(timeout)
        try:
            while len(self.messages) < count:
                await self.recv(_left(deadline))
        except TimeoutError:
            raise AssertionError(f"got {len(self.messages)} of {count} messages within {timeout}s") from None
        return self.messages

    async def quiet(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds`` (to catch duplicates)."""
        deadline = _deadline(seconds)
        try:
            while True:
                await self.recv(_left(deadline))
        except TimeoutError:
            pass

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.connection.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def say(self, content: str, nonce: str | None = None) -> None:
        await self.send({"type": "message", "content": content, "nonce": nonce})

    async def close_code(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server closes; return its close code."""
        deadline = _deadline(timeout)
        try:
            while True:
                await self.recv(_left(deadline))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


# One deadline per wait, each read given what is left of it. Not asyncio.timeout() around
# reads that use wait_for: on Python 3.11 wait_for can swallow the outer cancellation when a
# frame arrives just as the deadline passes, and the loop then reads on with no bound (a
# quiet() under load answered pings for two minutes, until pytest-timeout).
def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def _left(deadline: float) -> float:
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise TimeoutError
    return left


@asynccontextmanager
async def room_client(url: str, token: str | None = None, *, origin: str | None = None) -> AsyncIterator[RoomClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, origin=origin, open_timeout=DEFAULT_TIMEOUT, max_size=None) as connection:  # type: ignore[arg-type]
        client = RoomClient(connection)
        try:
            yield client
        finally:
            await client.close()
