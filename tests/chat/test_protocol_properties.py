"""Properties of the room protocol (chat/protocol.py, chat/consumers.py): whatever a client
sends, the parser returns a typed frame or raises ChatError with a contract code, and
every server frame encodes to one line of JSON that decodes to itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from chat import protocol
from chat.consumers import _query_id
from chat.protocol import ChatError, Delete, Edit, Ping, Pong, React, Read, SendMessage, Typing, parse_client_frame
from core.http import MAX_ID

CONTRACT_CODES = set(get_args(protocol.ErrorCode))
# Any code point, lone surrogates included: JSON can spell them ("\ud800").
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "type": st.sampled_from(["message", "typing", "ping", "pong", "edit", "delete", "react", "read", "shout", ""]) | JSON_VALUES
}
IDS_OR_NOT = st.integers() | JSON_VALUES
FRAME_LIKE = st.fixed_dictionaries(
    {"type": FIELDS["type"]},
    optional={
        "content": JSON_VALUES | ANY_TEXT,
        "nonce": JSON_VALUES,
        "is_typing": JSON_VALUES,
        "id": IDS_OR_NOT,
        "reply_to": IDS_OR_NOT,
        "emoji": JSON_VALUES,
        "on": JSON_VALUES,
    },
)
# What a client can put in a text frame: JSON of any shape, frame-like objects, any text.
CLIENT_TEXT = st.one_of(
    ANY_TEXT,
    JSON_VALUES.map(json.dumps),
    FRAME_LIKE.map(json.dumps),
    FRAME_LIKE.map(lambda frame: json.dumps(frame, ensure_ascii=False)),
)
STORABLE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


def _parse(text: str) -> protocol.ClientFrame | ChatError:
    try:
        return parse_client_frame(text)
    except ChatError as error:
        return error


@given(CLIENT_TEXT)
def test_any_text_is_a_frame_or_a_contract_error(text: str) -> None:
    result = _parse(text)
    if isinstance(result, ChatError):
        assert result.code in CONTRACT_CODES
        frame = result.frame()
        # The error frame itself always encodes: no surrogate or foreign object is echoed.
        assert json.loads(protocol.encode(frame).encode("utf-8")) == frame
        assert frame["nonce"] is None or protocol.is_storable_text(frame["nonce"])
    else:
        assert isinstance(result, SendMessage | Edit | Delete | React | Read | Typing | Ping | Pong)
        if isinstance(result, SendMessage | Edit):
            assert protocol.is_storable_text(result.content) and result.content == result.content.strip()
            assert 1 <= len(result.content) <= protocol.MAX_CONTENT_CHARS
        if isinstance(result, SendMessage | Edit | Delete | React | Read):
            assert result.nonce is None or (protocol.is_storable_text(result.nonce) and len(result.nonce) <= 64)
        if isinstance(result, Edit | Delete | React | Read):
            assert isinstance(result.id, int) and 0 < result.id <= MAX_ID
        if isinstance(result, SendMessage):
            assert result.reply_to is None or 0 < result.reply_to <= MAX_ID
        if isinstance(result, React):
            assert isinstance(result.emoji, str) and isinstance(result.on, bool)


@given(content=STORABLE_TEXT, nonce=st.none() | STORABLE_TEXT.filter(lambda n: len(n) <= protocol.MAX_NONCE_CHARS))
def test_a_message_frame_parses_to_its_trimmed_content_or_says_why_not(content: str, nonce: str | None) -> None:
    result = _parse(json.dumps({"type": "message", "content": content, "nonce": nonce}))
    trimmed = content.strip()
    if not trimmed:
        assert isinstance(result, ChatError) and result.code == "empty" and result.nonce == nonce
    elif len(trimmed) > protocol.MAX_CONTENT_CHARS:
        assert isinstance(result, ChatError) and result.code == "too_long"
    else:
        assert result == SendMessage(content=trimmed, nonce=nonce)


@given(is_typing=JSON_VALUES)
def test_typing_takes_only_a_boolean(is_typing: Any) -> None:
    result = _parse(json.dumps({"type": "typing", "is_typing": is_typing}))
    if isinstance(is_typing, bool):
        assert result == Typing(is_typing=is_typing)
    else:
        assert isinstance(result, ChatError) and result.code == "bad_frame"


@st.composite
def server_frames(draw: st.DrawFn) -> protocol.ServerFrame:
    text, ids = STORABLE_TEXT, st.integers(min_value=0, max_value=MAX_ID)
    created = draw(st.datetimes(timezones=st.just(UTC)))
    frames: list[Any] = [
        {"type": "hello", "room": draw(text), "user": draw(text), "heartbeat": draw(st.floats(0, 3600))},
        protocol.message_frame(
            id=draw(ids),
            room=draw(text),
            user=draw(text),
            content=draw(text),
            created_at=created,
            nonce=draw(st.none() | text),
            seq=draw(ids),
            reply_to=draw(st.none() | ids),
            edited_at=draw(st.none() | st.just(created)),
            reactions=draw(st.dictionaries(text, st.lists(text, max_size=3), max_size=3)),
        ),
        {"type": "gap", "missed": draw(ids)},
        {"type": "synced", "last_id": draw(ids), "seq": draw(ids)},
        {"type": "presence", "users": draw(st.lists(text))},
        {"type": "typing", "user": draw(text), "is_typing": draw(st.booleans())},
        {"type": "message_deleted", "id": draw(ids), "seq": draw(ids)},
        {"type": "message_edited", "id": draw(ids), "content": draw(text), "edited_at": created.isoformat(), "seq": draw(ids)},
        {"type": "reactions", "id": draw(ids), "reactions": {draw(text): [draw(text)]}, "seq": draw(ids)},
        {"type": "read", "user": draw(text), "id": draw(ids)},
        {"type": "notice", "content": draw(text)},
        {"type": "room_locked", "locked": draw(st.booleans())},
        protocol.error_frame(draw(st.sampled_from(sorted(CONTRACT_CODES))), draw(text), nonce=draw(st.none() | text)),
    ]
    return draw(st.sampled_from(frames))


@given(server_frames())
def test_server_frames_encode_to_one_line_of_json_that_decodes_to_themselves(frame: protocol.ServerFrame) -> None:
    text = protocol.encode(frame)
    assert "\n" not in text and "\r" not in text  # chat/events.py puts one frame per line
    assert json.loads(text.encode("utf-8")) == frame
    if frame["type"] == "message":
        assert (
            datetime.fromisoformat(frame["ts"]).utcoffset() is not None
        )  # an explicit offset, docs/protocol.md, "The room protocol"


# Digits of every kind, as a browser percent-encodes them: "²" passes str.isdigit, not int.
DIGITS_ANY_SCRIPT = st.from_regex(r"[0-9\u00b2\u00b3\u00b9\u0660-\u0669]{0,30}", fullmatch=True)
QUERY_STRINGS = st.binary() | st.text().map(str.encode) | DIGITS_ANY_SCRIPT.map(lambda d: f"last_id={quote(d)}".encode())


@given(QUERY_STRINGS)
def test_last_id_from_any_query_string_is_an_id_or_nothing(query: bytes) -> None:
    last_id = _query_id(query, "last_id")
    assert last_id is None or 0 <= last_id <= MAX_ID


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_last_id_reads_back_every_id(last_id: int) -> None:
    assert _query_id(f"last_id={last_id}&x=1".encode(), "last_id") == last_id
    assert _query_id(f"x=1&last_seq={last_id}".encode(), "last_seq") == last_id
