"""Properties of the REST API's input parsing (core/http.py): any body is a JSON object
every database can store, or a 400 with the contract's error codes; any id parameter is
an id or nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from core.http import MAX_ID, ApiError, json_body, parse_id
from core.text import is_storable_text

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
BODIES = st.one_of(
    st.binary(),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=4).map(
        lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)
factory = RequestFactory()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@given(BODIES)
def test_any_body_is_a_storable_object_or_a_400(body: bytes) -> None:
    request = factory.post("/api/rooms/", data=body, content_type="application/json")
    try:
        data = json_body(request)
    except ApiError as error:
        assert error.status == 400 and error.code in {"bad_json", "bad_request"}
        return
    assert isinstance(data, dict)
    assert all(is_storable_text(s) for s in _strings(data))


@pytest.mark.parametrize(
    "body", [b'{"title":"\\ud800"}', b'{"\\udfff":1}', b'{"reason":"a\\u0000b"}', b'{"x":[{"y":"\\ud83d"}]}']
)
def test_lone_surrogates_and_nul_anywhere_are_refused(body: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        json_body(factory.post("/api/rooms/", data=body, content_type="application/json"))
    assert (refused.value.status, refused.value.code) == (400, "bad_request")


@given(st.none() | st.text() | st.from_regex(r"[0-9\u00b2\u00b3\u00b9\u0660-\u0669]{0,30}", fullmatch=True))
def test_any_id_parameter_is_an_id_or_nothing(raw: str | None) -> None:
    value = parse_id(raw)
    assert value is None or (0 <= value <= MAX_ID and raw is not None and int(raw) == value)


@given(st.integers(min_value=0, max_value=MAX_ID), st.integers(min_value=0, max_value=3))
def test_every_id_reads_back(value: int, zeros: int) -> None:
    assert parse_id("0" * zeros + str(value)) == value
    assert parse_id(str(value + MAX_ID + 1)) is None
