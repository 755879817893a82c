"""Starting, running, cancelling and reading token streams.

A generation is started by a request or a socket but does not belong to it: it runs as
its own task on the worker that accepted it, writes every event to the stream log
(core.eventlog), and every client, on any worker, reads the log. So a client that
drops loses nothing, a stream can be resumed anywhere, and a Channels consumer's
``receive`` is never blocked by a reply being generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.connections import get_connections
from accounts.credentials import Credential, credential_valid
from chat.ban_cache import user_is_banned_site_wide_remembered
from core import drain
from core.aio import WORKER_ID, spawn
from core.db_thread import in_db_thread
from core.errors import DomainError
from core.eventlog import HEARTBEAT_SECONDS, Appender, LogEvent, LogMeta, Produced, follow, get_log
from core.text import is_storable_text
from streaming import catalog, conversation_store, limits
from streaming.backends import (
    Backend,
    BackendError,
    ChatTurn,
    Piece,
    ReasoningDelta,
    Sources,
    Status,
    ToolCallDelta,
    ToolResult,
    get_backend,
    piece_text,
)
from streaming.models import Conversation, ConversationMessage

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 32_000
# All the messages of one /v1 request together (docs/protocol.md, "Limits"): four messages
# at MAX_MESSAGE_CHARS, about 32,000 tokens by count_tokens, a long conversation's worth.
# Every request's messages are stored, so this bounds what one request adds to the database.
MAX_PROMPT_CHARS = 128_000
MAX_TOKENS_LIMIT = 100_000
# The concurrency slot is refreshed this often (limits.SLOT_STALE_SECONDS is 15).
SLOT_REFRESH_SECONDS = 3.0
# Generations keep a reference here so the event loop does not collect them mid-run.
_running: set[asyncio.Task[None]] = set()


class _Generations:
    """This worker's running generations, drained with it (core.drain): each may finish
    within the drain; one that does not ends as ``producer_lost`` with its reply so far
    stored (Producer.run's shutdown path) before the worker exits, so that its readers on
    other workers learn it at once rather than when its heartbeat goes stale."""

    async def drain(self, seconds: float) -> None:
        running = list(_running)
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=max(0.0, seconds - 0.5))
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=0.5)


_generations = _Generations()
drain.on_drain(_generations)


class StreamRefusedError(DomainError):
    """A generation (or a request for one) refused: a bad request (the default kind), a
    conversation that is not the user's, a ban, or a limit reached (``rate_limited``,
    with ``retry_after``). REST, /v1 and the assistant socket each answer it in one place."""


# Limits that free up within moments (a slot, or tomorrow's budget: asking again is cheap).
RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Finished:
    """How a generation ended, for its ``on_finish`` hook."""

    content: str
    # The reply's finish reason (stop, length, tool_calls, cancelled), "error" for a
    # failure, "interrupted" when the worker stopped under it.
    finish_reason: str


FinishHook = Callable[[Finished], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamStarted:
    stream_id: str
    conversation_id: str


# OpenAI's rule of thumb: a token is about four characters of English text.
CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """An estimate of the tokens in ``text``, without a tokenizer (docs/protocol.md, "Token
    accounting"): every word is at least one, and every CHARS_PER_TOKEN characters are
    one, whichever is more. Counting words alone made a 100,000-character word one token,
    so the daily budget did not limit what one account could make the model write."""
    return max(len(text.split()), math.ceil(len(text) / CHARS_PER_TOKEN))


# ---- conversations (database) -------------------------------------------------------------------
def conversation_history(*, conversation_id: str, owner_id: int) -> list[ChatTurn] | None:
    """The conversation's turns, oldest first; None if it is not this owner's."""
    try:
        conversation = Conversation.objects.get(pk=conversation_id, owner_id=owner_id)
    except (Conversation.DoesNotExist, ValidationError, ValueError, TypeError):  # a malformed id is no id
        return None
    return [ChatTurn(m.role, m.content) for m in conversation.messages.all()]


def _conversation_begin(*, owner_id: int, conversation_id: str, turns: list[ChatTurn]) -> tuple[str, list[ChatTurn]]:
    """Store the new turns of an existing conversation; return its id and the context."""
    with transaction.atomic():
        history = conversation_history(conversation_id=conversation_id, owner_id=owner_id)
        if history is None:
            raise StreamRefusedError("not_found", "no such conversation", kind="not_found")
        conversation_store.messages_insert(conversation_id=conversation_id, turns=_rows(turns), now=timezone.now())
        Conversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())
    return conversation_id, history + turns


def _conversation_create(*, owner_id: int, conversation_id: str, turns: list[ChatTurn]) -> None:
    """Store a new conversation (named ``conversation_id``, chosen at the start) and its first turns."""
    first_user = next((t.content for t in turns if t.role == "user"), "")
    now = timezone.now()
    with transaction.atomic():
        conversation_store.conversation_insert(
            conversation_id=conversation_id, owner_id=owner_id, title=first_user[:200], now=now
        )
        conversation_store.messages_insert(conversation_id=conversation_id, turns=_rows(turns), now=now)


def _rows(turns: list[ChatTurn]) -> list[tuple[str, str]]:
    return [(turn.role, turn.content) for turn in turns]


async def _start_checked(
    *, user_id: int, conversation_id: str | None, turns: list[ChatTurn], record: bool
) -> tuple[str, list[ChatTurn]]:
    """A start's checks and database work before its first token: refuse a user banned
    site-wide (generating is acting, docs/protocol.md, "Authentication and the handshake";
    answered from memory for a user found not banned a moment ago, chat.ban_cache), then,
    for an existing conversation, store the new turns and return its id and context. A new
    conversation is only named here: the producer writes it while the first token is on its
    way (Producer.run), off the start's critical path (docs/performance.md, "Stream start")."""
    if await user_is_banned_site_wide_remembered(user_id=user_id):
        raise StreamRefusedError("banned", "you are banned site-wide", kind="forbidden")
    if not record:
        return "", turns
    if conversation_id is None:
        return str(uuid.uuid4()), turns
    return await in_db_thread(_conversation_begin, owner_id=user_id, conversation_id=conversation_id, turns=turns)


def _reply_store(
    *, conversation_id: str, stream_id: str, content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> None:
    conversation_store.messages_insert(
        conversation_id=conversation_id,
        turns=[(ConversationMessage.Role.ASSISTANT.value, content)],
        now=timezone.now(),
        finish_reason=finish_reason,
        stream_id=stream_id,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


# ---- starting ----------------------------------------------------------------------------------------
def model_name(value: object) -> str | None:
    """The ``model`` of an assistant request (one of GET /v1/models; None: the default)."""
    if value is not None and not isinstance(value, str):
        raise StreamRefusedError("bad_request", "model must be a string (one of GET /v1/models)")
    return value


def model_spec(name: object) -> catalog.ModelSpec:
    """The served model a request names (None: the default one); 404 ``model_not_found``
    otherwise, OpenAI's answer (docs/protocol.md, "Models")."""
    if name is None:
        return catalog.default()
    spec = catalog.find(name) if isinstance(name, str) else None
    if spec is None:
        detail = f"The model '{name}' does not exist; GET /v1/models lists ours."
        raise StreamRefusedError("model_not_found", detail, kind="not_found")
    return spec


def clean_request(*, message: object, max_tokens: object) -> tuple[str, int | None]:
    if not isinstance(message, str) or not message.strip():
        raise StreamRefusedError("bad_request", "message must be a non-empty string")
    if not is_storable_text(message):  # a lone surrogate or NUL would fail the database write
        raise StreamRefusedError("bad_request", "message must be Unicode text without NUL or lone surrogates")
    if len(message) > MAX_MESSAGE_CHARS:
        raise StreamRefusedError("bad_request", f"message is longer than {MAX_MESSAGE_CHARS} characters")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise StreamRefusedError("bad_request", f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    return message, max_tokens


async def _start_new(
    *, stream_id: str, user_id: int, spec: catalog.ModelSpec, turns: list[ChatTurn], record: bool
) -> tuple[str, list[ChatTurn]]:
    """A start that writes nothing before its first token (a new conversation, or none):
    the ban check (from memory, or one database call), then one Redis script that checks
    the budget, takes the slots and creates the log with its ``start`` event, or refuses
    having taken nothing (docs/performance.md, "Eleventh step"). Where the slots live on
    another Redis than the log (a cluster), the two steps of ``_start_in_conversation``."""
    conversation, context = await _start_checked(user_id=user_id, conversation_id=None, turns=turns, record=record)
    try:
        answer = await get_log().create_admitted(
            stream_id,
            admission=limits.admission(stream_id=stream_id, user_id=user_id, model=spec),
            owner_id=user_id,
            producer=WORKER_ID,
            extra={"conversation": conversation},
            first=[_start_event(stream_id, conversation)],
        )
    except BaseException:
        # The script may have run (a cancel delivered as its reply came back): give back
        # every slot it could have taken.
        await limits.slot_release(stream_id=stream_id, user_id=user_id, model=spec)
        raise
    if answer is not None:
        _refuse_unless_ok(limits.admitted(stream_id=stream_id, user_id=user_id, model=spec, answer=answer), spec)
        return conversation, context
    async with _admitted(stream_id=stream_id, user_id=user_id, spec=spec):
        await _log_create(stream_id=stream_id, user_id=user_id, conversation=conversation)
    return conversation, context


async def _start_in_conversation(
    *, stream_id: str, user_id: int, spec: catalog.ModelSpec, turns: list[ChatTurn], conversation_id: str
) -> tuple[str, list[ChatTurn]]:
    """A start in an existing conversation: the budget and the slots first (one Redis script
    where every pool shares a Redis, plus a read of the budget if there is one), so that a
    refused start stores nothing; then the ban check and the new turns stored (one database
    call); then the log and its ``start`` event (one Redis script). A failure gives the slots back."""
    async with _admitted(stream_id=stream_id, user_id=user_id, spec=spec):
        conversation, context = await _start_checked(user_id=user_id, conversation_id=conversation_id, turns=turns, record=True)
        await _log_create(stream_id=stream_id, user_id=user_id, conversation=conversation)
    return conversation, context


@contextlib.asynccontextmanager
async def _admitted(*, stream_id: str, user_id: int, spec: catalog.ModelSpec) -> AsyncIterator[None]:
    """The budget, then the slots, each in its own round trip (raises StreamRefusedError);
    the block runs holding the slots, and gives them back if it fails."""
    if await limits.budget_exceeded(user_id=user_id):
        _refuse_unless_ok("budget", spec)
    _refuse_unless_ok(await limits.slot_acquire(stream_id=stream_id, user_id=user_id, model=spec), spec)
    try:
        yield
    except BaseException:
        await limits.slot_release(stream_id=stream_id, user_id=user_id)
        raise


async def _log_create(*, stream_id: str, user_id: int, conversation: str) -> None:
    first = [_start_event(stream_id, conversation)]
    await get_log().create(stream_id, owner_id=user_id, producer=WORKER_ID, extra={"conversation": conversation}, first=first)


def _start_event(stream_id: str, conversation: str) -> LogEvent:
    """A stream's first event (docs/protocol.md, "Token streams"), written with its log."""
    return LogEvent(0, "start", {"stream_id": stream_id, "conversation_id": conversation})


def _refuse_unless_ok(answer: str, spec: catalog.ModelSpec) -> None:
    """StreamRefusedError for a used-up budget or a full pool (429 with Retry-After)."""
    if answer == "budget":
        raise StreamRefusedError(
            "budget_exceeded", "the daily token budget is used up", kind="rate_limited", retry_after=RETRY_AFTER_SECONDS
        )
    if answer == "user":
        detail = "you have too many replies being generated; wait for one to finish"
        raise StreamRefusedError("busy", detail, kind="rate_limited", retry_after=RETRY_AFTER_SECONDS)
    if answer == "model":
        detail = f"too many replies of the model '{spec.name}' are being generated; try again shortly or pick another"
        raise StreamRefusedError("busy", detail, kind="rate_limited", retry_after=RETRY_AFTER_SECONDS)
    if answer == "all":
        detail = "too many replies are being generated; try again shortly"
        raise StreamRefusedError("busy", detail, kind="rate_limited", retry_after=RETRY_AFTER_SECONDS)


async def generation_start(
    *,
    user_id: int,
    turns: list[ChatTurn],
    conversation_id: str | None,
    max_tokens: int | None,
    backend: Backend | None = None,
    credential: Credential | None = None,
    abandonable: bool = True,
    params: Mapping[str, Any] | None = None,
    model: str | None = None,
    record: bool = True,
    on_finish: FinishHook | None = None,
) -> StreamStarted:
    """Check the limits, store the new turns and start generating; return at once.

    ``model``: the served model to answer (catalog; None: the default), refused with 404
    ``model_not_found`` when there is no such model.

    ``params``: the request's other model parameters, for the backend (temperature,
    tools, ...: streaming.openai.parsing.PASSED_THROUGH).

    ``credential``, what authenticated the request: if it stops being valid (a token
    revoked, a log-out...) while the reply is generated, the generation stops.

    ``abandonable=False`` (a background response, docs/protocol.md, "Responses API"):
    the generation goes on with no reader for LLM_ABANDON_SECONDS.

    ``record=False``: no conversation is stored (``conversation_id`` is ignored and the
    stream's is ""): the caller keeps the reply itself, in ``on_finish`` (an assistant's
    reply in a room is a room message), which runs on this worker once the stream ended,
    whether it finished, was stopped or failed, but not if this worker died.

    Raises StreamRefusedError: ``banned`` (forbidden) for a user banned site-wide (generating
    is acting, docs/protocol.md, "Authentication and the handshake"), ``budget_exceeded`` or
    ``busy`` (rate_limited), ``not_found`` for someone else's conversation, ``unavailable`` while
    this worker drains for a restart (core.drain)."""
    spec = model_spec(model)
    if drain.draining():
        detail = "this worker is restarting; ask again and another one will answer"
        raise StreamRefusedError("unavailable", detail, kind="unavailable", retry_after=RETRY_AFTER_SECONDS)
    stream_id = uuid.uuid4().hex
    if not record or conversation_id is None:
        conversation, context = await _start_new(stream_id=stream_id, user_id=user_id, spec=spec, turns=turns, record=record)
    else:
        conversation, context = await _start_in_conversation(
            stream_id=stream_id, user_id=user_id, spec=spec, turns=turns, conversation_id=conversation_id
        )
    producer = Producer(
        stream_id=stream_id,
        user_id=user_id,
        conversation_id=conversation,
        new_conversation=turns if record and conversation_id is None else None,
        context=context,
        max_tokens=max_tokens,
        backend=backend or get_backend(spec.name),
        credential=credential,
        abandonable=abandonable,
        params=params,
        on_finish=on_finish,
    )
    task = spawn(producer.run(), name=f"generation-{stream_id}")
    _running.add(task)
    task.add_done_callback(_running.discard)
    return StreamStarted(stream_id=stream_id, conversation_id=conversation)


async def stream_cancel(*, stream_id: str, user_id: int) -> bool:
    """Ask the producer, wherever it runs, to stop; False if no such stream of this user."""
    log = get_log()
    meta = await log.meta(stream_id)
    if meta is None or meta.owner_id != user_id:
        return False
    await log.cancel(stream_id)
    return True


# ---- producing ------------------------------------------------------------------------------------
class Producer:
    """Runs one generation: backend -> log, with a heartbeat that also watches for a
    cancel and for readers having gone away."""

    def __init__(
        self,
        *,
        stream_id: str,
        user_id: int,
        conversation_id: str,
        context: list[ChatTurn],
        max_tokens: int | None,
        backend: Backend,
        new_conversation: list[ChatTurn] | None = None,
        credential: Credential | None = None,
        abandonable: bool = True,
        params: Mapping[str, Any] | None = None,
        on_finish: FinishHook | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.on_finish = on_finish
        self.user_id = user_id
        self.conversation_id = conversation_id
        # The first turns of a conversation this stream starts, written by run() beside the
        # first tokens; the reply is stored only once they are.
        self.new_conversation = new_conversation
        self.conversation_stored: asyncio.Task[None] | None = None
        self.context = context
        self.max_tokens = max_tokens
        self.backend = backend
        self.credential = credential
        self.abandonable = abandonable
        self.params = params
        self.producing: asyncio.Task[LogEvent] | None = None
        self.log = get_log()
        self.appender = Appender(self.log, stream_id)
        self.seq = 1
        self.tokens: list[str] = []
        self.reasoning: list[str] = []
        # The reply's tool calls by index, as OpenAI's message.tool_calls, assembled from their deltas.
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.pieces = 0  # events of the reply written to the log so far (limits.stream_cap)
        self.chars = 0  # characters written to the log so far (limits.stream_cap)
        self.prompt_tokens = sum(count_tokens(turn.content) for turn in context)
        # The model's own counts of a reply it finished, when it reports them (an openai upstream asked
        # for them with stream_options.include_usage): they replace our estimates.
        self.reported: Mapping[str, int] | None = None
        self.stop_reason: str | None = None  # cancelled | abandoned | revoked

    async def run(self) -> None:
        started = time.monotonic()
        producing = self.producing = asyncio.get_running_loop().create_task(self._produce())
        if self.new_conversation is not None:
            self.conversation_stored = asyncio.get_running_loop().create_task(
                in_db_thread(
                    _conversation_create,
                    owner_id=self.user_id,
                    conversation_id=self.conversation_id,
                    turns=self.new_conversation,
                )
            )
        registry = get_connections()
        connection = None
        if self.credential is not None:
            connection = await registry.open(
                user_id=self.user_id, credential=self.credential, on_change=self._credentials_changed
            )
        final: LogEvent | None = None
        next_slot_refresh = time.monotonic() + SLOT_REFRESH_SECONDS
        try:
            while not producing.done():
                await asyncio.wait({producing}, timeout=HEARTBEAT_SECONDS)
                if producing.done():
                    break
                try:
                    control = await self.log.heartbeat(self.stream_id)
                    if time.monotonic() >= next_slot_refresh:  # the slot goes stale after 15 s, not 250 ms
                        next_slot_refresh = time.monotonic() + SLOT_REFRESH_SECONDS
                        await limits.slot_refresh(stream_id=self.stream_id, user_id=self.user_id)
                    if not control.reader_seen:
                        # The meta data is gone (Redis restarted without persistence):
                        # write it again, or readers would find no stream and this
                        # producer would take itself for abandoned.
                        await self.log.create(
                            self.stream_id,
                            owner_id=self.user_id,
                            producer=WORKER_ID,
                            extra={"conversation": self.conversation_id},
                        )
                        continue
                except Exception:
                    logger.warning("heartbeat of %s failed", self.stream_id, exc_info=True)
                    continue
                if control.cancel:
                    self.stop_reason = "cancelled"
                    producing.cancel()
                elif self.abandonable and time.time() - control.reader_seen > float(settings.LLM_ABANDON_SECONDS):
                    self.stop_reason = "abandoned"
                    producing.cancel()
            final = await producing
        finally:
            if connection is not None:
                await registry.close(connection)
            if final is None:  # this task was cancelled: the worker is shutting down
                producing.cancel()
                final = self._error("producer_lost", "the worker stopped")
            await self._finish(final, time.monotonic() - started)

    async def _credentials_changed(self) -> None:
        """Runs when the user's credentials change: a reply started with a credential that
        no longer holds stops, as a cancel would (its partial content is kept)."""
        if await in_db_thread(credential_valid, credential=self.credential):
            return
        self.stop_reason = "revoked"
        if self.producing is not None:
            self.producing.cancel()

    async def _produce(self) -> LogEvent:
        generation = self.backend.generate(messages=self.context, max_tokens=self.max_tokens, params=self.params)
        cap = limits.stream_cap()
        try:
            async for batch in generation.pieces():
                # What does not fit in the stream's log is never written: the reply ends
                # there with "length", whatever max_tokens says.
                texts = [piece_text(piece) for piece in batch]
                kept, full = cap.fit(texts, events=self.pieces, chars=self.chars)
                batch = [_cut(piece, text) for piece, text in zip(batch, kept, strict=False)]
                if batch:
                    events = [self._event(self.seq + i, piece) for i, piece in enumerate(batch)]
                    self.seq += len(batch)
                    self.pieces += len(batch)
                    self.chars += sum(len(text) for text in kept)
                    await self.appender.add(events)
                if full:
                    return self._done("length")
            self.reported = generation.usage
            return self._done(generation.finish_reason)
        except asyncio.CancelledError:
            return self._done("cancelled")
        except BackendError as error:
            return self._error(error.code, error.detail)
        except Exception:
            logger.exception("generation %s failed", self.stream_id)
            return self._error("internal_error", "the generation failed")
        finally:
            await generation.aclose()  # closes the upstream request, whatever happened

    def _event(self, seq: int, piece: Piece) -> LogEvent:
        """The log event of one piece of the reply (docs/protocol.md, "Events"), noted in the reply so far."""
        if isinstance(piece, str):
            self.tokens.append(piece)
            return LogEvent(seq, "token", {"index": seq - 1, "token": piece})
        if isinstance(piece, ReasoningDelta):
            self.reasoning.append(piece.text)
            return LogEvent(seq, "reasoning", {"text": piece.text})
        if isinstance(piece, ToolResult):
            result = {"tool_call_id": piece.tool_call_id, "name": piece.name, "content": piece.content}
            return LogEvent(seq, "tool_result", result)
        if isinstance(piece, Status):
            return LogEvent(seq, "status", {"status": piece.status})
        if isinstance(piece, Sources):
            return LogEvent(seq, "sources", {"sources": [{"title": s.title, "url": s.url} for s in piece.sources]})
        call = self.tool_calls.setdefault(piece.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call["id"] = piece.id or call["id"]
        call["function"]["name"] += piece.name or ""
        call["function"]["arguments"] += piece.arguments
        return LogEvent(
            seq, "tool_call", {"index": piece.index, "id": piece.id, "name": piece.name, "arguments": piece.arguments}
        )

    def _prompt_tokens(self) -> int:
        return self.reported["prompt_tokens"] if self.reported is not None else self.prompt_tokens

    def _completion_tokens(self) -> int:
        """The reply's tokens: the model's count, or our estimate of its text, reasoning and
        tool calls (docs/protocol.md, "Token accounting")."""
        if self.reported is not None:
            return self.reported["completion_tokens"]
        calls = (call["function"]["name"] + call["function"]["arguments"] for call in self.tool_calls.values())
        return sum(count_tokens(text) for text in ("".join(self.tokens), "".join(self.reasoning), *calls))

    def _error(self, code: str, detail: str) -> LogEvent:
        return LogEvent(self.seq, "error", {"code": code, "detail": detail, "content": "".join(self.tokens)})

    def _done(self, finish_reason: str) -> LogEvent:
        content = "".join(self.tokens)
        data: dict[str, Any] = {
            "finish_reason": finish_reason,
            "content": content,
            "usage": {"completion_tokens": self._completion_tokens()},
        }
        if self.reported is not None:
            data["usage"]["prompt_tokens"] = self.reported["prompt_tokens"]
        if self.tool_calls:
            data["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        if self.reasoning:
            data["reasoning"] = "".join(self.reasoning)
        return LogEvent(self.seq, "done", data)

    async def _finish(self, final: LogEvent, elapsed: float) -> None:
        # A conversation this stream started is in the database before its final event goes
        # out (long before, but for the shortest replies): whoever reads it after `done` finds it.
        stored = True
        if self.conversation_stored is not None:
            try:
                await self.conversation_stored
            except Exception:
                stored = False
                logger.exception("could not store the conversation of %s", self.stream_id)
        try:
            await self.appender.finish(final)
        except Exception:
            logger.exception("could not end stream %s", self.stream_id)
        content = "".join(self.tokens)
        finish_reason = final.data.get("finish_reason", "error") if final.kind == "done" else "error"
        if self.stop_reason == "abandoned":
            finish_reason = "abandoned"
        if self.on_finish is not None:
            # The worker is stopping (core.drain): the reply was interrupted, not wrong.
            lost = final.kind == "error" and final.data.get("code") == "producer_lost"
            try:
                await self.on_finish(Finished(content=content, finish_reason="interrupted" if lost else finish_reason))
            except Exception:
                logger.exception("the end of stream %s was not recorded", self.stream_id)
        try:
            if self.conversation_id and stored:
                await in_db_thread(
                    _reply_store,
                    conversation_id=self.conversation_id,
                    stream_id=self.stream_id,
                    content=content,
                    finish_reason=finish_reason,
                    prompt_tokens=self._prompt_tokens(),
                    completion_tokens=self._completion_tokens(),
                )
            # The prompt counts too: the context is what a model reads, and it is stored.
            await limits.budget_spend(user_id=self.user_id, tokens=self._prompt_tokens() + self._completion_tokens())
        except Exception:
            logger.exception("could not store the reply of %s", self.stream_id)
        finally:
            await limits.slot_release(stream_id=self.stream_id, user_id=self.user_id)
        logger.debug("stream %s: %d tokens in %.3fs (%s)", self.stream_id, len(self.tokens), elapsed, finish_reason)


def _cut(piece: Piece, text: str) -> Piece:
    """``piece`` holding ``text`` (its own, or the part of it that fit under the cap)."""
    if text == piece_text(piece):
        return piece
    if isinstance(piece, str):
        return text
    if isinstance(piece, ReasoningDelta):
        return ReasoningDelta(text)
    if isinstance(piece, ToolResult):
        return ToolResult(piece.tool_call_id, piece.name, text)
    if isinstance(piece, Status):
        return Status(text)
    if isinstance(piece, Sources):  # the sources that fit whole (a cut URL would be a wrong link)
        kept, left = [], len(text)
        for source in piece.sources:
            left -= len(source.title + source.url)
            if left < 0:
                break
            kept.append(source)
        return Sources(tuple(kept))
    name = (piece.name or "")[: len(text)] or None
    return ToolCallDelta(piece.index, piece.id, name, text[len(name or "") :])


# ---- reading ---------------------------------------------------------------------------------------
# What a reader appends, once for everyone, when the producer's worker died.
PRODUCER_LOST = Produced(
    lost_kind="error",
    lost_data={"code": "producer_lost", "detail": "the worker producing this stream stopped; start a new reply"},
)
FINAL_KINDS = ("done", "error")


async def stream_owner_check(*, stream_id: str, user_id: int) -> bool:
    meta = await get_log().meta(stream_id)
    return meta is not None and meta.owner_id == user_id


def stream_follow(*, stream_id: str, after: int) -> AsyncIterator[list[LogEvent]]:
    """Events with seq > ``after``, live, until the final ``done`` or ``error``.

    Yields an empty list after each second without events (for keepalives). Marks the
    stream as read, so that it is not abandoned. If the producer's worker died, appends
    (once, whoever notices first) and yields an ``error`` event ``producer_lost``.
    """
    return follow(stream_id, after=after, final=FINAL_KINDS, produced=PRODUCER_LOST)


async def stream_end(*, stream_id: str) -> int | None:
    """The seq of a finished stream's final event (``done`` or ``error``, the last one it
    wrote), None while it runs: a reader at or past it has seen everything
    (docs/protocol.md, "After the end")."""
    return await _end_of(stream_id, await get_log().meta(stream_id))


@dataclass(frozen=True, slots=True)
class ReaderStart:
    """What a reader of its owner's stream learns before its first read: where the stream
    ended (the seq of its final event), None while it runs."""

    end: int | None


async def stream_reader_start(*, stream_id: str, user_id: int) -> ReaderStart | None:
    """None unless ``user_id`` owns the stream; else where it ended. One read of the log's
    meta data for both (a resume's first replayed token waits on every round trip before
    it: docs/performance.md, "Resume"), and the log's newest entry only once it ended."""
    meta = await get_log().meta(stream_id)
    if meta is None or meta.owner_id != user_id:
        return None
    return ReaderStart(end=await _end_of(stream_id, meta))


async def _end_of(stream_id: str, meta: LogMeta | None) -> int | None:
    if meta is None or meta.status != "done":
        return None
    return await get_log().last_seq(stream_id)
