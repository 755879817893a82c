"""core.sse's response and its one follow loop, driven without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core import sse

pytestmark = pytest.mark.asyncio


async def _batches(*batches: list[str], wait: float = 0.0) -> AsyncIterator[list[str]]:
    for batch in batches:
        await asyncio.sleep(wait)
        yield batch


async def _collect(body: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in body]


async def test_each_event_is_rendered_and_the_body_ends_with_its_batches():
    body = sse.follow(batches=_batches(["a", "b"], ["c"]), render=lambda item: sse.encode_event(data=item))
    assert "".join(await _collect(body)) == "data: a\n\ndata: b\n\ndata: c\n\n"


async def test_a_keepalive_goes_out_only_after_the_body_was_silent_long_enough():
    quiet = _batches([], [], ["x"], [], wait=0.05)
    body = sse.follow(batches=quiet, render=str, keepalive_seconds=0.08)
    # 50 ms: too soon; 100 ms: a keepalive; then an event, and 50 ms after it: too soon.
    assert await _collect(body) == [sse.KEEPALIVE, "x"]


async def test_a_big_read_goes_out_in_chunks_of_whole_events():
    events = [f"{i:04d}" + "x" * 1_000 for i in range(40)]  # 40 KB in all
    chunks = await _collect(sse.follow(batches=_batches(events), render=str))
    assert "".join(chunks) == "".join(events)
    assert len(chunks) == 3 and all(len(chunk) <= sse.MAX_CHUNK_CHARS for chunk in chunks)


async def test_the_response_opens_with_a_comment_and_sets_the_headers_of_every_sse_view():
    response = sse.sse_response(body=_batches(["data: x\n\n"]), headers={"X-Stream-Id": "abc"})  # type: ignore[arg-type]
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    assert response["X-Stream-Id"] == "abc"
    chunks = [chunk async for chunk in response.streaming_content]  # type: ignore[union-attr]
    assert chunks[0] == sse.OPENING.encode()


async def test_the_watch_wraps_the_whole_body_so_it_is_in_place_before_the_opening_comment():
    seen: list[str] = []

    async def watch(body: AsyncIterator[str]) -> AsyncIterator[str]:
        seen.append("registered")
        async for chunk in body:
            seen.append(chunk)
            yield chunk

    async def events() -> AsyncIterator[str]:
        yield "data: x\n\n"

    response = sse.sse_response(body=events(), watch=watch)
    assert [chunk async for chunk in response.streaming_content] == [sse.OPENING.encode(), b"data: x\n\n"]  # type: ignore[union-attr]
    assert seen == ["registered", sse.OPENING, "data: x\n\n"]
