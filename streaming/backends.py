"""Language-model backends behind one small interface.

A backend turns a conversation into an async iterator of *batches*: one batch per
upstream read, so that a fast model's tokens travel through the stream log and out to
clients in groups rather than one write each. ``pieces()`` yields every kind of output
(text, tool-call deltas, reasoning deltas, tool results, a status, sources: ``Piece``);
iterating the generation itself yields only its text, for callers that want a plain
reply (a task's summary).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from django.conf import settings

from streaming import catalog
from streaming.catalog import ModelSpec

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str  # the text of the turn (what is stored and counted)
    # The message as a /v1 client sent it (tool_calls, tool_call_id, content parts such as
    # images): an ``openai`` upstream gets it unchanged. None: {"role", "content"}.
    message: Mapping[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        """The turn as a Chat Completions message."""
        return dict(self.message) if self.message is not None else {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, as OpenAI streams them: ``index`` is the call's position in
    the reply's tool_calls; ``id`` and ``name`` come with its first piece, ``arguments``
    (a JSON text) in pieces."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (vLLM's ``reasoning_content``)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of tool call ``tool_call_id`` (of tool ``name``, when known) that the
    model read: an agent's own tool's output, or a client's tool message it answers."""

    tool_call_id: str
    name: str | None
    content: str


@dataclass(frozen=True, slots=True)
class Status:
    """What the model is doing before it answers (the seeds' "thinking"), a short word."""

    status: str


@dataclass(frozen=True, slots=True)
class Source:
    """A document the reply draws on (a retrieval's hit): its title and an http(s) URL."""

    title: str
    url: str


@dataclass(frozen=True, slots=True)
class Sources:
    """The documents retrieved for the reply, in rank order."""

    sources: tuple[Source, ...]


# One piece of a reply (docs/protocol.md, "Events"): text, a tool call's delta, reasoning,
# a tool's result, a status or the sources.
Piece = str | ToolCallDelta | ReasoningDelta | ToolResult | Status | Sources


def piece_text(piece: Piece) -> str:
    """The characters a piece adds to the stream (what the log's cap counts)."""
    if isinstance(piece, str):
        return piece
    if isinstance(piece, ReasoningDelta):
        return piece.text
    if isinstance(piece, ToolCallDelta):
        return (piece.name or "") + piece.arguments
    if isinstance(piece, ToolResult):
        return piece.content
    if isinstance(piece, Status):
        return piece.status
    return "".join(source.title + source.url for source in piece.sources)


class BackendError(Exception):
    """The model failed; ``code`` ends the stream's ``error`` event."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class Generation(Protocol):
    """One reply being generated. ``finish_reason`` is known once iteration ends, and
    ``usage`` (``prompt_tokens``, ``completion_tokens``) when the model reported it."""

    finish_reason: FinishReason
    usage: Mapping[str, int] | None

    def pieces(self) -> AsyncIterator[list[Piece]]: ...

    def __aiter__(self) -> AsyncIterator[list[str]]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    name: str

    def generate(
        self, *, messages: list[ChatTurn], max_tokens: int | None, params: Mapping[str, Any] | None = None
    ) -> Generation: ...


class _TextOnly:
    """``async for batch in generation``: the text pieces only, in batches."""

    usage: Mapping[str, int] | None = None

    def pieces(self) -> AsyncIterator[list[Piece]]:
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        async for batch in self.pieces():
            texts = [piece for piece in batch if isinstance(piece, str)]
            if texts:
                yield texts


def tool_names(params: Mapping[str, Any] | None) -> set[str]:
    """The names of the function tools offered in a request's ``tools``."""
    names = set()
    for tool in (params or {}).get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


# ---- echo ------------------------------------------------------------------------------
class EchoGeneration(_TextOnly):
    """The words of the last user message, one per token, each followed by a space;
    repeated cyclically up to ``max_tokens`` (finish ``length``), else one pass (``stop``).
    ``lead``: pieces streamed before the words (a status, reasoning, sources, a tool
    result), one per token delay; ``max_tokens`` counts the words only."""

    # With no delay, tokens are handed out in batches this large.
    BATCH = 32

    def __init__(self, words: list[str], max_tokens: int | None, delay: float, lead: Sequence[Piece] = ()) -> None:
        self.words = words or [""]
        self.max_tokens = max_tokens
        self.delay = delay
        self.lead = lead
        self.finish_reason: FinishReason = "length" if max_tokens is not None else "stop"

    async def pieces(self) -> AsyncIterator[list[Piece]]:
        for piece in self.lead:
            await asyncio.sleep(self.delay)
            yield [piece]
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


class EchoToolCall(_TextOnly):
    """A call of tool ``name`` with arguments ``{}``, in two pieces as upstreams stream
    them (the call's id and name, then its arguments); finish ``tool_calls``."""

    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay
        self.finish_reason: FinishReason = "tool_calls"

    async def pieces(self) -> AsyncIterator[list[Piece]]:
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        for piece in (ToolCallDelta(0, call_id, self.name, ""), ToolCallDelta(0, None, None, "{}")):
            await asyncio.sleep(self.delay)
            yield [piece]

    async def aclose(self) -> None:
        return None


