"""A seeded fuzz loop against running daphne workers: the room socket and the assistant
socket get random bytes, mutated frames, oversize and binary frames, invalid UTF-8 and
floods. After every burst each reply is checked against what docs/protocol.md, "The room protocol" and "Token streams" and
docs/protocol.md promise (an ``error`` frame with its code, or a close code), and at the
end the worker is checked for health and for lost or doubled messages.

The expected reply of each frame comes from ``room_expectation`` and
``assistant_expectation``, written from the contract rather than from the server's
parser. ``FUZZ_SEED`` picks another seed; a failure names the seed and the frame.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import Cluster
from tests.support.rooms_api import list_messages, new_room
from tests.support.wsclient import RoomClient, room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]

SEED = int(os.environ.get("FUZZ_SEED", "20240607"))
WS_MAX_FRAME_BYTES = 64 * 1024  # the default of the setting, which the cluster keeps
DAPHNE_MAX_MESSAGE_BYTES = 1024 * 1024  # daphne's --websocket-max-message-size default
MAX_CONTENT = 4000
MAX_NONCE = 64
ROOM_ERROR_CODES = {"bad_json", "bad_frame", "empty", "too_long", "rate_limited", "muted", "room_locked"}


# ---- hostile values -------------------------------------------------------------------------
HOSTILE_STRINGS = [
    "",
    " ",
    "\u3000\t\n\r ",  # only white space, Unicode's included
    "\x00",
    "a\x00b",
    "\ufeffbom",
    "\u202eright-to-left override",
    "e\u0301\u0301\u0301 combining",
    "😀" * 10,
    "😀" * MAX_CONTENT,  # 4000 characters, 16000 bytes of UTF-8: legal
    "x" * MAX_CONTENT,
    "x" * (MAX_CONTENT + 1),
    "\ud800",  # lone surrogates: valid JSON escapes, not valid Unicode text
    "a\udfffb",
    "\udbff\udfff",  # a proper pair written as escapes: U+10FFFF
    "\U0010ffff",
    "\ufffe\uffff",
    "<script>alert(1)</script>",
    "@user0 @user1",
    "n" * (MAX_NONCE + 1),
]
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    10**30,
    -(2**63),
    2**64,
    1.5,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    [],
    {},
    [1, [2, [3]]],
    {"type": "message"},
    *HOSTILE_STRINGS,
]
ROOM_TEMPLATES: list[dict[str, Any]] = [
    {"type": "message", "content": "hello", "nonce": "n"},
    {"type": "message", "content": "hello"},
    {"type": "typing", "is_typing": True},
    {"type": "ping"},
    {"type": "pong"},
]
ASSISTANT_TEMPLATES: list[dict[str, Any]] = [
    {"type": "user_message", "content": "fuzz me", "conversation_id": None, "max_tokens": 2},
    {"type": "cancel"},
    {"type": "resume", "stream_id": "0" * 32, "after": 0},
    {"type": "ping"},
    {"type": "pong"},
]


def mutate(rng: random.Random, template: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """A template with one to three mutations: a field dropped, replaced or added."""
    frame = dict(template)
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        fields = [k for k in frame if k not in keep]
        if choice < 0.25 and fields:
            del frame[rng.choice(fields)]
        elif choice < 0.75 and frame:
            frame[rng.choice(list(frame))] = rng.choice(HOSTILE_VALUES)
        elif choice < 0.85:
            frame["type"] = rng.choice([*HOSTILE_VALUES, "MESSAGE", "message ", "typing\x00"])
        else:
            frame[rng.choice(["extra", "id", "__proto__", "constructor", ""])] = rng.choice(HOSTILE_VALUES)
    return frame


def dumps(frame: Any) -> str:
    # ensure_ascii: lone surrogates travel as \\uXXXX escapes (valid UTF-8, valid JSON syntax);
    # NaN and Infinity as Python writes them (not JSON, but what a sloppy client sends).
    return json.dumps(frame, ensure_ascii=True)


def random_text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + '{}[]":,\\ éü€😀\u3000\ufeff'
    return "".join(rng.choice(alphabet) for _ in range(size))


def corrupt(rng: random.Random, text: str) -> str:
    """Valid JSON made invalid (usually): truncated, a character inserted or deleted."""
    cut = rng.randrange(len(text))
    match rng.randrange(3):
        case 0:
            return text[:cut]
        case 1:
            return text[:cut] + rng.choice('{}[]",:\\') + text[cut:]
        case _:
            return text[:cut] + text[cut + 1 :]


def fuzz_frames(rng: random.Random, templates: list[dict[str, Any]], keep: set[str], count: int) -> list[str | bytes]:
    """``count`` hostile frames: text (str) or binary (bytes)."""
    frames: list[str | bytes] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.08:
            frames.append(rng.randbytes(rng.randint(0, 300)))
        elif kind < 0.18:
            frames.append(random_text(rng, rng.randint(0, 200)))
        elif kind < 0.28:
            frames.append(corrupt(rng, dumps(rng.choice(templates))))
        elif kind < 0.31:
            depth = rng.choice([100, 5000, 30000])
            frames.append("[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth)
        elif kind < 0.33:
            frames.append('{"type":"typing","is_typing":' + "9" * rng.choice([400, 5000]) + "}")  # a huge integer literal
        elif kind < 0.35:
            frames.append(dumps({"type": "message", "content": "o" * (WS_MAX_FRAME_BYTES + 10)}))  # over the frame limit
        elif kind < 0.40:
            frames.append(dumps(rng.choice(HOSTILE_VALUES)))  # JSON, but not an object
        elif kind < 0.55:
            frames.append(dumps(rng.choice(templates)))  # valid frames, so that accepted input is mixed in
        else:
            frames.append(dumps(mutate(rng, rng.choice(templates), keep)))
    return frames


# ---- what the contract says each frame gets ---------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """``error`` (with code and nonce), ``echo`` (the message, with content and nonce),
    ``pong``, ``start`` (assistant: a generation starts) or ``nothing``."""

    kind: str
    code: str | None = None
    nonce: str | None = None
    content: str | None = None


def _is_unicode_text(value: str) -> bool:
    """JSON can spell lone surrogates (``"\\ud800"``), which are not text: no UTF-8 for them.
    NUL is refused too (docs/protocol.md): PostgreSQL cannot store it."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse(frame: str | bytes) -> tuple[Expect | None, Any]:
    if isinstance(frame, bytes):
        return Expect("error", "bad_frame"), None
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):
        return Expect("error", "bad_json"), None
    if not isinstance(data, dict):
        return Expect("error", "bad_frame"), None
    return None, data


