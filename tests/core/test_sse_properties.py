"""Properties of the SSE framing (core/sse.py) and of Last-Event-ID parsing: any event
id, name and data come back out of a spec-compliant parser exactly, and nothing a value
contains can end an event early or forge a field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.http import MAX_ID
from core.sse import KEEPALIVE, LastEventIdError, encode_comment, encode_event, parse_last_event_id


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    last_event_id: str


def parse_stream(stream: bytes) -> list[Event]:
    """The event stream interpretation of the WHATWG HTML standard (9.2.6), minus retry:
    UTF-8, lines end with CRLF, LF or CR, a blank line dispatches."""
    text = stream.decode("utf-8")  # a stream that is not UTF-8 fails here
    text = text.removeprefix("\ufeff")
    events, data, event_type, last_event_id = [], "", "", ""
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data:  # an event with an empty data buffer is not dispatched
                events.append(Event(event_type or "message", data.removesuffix("\n"), last_event_id))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id" and "\0" not in value:
            last_event_id = value
    return events  # an event not ended by a blank line is dropped, as the standard says


# Any code point, lone surrogates included (a JSON value from an upstream can hold one).
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
SSE_TEXT = st.text(st.characters(codec="utf-8"))  # what a str event data can be sent as
LINE_BREAKS = st.sampled_from(["\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r"])
# Values built to forge fields: line breaks followed by field lines and blank lines.
INJECTION = st.lists(st.one_of(SSE_TEXT, LINE_BREAKS, st.sampled_from(["data: x", "event: evil", "id: 666", ": c", "retry: 1"])))
DATA_TEXT = SSE_TEXT | INJECTION.map("".join)
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), min_size=1)
JSON_VALUES = st.recursive(
    # No infinities: JSON cannot spell them (compact_json sends null, as browsers' JSON.stringify does).
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)


def _wire(text: str) -> bytes:
    return text.encode("utf-8")  # what the response sends: any str that is not UTF-8 fails here


@given(data=DATA_TEXT, event=st.none() | NAME, id=st.none() | NAME)
def test_a_text_event_parses_back_to_itself(data: str, event: str | None, id: str | None) -> None:
    events = parse_stream(_wire(": stream open\n\n" + encode_event(data=data, event=event, id=id)))
    # Line ends inside data are normalised to LF, like every SSE client does with them.
    assert events == [Event(event or "message", data.replace("\r\n", "\n").replace("\r", "\n"), id or "")]


@given(data=JSON_VALUES.filter(lambda value: not isinstance(value, str)), event=NAME, id=NAME)  # a str is sent as is
def test_a_json_event_parses_back_to_the_same_value(data: Any, event: str, id: str) -> None:
    events = parse_stream(_wire(encode_event(data=data, event=event, id=id)))
    assert len(events) == 1 and events[0].type == event and events[0].last_event_id == id
    assert json.loads(events[0].data) == data


@given(st.lists(st.tuples(DATA_TEXT, NAME, NAME), max_size=5))
def test_events_in_a_row_stay_apart(items: list[tuple[str, str, str]]) -> None:
    stream = KEEPALIVE + "".join(encode_event(data=d, event=e, id=i) for d, e, i in items) + encode_comment("x\ny")
    events = parse_stream(_wire(stream))
    assert [(e.type, e.data, e.last_event_id) for e in events] == [
        (e, d.replace("\r\n", "\n").replace("\r", "\n"), i) for d, e, i in items
    ]


@given(
    value=st.text(min_size=1).filter(lambda v: any(c in v for c in "\r\n\0"))
    | INJECTION.map("".join).filter(lambda v: any(c in v for c in "\r\n"))
)
def test_an_event_name_or_id_that_is_not_one_line_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        encode_event(data="x", event=value)
    with pytest.raises(ValueError):
        encode_event(data="x", id=value)


@given(INJECTION.map("".join))
def test_a_comment_is_never_an_event(text: str) -> None:
    assert parse_stream(_wire(encode_comment(text) + encode_event(data="after"))) == [Event("message", "after", "")]


STREAM_ID = "0123456789abcdef0123456789abcdef"


@given(st.none() | ANY_TEXT | st.from_regex(rf"{STREAM_ID}:[0-9\u00b2\u00b3\u0660-\u0669]{{0,25}}", fullmatch=True))
def test_last_event_id_is_a_position_none_or_a_400_that_shows_a_valid_one(value: str | None) -> None:
    try:
        after = parse_last_event_id(value, prefix=f"{STREAM_ID}:", example=f"{STREAM_ID}:3")
    except LastEventIdError as error:
        assert error.http_status == 400 and f"'{STREAM_ID}:3'" in error.detail
    else:
        assert (after is None) == (value is None)
        assert after is None or 0 <= after <= MAX_ID


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_last_event_id_reads_back_every_position(seq: int) -> None:
    assert parse_last_event_id(f"{STREAM_ID}:{seq}", prefix=f"{STREAM_ID}:", example="") == seq
    with pytest.raises(LastEventIdError):  # another stream's id
        parse_last_event_id(f"{STREAM_ID[:-1]}0:{seq}", prefix=f"{STREAM_ID}:", example="")