# The prefixes that make the echo model stream more than text (docs/protocol.md, "Events").
THINK, SOURCES = "/think", "/sources"
# How many sources "/sources" makes up: one per distinct word, at most this many.
ECHO_SOURCES = 3


def _echo_lead(words: list[str]) -> tuple[list[Piece], list[str]]:
    """The pieces a message's leading "/think" and "/sources" ask for, and the words left:
    a ``thinking`` status and made-up sources (one per distinct word) for "/sources",
    reasoning that names the words for "/think"."""
    prefixes = set()
    while words and words[0] in (THINK, SOURCES):
        prefixes.add(words[0])
        words = words[1:]
    lead: list[Piece] = []
    if SOURCES in prefixes:
        lead.append(Status("thinking"))
    if THINK in prefixes:
        lead += [ReasoningDelta(word + " ") for word in ["Echoing", "these", "words:", *words]]
    if SOURCES in prefixes:
        distinct = list(dict.fromkeys(words))[:ECHO_SOURCES]
        lead.append(Sources(tuple(Source(f"Results for {w}", f"https://example.com/search?q={quote(w)}") for w in distinct)))
    return lead, words


def _tool_result(messages: list[ChatTurn]) -> list[Piece]:
    """The last turn, a tool's result, as a ToolResult naming its call (and the tool, from
    the assistant turn that made the call); none when the turn does not name its call."""
    last = messages[-1].message or {}
    call_id = last.get("tool_call_id")
    if not isinstance(call_id, str):
        return []
    calls = (call for turn in messages if turn.message for call in turn.message.get("tool_calls") or [])
    name = next((call["function"]["name"] for call in calls if call.get("id") == call_id), None)
    return [ToolResult(call_id, name, messages[-1].content)]


class EchoBackend:
    """A fake model (docs/protocol.md, "Chat Completions parameters"): it echoes the last
    user message, word by word. It also plays a tool loop, so clients can be tested with
    no upstream: a last user message ``call <name> ...`` where ``<name>`` is an offered
    tool (and ``tool_choice`` is not ``none``) is answered with a call of that tool; a
    last message that is a tool's result is logged as a tool result and echoed. A message
    starting with "/sources" or "/think" streams a status and sources, or reasoning,
    before its words, so that every reader of those events can be tested with no upstream."""

    name = "echo"

    def generate(
        self, *, messages: list[ChatTurn], max_tokens: int | None, params: Mapping[str, Any] | None = None
    ) -> Generation:
        delay = settings.LLM_TOKEN_DELAY_MS / 1000
        last = messages[-1] if messages else None
        if last is not None and last.role == "tool":
            return EchoGeneration(last.content.split(), max_tokens, delay, _tool_result(messages))
        if last is not None and last.role == "user" and (params or {}).get("tool_choice") != "none":
            words = last.content.split()
            if len(words) >= 2 and words[0] == "call" and words[1] in tool_names(params):
                return EchoToolCall(words[1], delay)
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        lead, words = _echo_lead(last_user.split())
        return EchoGeneration(words, max_tokens, delay, lead)


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