def room_expectation(frame: str | bytes) -> Expect:
    """docs/protocol.md, "The room protocol": the reply a room socket owes this frame."""
    if isinstance(frame, str) and len(frame) > WS_MAX_FRAME_BYTES:
        return Expect("error", "too_long")
    refused, data = _parse(frame)
    if refused:
        return refused
    raw_nonce = data.get("nonce")
    valid_nonce = isinstance(raw_nonce, str) and len(raw_nonce) <= MAX_NONCE and _is_unicode_text(raw_nonce)
    nonce = raw_nonce if valid_nonce else None
    kind = data.get("type")
    if kind == "message":
        if raw_nonce is not None and not valid_nonce:
            return Expect("error", "bad_frame")
        content = data.get("content")
        if not isinstance(content, str) or not _is_unicode_text(content):
            return Expect("error", "bad_frame", nonce)
        content = content.strip()
        if not content:
            return Expect("error", "empty", nonce)
        if len(content) > MAX_CONTENT:
            return Expect("error", "too_long", nonce)
        return Expect("echo", nonce=nonce or None, content=content)  # an empty nonce is echoed as null
    if kind == "typing":
        return Expect("nothing") if isinstance(data.get("is_typing"), bool) else Expect("error", "bad_frame", nonce)
    if kind == "ping":
        return Expect("pong")
    if kind == "pong":
        return Expect("nothing")
    return Expect("error", "bad_frame", nonce)


