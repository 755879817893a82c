"""Properties of the request parsing of /v1/chat/completions and /api/assistant/stream
(streaming/openai/parsing.py, streaming/services.py): any body is a valid request or a 400
with an error code, never anything else."""

from __future__ import annotations

import json
from typing import Any

from django.test import RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from core.text import is_storable_text
from streaming import services
from streaming.openai.parsing import ROLES, parse_chat_request

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3),
    max_leaves=10,
)
TOOL_CALL = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just("call_1") | JSON_VALUES,
        "type": st.just("function") | JSON_VALUES,
        "function": st.fixed_dictionaries({}, optional={"name": ANY_TEXT | JSON_VALUES, "arguments": ANY_TEXT | JSON_VALUES})
        | JSON_VALUES,
    },
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(sorted(ROLES)) | JSON_VALUES},
    optional={
        "content": ANY_TEXT | JSON_VALUES | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": JSON_VALUES})),
        "tool_calls": st.lists(TOOL_CALL, max_size=2) | JSON_VALUES,
        "tool_call_id": st.just("call_1") | JSON_VALUES,
    },
)
TOOL = st.fixed_dictionaries(
    {},
    optional={"type": st.just("function") | JSON_VALUES, "function": st.fixed_dictionaries({}, optional={"name": JSON_VALUES})},
)
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "model": st.just("echo") | JSON_VALUES,
        "messages": st.lists(MESSAGE, max_size=3) | JSON_VALUES,
        "stream": st.booleans() | JSON_VALUES,
        "max_tokens": st.integers() | JSON_VALUES,
        "stream_options": st.fixed_dictionaries({"include_usage": JSON_VALUES}) | JSON_VALUES,
        "tools": st.lists(TOOL, max_size=2) | JSON_VALUES,
        "logprobs": JSON_VALUES,
        "modalities": JSON_VALUES,
    },
)
BODIES = st.one_of(st.binary(), JSON_VALUES.map(lambda v: json.dumps(v).encode()), REQUEST.map(lambda v: json.dumps(v).encode()))
OPENAI_CODES = {
    "invalid_json",
    "invalid_request",
    "invalid_messages",
    "invalid_model",
    "bad_request",
    "invalid_type",
    "invalid_value",
    "missing_required_parameter",
    "unsupported_parameter",
}
factory = RequestFactory()


@given(BODIES)
def test_any_chat_completions_body_is_a_request_or_a_400(body: bytes) -> None:
    try:
        turns, max_tokens, stream, include_usage, model, _ = parse_chat_request(
            factory.post("/v1/chat/completions", data=body, content_type="application/json")
        )
    except services.StreamRefusedError as refused:
        assert refused.http_status == 400 and refused.code in OPENAI_CODES
        return
    assert turns and all(t.role in {"system", "user", "assistant", "tool"} and is_storable_text(t.content) for t in turns)
    assert any(t.role == "user" and t.content.strip() for t in turns)
    assert max_tokens is None or 1 <= max_tokens <= services.MAX_TOKENS_LIMIT
    assert isinstance(stream, bool) and isinstance(include_usage, bool) and isinstance(model, str) and model


@given(message=ANY_TEXT | JSON_VALUES, max_tokens=st.integers() | JSON_VALUES)
def test_any_assistant_request_is_clean_or_a_400(message: Any, max_tokens: Any) -> None:
    try:
        cleaned, tokens = services.clean_request(message=message, max_tokens=max_tokens)
    except services.StreamRefusedError as refused:
        assert (refused.http_status, refused.code) == (400, "bad_request")
        return
    assert cleaned == message and is_storable_text(cleaned) and cleaned.strip()
    assert tokens is None or (type(tokens) is int and 1 <= tokens <= services.MAX_TOKENS_LIMIT)
