"""The request of /v1/chat/completions, read and checked (docs/protocol.md, "Token streams" and
"Limits"): any body is a ChatRequest or a refusal with an OpenAI error code, never anything else."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from core.text import is_storable_text
from streaming.backends import ChatTurn
from streaming.services import MAX_MESSAGE_CHARS, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, StreamRefusedError

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
    "model": ((str,), "a string"),
    "messages": ((list,), "an array"),
    "stream": ((bool,), "a boolean"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "modalities": ((list,), "an array"),
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


_JSON_TYPES = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _json_type(value: object) -> str:
    """What a parsed JSON value is, in the words of OpenAI's error messages."""
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "null")


def _wrong_type(param: str, described: str, value: object) -> StreamRefusedError:
    """OpenAI's refusal of a value of the wrong JSON type, naming the parameter."""
    return StreamRefusedError("invalid_type", f"Invalid type for '{param}': expected {described}, but got {_json_type(value)}.")


def _missing(param: str) -> StreamRefusedError:
    return StreamRefusedError("missing_required_parameter", f"Missing required parameter: '{param}'.")


def _of_type(value: object, types: tuple[type, ...]) -> bool:
    # JSON true/false are Python bools, which are ints too: a boolean is no number.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _check_parameter_types(body: dict[str, object]) -> None:
    """StreamRefusedError naming the first parameter of the wrong JSON type (or a required
    one missing), or ``n`` other than 1 (one choice is all a stream of the log carries)."""
    for name in ("model", "messages"):
        if body.get(name) is None:
            raise _missing(name)
    for name, (types, described) in PARAMETER_TYPES.items():
        value = body.get(name)
        if value is None:  # absent or null: OpenAI's default
            continue
        if not _of_type(value, types):
            raise _wrong_type(name, described, value)
        if name == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise _wrong_type("stop", "a string or an array of strings", value)
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is not None and not isinstance(options["include_usage"], bool):
        raise _wrong_type("stream_options.include_usage", "a boolean", options["include_usage"])
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
        raise _wrong_type(where, "an object with a string 'type'", tool)
    if tool["type"] == "function":
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise StreamRefusedError("missing_required_parameter", f"Missing required parameter: '{where}.function.name'.")


def _check_tool_calls(calls: object, where: str) -> list[str]:
    """An assistant message's ``tool_calls`` as OpenAI takes them; their ids."""
    if not isinstance(calls, list):
        raise _wrong_type(where, "an array", calls)
    ids = []
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise _wrong_type(at, "an object", call)
        call_id, kind, function = call.get("id"), call.get("type"), call.get("function")
        if call_id is None or call_id == "":
            raise _missing(f"{at}.id")
        if not isinstance(call_id, str):
            raise _wrong_type(f"{at}.id", "a string", call_id)
        if kind is not None and not isinstance(kind, str):
            raise _wrong_type(f"{at}.type", "a string", kind)
        if kind not in (None, "function"):
            raise StreamRefusedError("invalid_value", f"Invalid value for '{at}.type': only 'function' tool calls are supported.")
        if function is None:
            raise _missing(f"{at}.function")
        if not isinstance(function, dict):
            raise _wrong_type(f"{at}.function", "an object", function)
        for field in ("name", "arguments"):
            if not isinstance(function.get(field), str):
                raise _wrong_type(f"{at}.function.{field}", "a string", function.get(field))
        ids.append(call_id)
    return ids


# The JSON types of a message's fields (OpenAI's API reference); ``content`` may also be
# null (an assistant message that is only tool calls: checked with its role).
MESSAGE_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "role": ((str,), "a string"),
    "content": ((str, list), "a string or an array of content parts"),
    "name": ((str,), "a string"),
}


def _check_message_types(message: dict[str, Any], where: str) -> None:
    if message.get("role") is None:
        raise _missing(f"{where}.role")
    for field, (types, described) in MESSAGE_FIELD_TYPES.items():
        value = message.get(field)
        if value is not None and not _of_type(value, types):
            raise _wrong_type(f"{where}.{field}", described, value)


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
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("invalid_value", "Invalid 'model': expected the name of a model (GET /v1/models), got an empty string.")
    turns: list[ChatTurn] = []
    # The ids of the tool calls a tool message may answer: those of the assistant message before it.
    open_calls: list[str] = []
    for i, message in enumerate(raw_messages):
        if not isinstance(message, dict):
            raise _wrong_type(f"messages[{i}]", "an object", message)
        _check_message_types(message, f"messages[{i}]")
        # A role that is a list or an object is unhashable: ``in ROLES`` would raise (a 500).
        if message["role"] not in ROLES:
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
            if call_id is None or call_id == "":
                raise _missing(f"messages[{i}].tool_call_id")
            if not isinstance(call_id, str):
                raise _wrong_type(f"messages[{i}].tool_call_id", "a string", call_id)
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
    cap_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(cap_name)
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS_LIMIT:  # an integer (checked above)
        raise bad("invalid_value", f"Invalid '{cap_name}': expected an integer from 1 to {MAX_TOKENS_LIMIT}, got {max_tokens}.")
    params = {name: body[name] for name in PASSED_THROUGH if body.get(name) is not None}
    if body.get("max_completion_tokens") is not None:
        params["max_completion_tokens"] = max_tokens
    stream = body.get("stream") is True  # a boolean or null (checked above)
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return ChatRequest(turns, max_tokens, stream, include_usage, model, params)
