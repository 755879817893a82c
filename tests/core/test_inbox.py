"""core.aio.Inbox: the queue of a socket's events (daphne's, and each channel's in core.layer)
whose ``get`` is a future, so Channels' consumer loop wraps no task around a receive."""

from __future__ import annotations

import asyncio

import pytest

from core.aio import Inbox

pytestmark = pytest.mark.asyncio


async def test_items_come_out_in_order_whether_or_not_someone_waits() -> None:
    inbox: Inbox[int] = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert inbox.size() == 2
    assert await inbox.get() == 1
    waiting = inbox.get()
    assert await waiting == 2
    third = inbox.get()
    assert not third.done()
    inbox.put_nowait(3)
    assert await third == 3
    assert inbox.size() == 0


async def test_getters_are_served_in_order() -> None:
    inbox: Inbox[str] = Inbox()
    first, second, third = inbox.get(), inbox.get(), inbox.get()
    for item in ("a", "b", "c"):
        inbox.put_nowait(item)
    assert [await first, await second, await third] == ["a", "b", "c"]


async def test_a_cancelled_getter_gets_nothing_and_loses_nothing() -> None:
    inbox: Inbox[str] = Inbox()
    gone, kept = inbox.get(), inbox.get()
    gone.cancel()
    inbox.put_nowait("a")
    assert await kept == "a"
    cancelled_alone = inbox.get()
    cancelled_alone.cancel()
    inbox.put_nowait("b")  # nobody waits: it waits for the next getter
    later = inbox.get()
    assert later.done() and later.result() == "b"


async def test_a_new_getter_queues_behind_older_ones_after_a_cancellation() -> None:
    inbox: Inbox[str] = Inbox()
    first, second = inbox.get(), inbox.get()
    first.cancel()
    third = inbox.get()
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert (await second, await third) == ("a", "b")


async def test_put_back_is_the_next_item_out() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.put_nowait("later")
    inbox.put_back("first")
    assert await inbox.get() == "first"
    assert await inbox.get() == "later"


async def test_a_receive_wrapped_in_wait_for_times_out_and_the_item_still_arrives() -> None:
    inbox: Inbox[str] = Inbox()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.01)
    inbox.put_nowait("late")
    assert await asyncio.wait_for(inbox.get(), 1) == "late"


async def test_it_is_true_even_when_empty() -> None:
    # daphne tests its queue for truth ("is there one") before putting a disconnect on it.
    assert Inbox()
