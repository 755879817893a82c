"""The request of /v1/chat/completions, read and checked (docs/protocol.md, "Token streams" and
"Limits"): any body is a ChatRequest or a refusal with an OpenAI error code, never anything else."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from core.text import is_storable_text
from streaming.backends import ChatTurn
from streaming.services import MAX_MESSAGE_CHARS, MAX_PROMPT_CHARS, StreamRefusedError, clean_request

ROLES = {"system", "user", "assistant", "developer", "tool"}
# The largest request body read (docs/protocol.md, "Limits"): the largest valid request is
# MAX_PROMPT_CHARS characters, each at most 12 bytes as JSON (an emoji escaped as two
# \uXXXX), about 1.5 MB; 2 MiB leaves room for the rest of the body.
MAX_REQUEST_BYTES = 2 * 1024 * 1024


# The optional parameters of OpenAI's Chat Completions checked for their JSON type
# (docs/protocol.md, "Chat Completions parameters"): a wrong type is a 400 naming the
# parameter, as OpenAI answers, rather than a value silently ignored.
_NUMBER = (int, float)
PARAMETER_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "response_format": ((dict,), "an object"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "stop": ((str, list), "a string or an array of strings"),
    "seed": ((int,), "an integer"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "logprobs": ((bool,), "a boolean"),
    "top_logprobs": ((int,), "an integer"),
    "logit_bias": ((dict,), "an object"),
    "reasoning_effort": ((str,), "a string"),
    "user": ((str,), "a string"),
    "stream_options": ((dict,), "an object"),
    "n": ((int,), "an integer"),
}
# The parameters sent to an ``openai`` upstream as the client sent them (null ones are left
# out: the upstream's default), with the cap under the client's own name when it used
# max_completion_tokens (docs/protocol.md, "Chat Completions parameters").
PASSED_THROUGH = (
    "temperature",
    "top_p",
    "seed",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "reasoning_effort",
    # include_usage: the upstream then reports its own token counts, which we use.
    "stream_options",
)
# Parameters OpenAI accepts that we cannot honour (what they ask for is not relayed to the
# client): a 400 naming them rather than a silent drop. ``logprobs: false`` is the default and fine.
REFUSED = {
    "top_logprobs": "log probabilities are not streamed back",
    "functions": "use 'tools' (functions is OpenAI's deprecated form)",
    "function_call": "use 'tool_choice' (function_call is OpenAI's deprecated form)",
    "audio": "audio output is not supported",
}


def _check_parameter_types(body: dict[str, object]) -> None:
    """StreamRefusedError naming the first optional parameter of the wrong JSON type, or
    ``n`` other than 1 (one choice is all a stream of the log carries)."""
    for name, (types, described) in PARAMETER_TYPES.items():
        value = body.get(name)
        if value is None:  # absent or null: OpenAI's default
            continue
        # JSON true/false are Python bools, which are ints too: a boolean is no number.
        wrong = isinstance(value, bool) and bool not in types
        if wrong or not isinstance(value, types):
            raise StreamRefusedError(
                "invalid_type", f"Invalid type for '{name}': expected {described}, but got {type(value).__name__}."
            )
        if name == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise StreamRefusedError("invalid_type", "Invalid type for 'stop': expected a string or an array of strings.")
    if body.get("n") not in (None, 1):
        raise StreamRefusedError("invalid_value", "Invalid 'n': only n=1 is supported (one choice per stream).")
    if body.get("logprobs") is True:
        raise StreamRefusedError(
            "unsupported_parameter", "Unsupported parameter: 'logprobs': log probabilities are not streamed back."
        )
    for name, why in REFUSED.items():
        if body.get(name) is not None:
            raise StreamRefusedError("unsupported_parameter", f"Unsupported parameter: '{name}': {why}.")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise StreamRefusedError("unsupported_parameter", "Unsupported parameter: 'modalities': only [\"text\"] is supported.")
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        _check_tool(tool, f"tools[{i}]")


def _check_tool(tool: object, where: str) -> None:
    """A tool as OpenAI takes it: an object with a ``type``; a function tool's ``function`` names it."""
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        raise StreamRefusedError("invalid_type", f"Invalid type for '{where}': expected an object with a string 'type'.")
    if tool["type"] == "function":
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise StreamRefusedError("missing_required_parameter", f"Missing required parameter: '{where}.function.name'.")


def _check_tool_calls(calls: object, where: str) -> list[str]:
    """An assistant message's ``tool_calls`` as OpenAI takes them; their ids."""
    if not isinstance(calls, list):
        raise StreamRefusedError("invalid_type", f"Invalid type for '{where}': expected an array.")
    ids = []
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise StreamRefusedError("invalid_type", f"Invalid type for '{at}': expected an object.")
        function = call.get("function")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise StreamRefusedError("missing_required_parameter", f"Missing required parameter: '{at}.id'.")
        if not isinstance(function, dict):
            raise StreamRefusedError("missing_required_parameter", f"Missing required parameter: '{at}.function'.")
        for field in ("name", "arguments"):
            if not isinstance(function.get(field), str):
                raise StreamRefusedError("invalid_type", f"Invalid type for '{at}.function.{field}': expected a string.")
        ids.append(call["id"])
    return ids