def assistant_expectation(frame: str | bytes) -> Expect:
    """docs/protocol.md, "Token streams": the reply the assistant socket owes this frame."""
    refused, data = _parse(frame)
    if refused:
        return refused
    kind = data.get("type")
    if kind == "user_message":
        content, max_tokens = data.get("content"), data.get("max_tokens")
        conversation = data.get("conversation_id")
        if not isinstance(content, str) or not content.strip() or len(content) > 32_000 or not _is_unicode_text(content):
            return Expect("error", "bad_request")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            return Expect("error", "bad_request")
        if max_tokens is not None and not 1 <= max_tokens <= 100_000:
            return Expect("error", "bad_request")
        if conversation and not isinstance(conversation, str):
            return Expect("error", "bad_request")
        if conversation:
            return Expect("error", "not_found")  # no fuzzed id names a conversation of this user
        return Expect("start")
    if kind == "cancel":
        return Expect("nothing")
    if kind == "resume":
        stream_id, after = data.get("stream_id"), data.get("after", -1)
        if not isinstance(stream_id, str) or isinstance(after, bool) or not isinstance(after, int):
            return Expect("error", "bad_frame")
        return Expect("error", "not_found")
    if kind == "ping":
        return Expect("pong")
    if kind == "pong":
        return Expect("nothing")
    return Expect("error", "bad_frame")


# ---- helpers --------------------------------------------------------------------------------
def healthz(cluster: Cluster) -> None:
    for index in range(len(cluster.ports)):
        response = httpx.get(f"{cluster.http(index)}/healthz", timeout=5)
        assert response.status_code == 200, (index, response.text)


def history(cluster: Cluster, slug: str, token: str) -> list[dict[str, Any]]:
    """Every message of the room over REST, paged."""
    return list_messages(cluster, slug, token)


def describe(frame: str | bytes) -> str:
    shown = repr(frame[:200]) + ("…" if len(frame) > 200 else "")
    return f"seed {SEED}, frame {shown} ({len(frame)} {'bytes' if isinstance(frame, bytes) else 'chars'})"


async def room_burst(client: RoomClient, frames: list[str | bytes], marker: int) -> list[Expect]:
    """Send a burst, then a ping whose pong marks its end; check each error frame, in
    order, against the contract. Returns the messages the server owes an echo for."""
    expected = [room_expectation(frame) for frame in frames]
    for frame in frames:
        await client.send(frame)
    await client.send({"type": "ping", "nonce": f"marker-{marker}"})
    pongs_due = sum(e.kind == "pong" for e in expected) + 1
    errors: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(15):
            while pongs_due:
                reply = await client.recv()
                if reply["type"] == "error":
                    errors.append(reply)
                elif reply["type"] == "pong":
                    pongs_due -= 1
    except TimeoutError:
        raise AssertionError(f"no end-of-burst pong within 15 s (seed {SEED}); errors so far {errors}") from None
    except ConnectionClosed as closed:
        raise AssertionError(f"the server closed the socket ({closed.rcvd}) during a burst (seed {SEED})") from None
    wanted = [(frame, e) for frame, e in zip(frames, expected, strict=True) if e.kind == "error"]
    for (frame, want), got in zip(wanted, errors, strict=False):
        assert (got["code"], got["nonce"]) == (want.code, want.nonce), f"{describe(frame)}: expected {want}, got {got}"
        assert isinstance(got["detail"], str) and got["detail"], got
    assert len(errors) == len(wanted), f"seed {SEED}: {len(wanted)} error frames due, {len(errors)} came: {errors[len(wanted) :]}"
    return [e for e in expected if e.kind == "echo"]


