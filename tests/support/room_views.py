"""A room client that keeps a view of the room as the protocol's frames build it
(docs/protocol.md, "Room changes"), for tests that compare what clients end up showing
with what the database holds. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages

View = dict[int, tuple[str, dict[str, list[str]], int | None]]  # id -> (content, reactions, reply_to)


class ViewClient:
    """A room socket read in the background: its ``view`` of the visible messages and the
    highest ``seq`` it has seen (the ``last_seq`` to resume with)."""

    def __init__(self, connection: ClientConnection, view: View | None = None, seq: int = 0) -> None:
        self.connection = connection
        self.view: View = dict(view or {})
        self.seq = seq
        self.frames: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.synced = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    def apply(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind in ("message", "message_restored"):
            self.view[frame["id"]] = (frame["content"], frame["reactions"], frame["reply_to"])
        elif kind == "message_edited" and frame["id"] in self.view:
            _, reactions, reply_to = self.view[frame["id"]]
            self.view[frame["id"]] = (frame["content"], reactions, reply_to)
        elif kind == "reactions" and frame["id"] in self.view:
            content, _, reply_to = self.view[frame["id"]]
            self.view[frame["id"]] = (content, frame["reactions"], reply_to)
        elif kind == "message_deleted":
            self.view.pop(frame["id"], None)
        if ("seq" in frame and kind != "synced" and self.synced.is_set()) or kind == "synced":
            self.seq = max(self.seq, frame["seq"])

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in self.connection:
                frame = json.loads(text)
                self.frames.append(frame)
                if frame["type"] == "ping":
                    await self.connection.send('{"type":"pong"}')
                elif frame["type"] == "error":
                    self.errors.append(frame)
                else:
                    self.apply(frame)
                    if frame["type"] == "synced":
                        self.synced.set()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def wait_seq(self, seq: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.seq < seq:
            if time.monotonic() > deadline:
                raise AssertionError(f"a client stayed at seq {self.seq}, below {seq}, for {timeout}s")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, 5)


async def open_view(url: str, token: str, *, view: View | None = None, seq: int = 0) -> ViewClient:
    """Connect (``url`` may carry ``?last_seq=``) and wait for ``synced``; ``view`` and
    ``seq`` are what the client had before, to resume from."""
    connection = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10, max_size=None)
    client = ViewClient(connection, view, seq)
    try:
        await asyncio.wait_for(client.synced.wait(), 10)
    except BaseException:
        await client.close()
        raise
    return client


async def resume(cluster: Cluster, worker: int, slug: str, token: str, old: ViewClient) -> ViewClient:
    """Reconnect ``old``'s client to ``worker`` with ``last_seq``, keeping its view."""
    url = cluster.ws(worker, f"/ws/rooms/{slug}/?last_seq={old.seq}")
    return await open_view(url, token, view=old.view, seq=old.seq)


async def room_seq(cluster: Cluster, worker: int, slug: str, token: str) -> int:
    """The room's current seq, as ``synced`` tells a client from the future."""
    client = await open_view(cluster.ws(worker, f"/ws/rooms/{slug}/?last_seq={2**62}"), token)
    await client.close()
    return client.seq


def database_view(cluster: Cluster, slug: str, token: str) -> View:
    """The visible messages as REST lists them (every page)."""
    return {m["id"]: (m["content"], m["reactions"], m["reply_to"]) for m in list_messages(cluster, slug, token)}