def _content_text(content: object) -> str | None:
    """A message's text: the content itself, or its text parts joined (other parts, such as
    images, travel upstream in the message as it was sent); None for anything else."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        return None
    texts = [part.get("text") for part in content if part.get("type") == "text"]
    return "".join(text for text in texts if isinstance(text, str)) if all(isinstance(t, str) for t in texts) else None


class ChatRequest(NamedTuple):
    turns: list[ChatTurn]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    model: str
    # PASSED_THROUGH parameters that are not null, for the backend.
    params: dict[str, Any]


def _body(request: HttpRequest) -> bytes:
    """The request body, at most MAX_REQUEST_BYTES (413 beyond, declared or sent)."""
    too_large = StreamRefusedError(
        "request_too_large", f"The request body is larger than {MAX_REQUEST_BYTES} bytes.", kind="too_large"
    )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_REQUEST_BYTES:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig:  # Django's own cap (DATA_UPLOAD_MAX_MEMORY_SIZE), if set lower
        raise too_large from None
    if len(body) > MAX_REQUEST_BYTES:  # sent without a Content-Length (chunked)
        raise too_large
    return body


def request_json(request: HttpRequest) -> object:
    """The /v1 request's body parsed as JSON (an empty body is ``{}``): 413 over
    MAX_REQUEST_BYTES, 400 ``invalid_json`` for what does not parse."""
    raw = _body(request)
    try:
        return json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise StreamRefusedError("invalid_json", "We could not parse the JSON body of your request.") from None


def parse_chat_request(request: HttpRequest) -> ChatRequest:
    """The request's body as a chat completion request; StreamRefusedError (a 400, or a 413
    for a body over MAX_REQUEST_BYTES) for anything else."""
    bad = StreamRefusedError
    body = request_json(request)
    if not isinstance(body, dict):
        raise bad("invalid_request", "The body must be a JSON object.")
    _check_parameter_types(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad("invalid_messages", "'messages' must be a non-empty array.")
    turns: list[ChatTurn] = []
    # The ids of the tool calls a tool message may answer: those of the assistant message before it.
    open_calls: list[str] = []
    for i, message in enumerate(raw_messages):
        # A role that is a list or an object is unhashable: ``in ROLES`` would raise (a 500).
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in ROLES:
            raise bad("invalid_messages", "Each message needs a role of system, developer, user, assistant or tool.")
        role = message["role"]
        content = _content_text(message.get("content"))
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls is not None:
            open_calls = _check_tool_calls(calls, f"messages[{i}].tool_calls")
            if message.get("content") is None:  # content null: a reply that is only tool calls
                content = ""
        elif role != "tool":
            open_calls = []
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad("missing_required_parameter", f"Missing required parameter: 'messages[{i}].tool_call_id'.")
            if call_id not in open_calls:
                raise bad(
                    "invalid_messages",
                    f"Invalid 'messages[{i}]': a tool message must answer a tool call of the assistant message "
                    "before it, by its id.",
                )
        if not isinstance(content, str):
            raise bad("invalid_messages", "Each message's content must be a string.")
        if len(content) > MAX_MESSAGE_CHARS:  # the assistant's limit (docs/protocol.md, "Limits")
            raise bad(
                "string_above_max_length",
                f"Invalid 'messages[{i}].content': string too long. Expected a string with maximum length "
                f"{MAX_MESSAGE_CHARS}, but got a string with length {len(content)} instead.",
            )
        if not is_storable_text(content):  # a lone surrogate or NUL would fail the database write
            raise bad("invalid_messages", "Each message's content must be Unicode text without NUL or lone surrogates.")
        role = "system" if role == "developer" else role
        turns.append(ChatTurn(role, content, {**message, "role": role}))
    if not any(t.role == "user" and t.content.strip() for t in turns):
        raise bad("invalid_messages", "At least one user message with content is needed.")
    total = sum(len(t.content) for t in turns)
    if total > MAX_PROMPT_CHARS:
        raise bad(
            "context_length_exceeded",
            f"The messages have {total} characters in all; at most {MAX_PROMPT_CHARS} are accepted.",
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    # The content was checked above, message by message: only max_tokens is left to check.
    clean_request(message="x", max_tokens=max_tokens)
    params = {name: body[name] for name in PASSED_THROUGH if body.get(name) is not None}
    if body.get("max_completion_tokens") is not None:
        params["max_completion_tokens"] = max_tokens
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("invalid_request", "'stream' must be a boolean.")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("invalid_model", "'model' must be a non-empty string.")
    return ChatRequest(turns, max_tokens, stream, include_usage, model, params)
