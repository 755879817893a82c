"""The floor of a WebSocket server for bench/idle_memory.py: an ASGI app that accepts and
then only waits (no Django, no Channels). ``daphne bare_accept:application`` with bench/ on
sys.path; heap snapshots on SIGUSR2 as for the project (core.memtrace)."""

from __future__ import annotations

from typing import Any

from core import memtrace

memtrace.install_from_env()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"not found"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
