"""The worker's message writer: the messages and reacts of all its sockets, committed in batches.

A socket hands its message (or react) to the writer and waits for the outcome (the
committed message's frame or the message's reaction set, or the ChatError that refused
it). The writer takes whatever has queued up while the previous batch was being written,
up to MAX_BATCH, and commits its messages with one transaction
(chat.services.messages.message_create_batch) and its reacts with another
(chat.services.reactions.reaction_set_batch). No batch waits for company: under
light load every batch has one message and the latency is one commit; under heavy load
batches grow and the cost per message falls. A sender's next frame is read only after
its previous message has committed, so each sender's order is kept.

The writes run on one dedicated thread that keeps its database connection open (the
per-call close and reopen that database_sync_to_async does would cost more than the
write); after an error the connection is dropped and reopened on the next batch, and a
connection idle for a while is checked first (core.db_thread.drop_if_unusable), so
that the first message after a database restart is not refused for a dead connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connection

from chat.protocol import ChatError, MessageFrame, Reactions
from chat.services import messages, reactions
from core.aio import PerLoop, spawn
from core.db_thread import drop_if_unusable

logger = logging.getLogger(__name__)

# Large enough to amortise a transaction across a burst, small enough that one batch
# never holds the database's write lock for long.
MAX_BATCH = 200


Draft = messages.MessageDraft | reactions.ReactionDraft
Outcome = MessageFrame | Reactions | ChatError
_O = TypeVar("_O")


class MessageWriter:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[Draft, asyncio.Future[Any]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="message-writer")
        self.task = spawn(self._run(), name="message-writer")

    async def write(self, draft: messages.MessageDraft) -> MessageFrame:
        """Commit one message; return its frame, or raise ChatError if it is refused."""
        future: asyncio.Future[MessageFrame] = self.loop.create_future()
        self.queue.put_nowait((draft, future))
        return await future

    async def react(self, draft: reactions.ReactionDraft) -> Reactions:
        """Commit one react; return the message's reaction set after it, or raise ChatError."""
        future: asyncio.Future[Reactions] = self.loop.create_future()
        self.queue.put_nowait((draft, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            drafts = [draft for draft, _ in batch]
            try:
                results = await self.loop.run_in_executor(self.executor, _write, drafts)
            except Exception as error:  # the database thread itself failed
                logger.exception("writing %d drafts failed", len(batch))
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the socket went away while it waited
                    continue
                if isinstance(result, Exception):  # a ChatError that refused it, or a failed write
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        self.task.cancel()
        self.executor.submit(connection.close)
        self.executor.shutdown(wait=False)


def _write(drafts: list[Draft]) -> list[Outcome | Exception]:
    """The batch's messages, then its reacts, each kind in one transaction (a socket sends
    its next frame only after the outcome of its previous one, so order between the kinds
    does not matter). A kind whose transaction failed gets its exception, the other kind
    its outcomes all the same."""
    drop_if_unusable()
    message_drafts = [draft for draft in drafts if isinstance(draft, messages.MessageDraft)]
    react_drafts = [draft for draft in drafts if isinstance(draft, reactions.ReactionDraft)]
    written = iter(_attempt(messages.message_create_batch, message_drafts))
    reacted = iter(_attempt(reactions.reaction_set_batch, react_drafts))
    return [next(written) if isinstance(draft, messages.MessageDraft) else next(reacted) for draft in drafts]


def _attempt(write: Callable[..., Sequence[_O]], drafts: list[Any]) -> list[_O | Exception]:
    if not drafts:
        return []
    try:
        return list(write(drafts=drafts))
    except Exception as error:
        logger.exception("writing %d drafts failed", len(drafts))
        connection.close()  # a broken connection is not reused
        return [error] * len(drafts)


# The writer of the running event loop (one per worker process).
get_writer: PerLoop[MessageWriter] = PerLoop(MessageWriter)
