"""Django's AsyncClient with a bearer token, and a bounded reader for streamed bodies."""

from __future__ import annotations

import asyncio
from typing import Any

from django.test import AsyncClient


class BearerClient(AsyncClient):
    """AsyncClient's own ``headers=`` does not reach ASGI scope headers; add them per request."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def generic(self, method, path, data="", content_type="application/octet-stream", secure=False, *, headers=None, **extra):
        headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return super().generic(method, path, data, content_type, secure, headers=headers, **extra)


async def read_all(response: Any, timeout: float = 10) -> str:
    chunks = []
    async with asyncio.timeout(timeout):
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode())
    return "".join(chunks)