# ---- the room socket ----------------------------------------------------------------------------
async def test_room_socket_survives_fuzzing_and_keeps_every_accepted_message(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL: they refuse different strings
    rng = random.Random(SEED)
    token, other = cluster.tokens["user10"], cluster.tokens["user11"]
    slug = new_room(cluster, token)
    path = f"/ws/rooms/{slug}/"
    started = time.monotonic()
    async with room_client(cluster.ws(0, path), token) as fuzzer, room_client(cluster.ws(1, path), other) as observer:
        await fuzzer.sync()
        await observer.sync()
        for i in range(3):  # accepted before any bad input: must survive it
            await fuzzer.say(f"before {i}", nonce=f"before-{i}")
        await fuzzer.wait_messages(3)

        # Every hostile string once as content and once as nonce, then random bursts.
        edge = [dumps({"type": "message", "content": text, "nonce": f"edge-{i}"}) for i, text in enumerate(HOSTILE_STRINGS)]
        edge += [dumps({"type": "message", "content": f"nonce {i}", "nonce": text}) for i, text in enumerate(HOSTILE_STRINGS)]
        owed: list[Expect] = await room_burst(fuzzer, list(edge), -1)
        await fuzzer.wait_messages(3 + len(owed), timeout=10)
        for burst in range(15):  # 15 bursts of 20 hostile frames
            owed += await room_burst(fuzzer, fuzz_frames(rng, ROOM_TEMPLATES, {"type"}, 20), burst)
            # The echoes (acks) of the accepted messages come through the broadcast path.
            await fuzzer.wait_messages(3 + len(owed), timeout=10)

        # A flood: 300 pings and 100 messages without reading a thing, then every answer.
        flood = [dumps({"type": "ping"})] * 300 + [
            dumps({"type": "message", "content": f"flood {i}", "nonce": f"f{i}"}) for i in range(100)
        ]
        rng.shuffle(flood)
        owed += await room_burst(fuzzer, list(flood), 999)
        await fuzzer.wait_messages(3 + len(owed), timeout=15)

        # The fuzzer got its own echoes, with nonces, in the order sent.
        echoes = fuzzer.messages[3:]
        assert [(m["content"], m["nonce"]) for m in echoes] == [(e.content, e.nonce) for e in owed], f"seed {SEED}"
        await observer.wait_messages(len(fuzzer.messages), timeout=10)
        await fuzzer.quiet(0.5)
        await observer.quiet(0.5)
        sent_ids = [m["id"] for m in fuzzer.messages]
        assert len(set(sent_ids)) == len(sent_ids), "an echo came twice"
        assert [m["id"] for m in observer.messages] == sent_ids, "the other worker's client got each message exactly once"
        assert [m["id"] for m in history(cluster, slug, token)] == sent_ids, "history has each accepted message exactly once"

    # Input the server cannot take as a frame ends the connection with the RFC 6455 code,
    # and only that connection.
    async with connect(cluster.ws(0, path), additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as raw:
        await drain_until_synced(raw)
        await raw.send(b'{"type":"message","content":"\xff\xfe bad utf-8"}', text=True)
        # RFC 6455's code for it, under daphne too (core/servers/daphne.py: no dropped socket).
        assert await close_code(raw) == 1007, "invalid UTF-8 in a text frame ends the connection with 1007"
    async with connect(cluster.ws(0, path), additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as raw:
        await drain_until_synced(raw)
        await raw.send("x" * (DAPHNE_MAX_MESSAGE_BYTES + 1))
        # Over daphne's 1 MiB the connection ends with 1009; uvicorn takes up to 16 MiB, and
        # then it is a frame over WS_MAX_FRAME_BYTES like any other: too_long.
        try:
            async with asyncio.timeout(10):
                while (reply := json.loads(await raw.recv()))["type"] == "ping":
                    await raw.send(dumps({"type": "pong"}))
            assert reply["type"] == "error" and reply["code"] == "too_long", reply
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009, closed

    # The worker is healthy: a fresh client joins and chats, and nothing was lost.
    healthz(cluster)
    async with room_client(cluster.ws(0, path), other) as fresh:
        await fresh.sync()
        await fresh.say("after the storm", nonce="after")
        assert (await fresh.until("message", nonce="after"))["content"] == "after the storm"
    contents = [m["content"] for m in history(cluster, slug, token)]
    assert contents[:3] == ["before 0", "before 1", "before 2"] and contents.count("after the storm") == 1
    assert time.monotonic() - started < 60


async def drain_until_synced(connection: ClientConnection) -> None:
    async with asyncio.timeout(10):
        while json.loads(await connection.recv())["type"] != "presence":
            pass


async def close_code(connection: ClientConnection, timeout: float = 10) -> int | None:
    """The server's close code, or None when it dropped the TCP connection without one."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await connection.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {timeout} s") from None


# ---- the assistant socket -------------------------------------------------------------------
STREAM_FRAMES = {"conversation_start", "typing", "ai_stream_chunk", "ai_stream_end"}


async def test_assistant_socket_survives_fuzzing(cluster: Cluster):
    rng = random.Random(SEED + 1)
    token = cluster.tokens["user9"]
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(cluster.ws(1, "/ws/assistant/"), additional_headers=headers, max_size=None) as socket:
        starts_due = 0
        for burst in range(11):
            frames = fuzz_frames(rng, ASSISTANT_TEMPLATES, {"type"}, 20)
            if burst == 0:  # every hostile string once as the content
                frames = [dumps({"type": "user_message", "content": text, "max_tokens": 1}) for text in HOSTILE_STRINGS]
            expected = [assistant_expectation(frame) for frame in frames]
            starts_due += sum(e.kind == "start" for e in expected)
            for frame in frames:
                await socket.send(frame)
            await socket.send(dumps({"type": "ping"}))
            pongs_due = sum(e.kind == "pong" for e in expected) + 1
            errors: list[dict[str, Any]] = []
            try:
                async with asyncio.timeout(15):
                    while pongs_due:
                        reply = json.loads(await socket.recv())
                        if reply["type"] == "error" and reply["code"] == "busy":
                            starts_due -= 1  # a valid message over the concurrency limits: 429 busy, not a start
                        elif reply["type"] == "error":
                            errors.append(reply)
                        elif reply["type"] == "pong":
                            pongs_due -= 1
                        elif reply["type"] == "conversation_start":
                            starts_due -= 1
                        elif reply["type"] == "ping":  # the server's heartbeat (docs/protocol.md)
                            await socket.send(dumps({"type": "pong"}))
                        else:
                            assert reply["type"] in STREAM_FRAMES, reply
            except ConnectionClosed as closed:
                raise AssertionError(f"the server closed the assistant socket ({closed.rcvd}), seed {SEED + 1}") from None
            wanted = [(frame, e) for frame, e in zip(frames, expected, strict=True) if e.kind == "error"]
            for (frame, want), got in zip(wanted, errors, strict=False):
                assert got["code"] == want.code, f"{describe(frame)}: expected {want}, got {got}"
            assert len(errors) == len(wanted), f"seed {SEED + 1}, burst {burst}: extra or missing errors {errors}"
        assert starts_due == 0, "every valid user_message started a reply (or was refused as busy)"
        # Still serving: a reply streams to its end.
        # (Once the fuzzed replies have let go of their slots: busy until then.)
        await socket.send(dumps({"type": "user_message", "content": "still here", "max_tokens": 2}))
        async with asyncio.timeout(20):
            while (end := json.loads(await socket.recv()))["type"] != "ai_stream_end" or "still" not in end["content"]:
                if end["type"] == "error" and end["code"] == "busy":
                    await asyncio.sleep(0.5)
                    await socket.send(dumps({"type": "user_message", "content": "still here", "max_tokens": 2}))
        assert end["finish_reason"] == "length" and end["content"] == "still here "
    healthz(cluster)