class OpenAIGeneration(_TextOnly):
    def __init__(self, client: httpx.AsyncClient, body: dict[str, object], *, base_url: str, api_key: str | None) -> None:
        self.client = client
        self.body = body
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.api_key = api_key
        self.finish_reason: FinishReason = "stop"
        self.response: httpx.Response | None = None
        self.closed = False

    async def pieces(self) -> AsyncIterator[list[Piece]]:
        timeout = float(settings.LLM_TIMEOUT_SECONDS)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            request = self.client.build_request("POST", self.url, json=self.body, headers=headers)
            async with asyncio.timeout(timeout + 5):
                self.response = await self.client.send(request, stream=True)
            if self.response.status_code != 200:
                await self.response.aread()
                raise BackendError("upstream_error", f"upstream answered HTTP {self.response.status_code}")
            # One batch per read of the upstream, whatever it holds (a fast upstream's read holds
            # many chunks): each batch is one append to the log and one wake-up of its readers
            # (bench-sse: a batch per chunk made a tool call's pieces cost ten times a token's).
            texts = self.response.aiter_text()
            partial = ""  # a line not yet ended
            while True:
                ended = False
                try:
                    # Our own bound on the wait for the next read, whatever the transport.
                    async with asyncio.timeout(timeout):
                        text = await anext(texts)
                except StopAsyncIteration:
                    text, ended = "\n", True  # the last line may have had no line break
                *lines, partial = (partial + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
                batch: list[Piece] = []
                for line in lines:
                    pieces, done = self._parse(line)
                    batch += pieces
                    if done:
                        if batch:
                            yield batch
                        return
                if batch:
                    yield batch
                if ended:
                    raise BackendError("upstream_error", "upstream closed the stream before [DONE]")
        except TimeoutError:
            raise BackendError("upstream_timeout", f"no data from the upstream for {timeout:g} s") from None
        except httpx.TimeoutException:
            raise BackendError("upstream_timeout", f"no data from the upstream for {timeout:g} s") from None
        except httpx.HTTPError as error:
            raise BackendError("upstream_unavailable", f"upstream request failed: {type(error).__name__}") from None
        finally:
            await self.aclose()

    def _parse(self, line: str) -> tuple[list[Piece], bool]:
        line = line.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            return [], False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return [], True
        malformed = BackendError("upstream_malformed", "upstream sent a chunk that is not a chat.completion.chunk")
        try:
            chunk = json.loads(payload)
            choice = chunk["choices"][0] if chunk.get("choices") else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise malformed from None
        self._usage(chunk.get("usage"))
        if choice is None:  # e.g. a usage-only chunk
            return [], False
        if not isinstance(choice, dict):
            raise malformed
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise malformed
        pieces: list[Piece] = []
        # vLLM and DeepSeek name it reasoning_content; OpenRouter and newer servers reasoning.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            raise BackendError("upstream_malformed", "upstream sent reasoning that is not text")
        if reasoning:
            pieces.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise BackendError("upstream_malformed", "upstream sent non-text content")
        if content:
            pieces.append(content)
        pieces.extend(_tool_call_deltas(delta.get("tool_calls")))
        finish = choice.get("finish_reason")
        if finish in ("length", "tool_calls", "content_filter"):
            self.finish_reason = finish
        return pieces, False

    def _usage(self, usage: object) -> None:
        """The upstream's token counts, when it reports them (the last chunk, with
        ``stream_options.include_usage``); anything else is left to our estimate."""
        if not isinstance(usage, dict):
            return
        counts = {name: usage.get(name) for name in ("prompt_tokens", "completion_tokens")}
        if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
            self.usage = {name: int(n) for name, n in counts.items() if isinstance(n, int)}

    async def aclose(self) -> None:
        """Close the upstream request (also when a reader cancels or abandons)."""
        if not self.closed and self.response is not None:
            self.closed = True
            await self.response.aclose()


def _tool_call_deltas(raw: object) -> list[ToolCallDelta]:
    """A chunk's ``delta.tool_calls`` as ToolCallDelta, or BackendError upstream_malformed."""
    if raw is None:
        return []
    malformed = BackendError("upstream_malformed", "upstream sent tool_calls that are not OpenAI's shape")
    if not isinstance(raw, list):
        raise malformed
    deltas = []
    for position, call in enumerate(raw):
        if not isinstance(call, dict):
            raise malformed
        # Some servers leave out the index of a reply's only call: its position then.
        index = call.get("index", position)
        function = call.get("function") or {}
        if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not isinstance(function, dict):
            raise malformed
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        if not all(value is None or isinstance(value, str) for value in (call_id, name, arguments)):
            raise malformed
        deltas.append(ToolCallDelta(index, call_id or None, name or None, arguments or ""))
    return deltas


class OpenAIBackend:
    """An OpenAI-compatible upstream: ``spec`` says where and which model (the default
    model's, catalog.default(), when not given)."""

    name = "openai"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *, spec: ModelSpec | None = None) -> None:
        self.transport = transport
        self.spec = spec

    def generate(
        self, *, messages: list[ChatTurn], max_tokens: int | None, params: Mapping[str, Any] | None = None
    ) -> Generation:
        """``params``: the request's other Chat Completions parameters (temperature, tools,
        ...: streaming.openai.parsing.PASSED_THROUGH), sent as they came."""
        spec = self.spec or _openai_spec()
        body: dict[str, object] = {
            "model": spec.upstream_model,
            "messages": [m.wire() for m in messages],
            "stream": True,
            **(params or {}),
        }
        # The client's own name for the cap (newer OpenAI models take only max_completion_tokens).
        if max_tokens is not None and "max_completion_tokens" not in body:
            body["max_tokens"] = max_tokens
        return OpenAIGeneration(http_client(self.transport), body, base_url=spec.base_url, api_key=spec.api_key)


def _openai_spec() -> ModelSpec:
    """The default model when it is an upstream; else the LLM_BASE_URL settings (tests)."""
    spec = catalog.default()
    if spec.backend == "openai":
        return spec
    model = str(settings.LLM_MODEL)
    return ModelSpec(model, "openai", str(settings.LLM_BASE_URL), settings.LLM_API_KEY or None, model)


def get_backend(model: str | None = None) -> Backend:
    """The backend of served model ``model`` (catalog.models()), the default one when None;
    ValueError for a model not served (callers check with catalog.find first)."""
    spec = catalog.default() if model is None else catalog.find(model)
    if spec is None:
        raise ValueError(f"no model {model!r} is served")
    if spec.backend == "openai":
        return OpenAIBackend(spec=spec)
    return EchoBackend()
