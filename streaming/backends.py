"""Language-model backends behind one small interface.

A backend turns a conversation into an async iterator of token *batches* (lists of
strings): one batch per upstream read, so that a fast model's tokens travel through
the stream log and out to clients in groups rather than one write each.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
from django.conf import settings

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


class BackendError(Exception):
    """The model failed; ``code`` ends the stream's ``error`` event."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class Generation(Protocol):
    """One reply being generated. ``finish_reason`` is known once iteration ends."""

    finish_reason: FinishReason

    def __aiter__(self) -> AsyncIterator[list[str]]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    name: str

    def generate(self, *, messages: list[ChatTurn], max_tokens: int | None) -> Generation: ...


# ---- echo ------------------------------------------------------------------------------
class EchoGeneration:
    """The words of the last user message, one per token, each followed by a space;
    repeated cyclically up to ``max_tokens`` (finish ``length``), else one pass (``stop``)."""

    # With no delay, tokens are handed out in batches this large.
    BATCH = 32

    def __init__(self, words: list[str], max_tokens: int | None, delay: float) -> None:
        self.words = words or [""]
        self.max_tokens = max_tokens
        self.delay = delay
        self.finish_reason: FinishReason = "length" if max_tokens is not None else "stop"

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        total = self.max_tokens if self.max_tokens is not None else len(self.words)
        index = 0
        while index < total:
            if self.delay:
                await asyncio.sleep(self.delay)
                batch_size = 1
            else:
                await asyncio.sleep(0)  # let readers and other streams run
                batch_size = self.BATCH
            end = min(total, index + batch_size)
            yield [self.words[i % len(self.words)] + " " for i in range(index, end)]
            index = end

    async def aclose(self) -> None:
        return None


class EchoBackend:
    name = "echo"

    def generate(self, *, messages: list[ChatTurn], max_tokens: int | None) -> Generation:
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return EchoGeneration(last_user.split(), max_tokens, settings.LLM_TOKEN_DELAY_MS / 1000)


# ---- OpenAI-compatible -----------------------------------------------------------------------
_client: httpx.AsyncClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def http_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The process's pooled client for the upstream (one per event loop)."""
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop or transport is not None:
        timeout = float(settings.LLM_TIMEOUT_SECONDS)
        _client = httpx.AsyncClient(
            # connect: fail fast on a dead upstream; read: the longest wait for the next chunk.
            timeout=httpx.Timeout(connect=5.0, read=timeout, write=10.0, pool=5.0),
            limits=httpx.Limits(max_connections=int(settings.LLM_MAX_CONCURRENT), max_keepalive_connections=20),
            transport=transport,
        )
        _client_loop = loop
    return _client


class OpenAIGeneration:
    def __init__(self, client: httpx.AsyncClient, body: dict[str, object]) -> None:
        self.client = client
        self.body = body
        self.finish_reason: FinishReason = "stop"
        self.response: httpx.Response | None = None
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        timeout = float(settings.LLM_TIMEOUT_SECONDS)
        headers = {"Authorization": f"Bearer {settings.LLM_API_KEY}"} if settings.LLM_API_KEY else {}
        url = f"{str(settings.LLM_BASE_URL).rstrip('/')}/chat/completions"
        try:
            request = self.client.build_request("POST", url, json=self.body, headers=headers)
            async with asyncio.timeout(timeout + 5):
                self.response = await self.client.send(request, stream=True)
            if self.response.status_code != 200:
                await self.response.aread()
                raise BackendError("upstream_error", f"upstream answered HTTP {self.response.status_code}")
            lines = self.response.aiter_lines()
            while True:
                try:
                    # Our own bound on the wait for the next chunk, whatever the transport.
                    async with asyncio.timeout(timeout):
                        line = await anext(lines)
                except StopAsyncIteration:
                    raise BackendError("upstream_error", "upstream closed the stream before [DONE]") from None
                batch, done = self._parse(line)
                if batch:
                    yield batch
                if done:
                    return
        except TimeoutError:
            raise BackendError("upstream_timeout", f"no data from the upstream for {timeout:g} s") from None
        except httpx.TimeoutException:
            raise BackendError("upstream_timeout", f"no data from the upstream for {timeout:g} s") from None
        except httpx.HTTPError as error:
            raise BackendError("upstream_unavailable", f"upstream request failed: {type(error).__name__}") from None
        finally:
            await self.aclose()

    def _parse(self, line: str) -> tuple[list[str], bool]:
        line = line.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            return [], False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return [], True
        try:
            chunk = json.loads(payload)
            choice = chunk["choices"][0] if chunk.get("choices") else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError("upstream_malformed", "upstream sent a chunk that is not a chat.completion.chunk") from None
        if choice is None:  # e.g. a usage-only chunk
            return [], False
        if not isinstance(choice, dict):
            raise BackendError("upstream_malformed", "upstream sent a chunk that is not a chat.completion.chunk")
        content = (choice.get("delta") or {}).get("content")
        if content is not None and not isinstance(content, str):
            raise BackendError("upstream_malformed", "upstream sent non-text content")
        if choice.get("finish_reason") == "length":
            self.finish_reason = "length"
        return ([content] if content else []), False

    async def aclose(self) -> None:
        """Close the upstream request (also when a reader cancels or abandons)."""
        if not self.closed and self.response is not None:
            self.closed = True
            await self.response.aclose()


class OpenAIBackend:
    name = "openai"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport

    def generate(self, *, messages: list[ChatTurn], max_tokens: int | None) -> Generation:
        body: dict[str, object] = {
            "model": settings.LLM_MODEL,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return OpenAIGeneration(http_client(self.transport), body)


def get_backend() -> Backend:
    if settings.LLM_BACKEND == "openai":
        return OpenAIBackend()
    if settings.LLM_BACKEND == "echo":
        return EchoBackend()
    raise ValueError(f"LLM_BACKEND must be echo or openai, not {settings.LLM_BACKEND!r}")
