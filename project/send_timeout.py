"""A time limit on each send of an HTTP response, for servers whose ``send`` waits while
the client is not reading (uvicorn: its transport's high-water mark, 64 KiB).

There the memory a stalled reader costs is already bounded, but its response is not:
an SSE stream nobody reads would hold its task, its stream reader and its socket for as
long as the client stays connected. After ``HTTP_SEND_TIMEOUT_SECONDS`` without taking
anything (60 s, nginx's send_timeout), the response ends and the server closes the
connection; the client resumes with ``Last-Event-ID``. Under daphne,
project.daphne_limits does the same with Twisted's producers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


class ClientStalledError(Exception):
    """The client took nothing of the response for HTTP_SEND_TIMEOUT_SECONDS."""


class SendTimeoutMiddleware:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.application(scope, receive, send)
            return
        timeout = float(settings.HTTP_SEND_TIMEOUT_SECONDS)

        async def send_within_timeout(message: dict[str, Any]) -> None:
            try:
                # asyncio.timeout is a timer handle, not a task: cheap enough for every chunk.
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalledError from None

        try:
            await self.application(scope, receive, send_within_timeout)
        except ClientStalledError:
            logger.info("cut off %s: its client read nothing for %.0f s", scope.get("path"), timeout)
