"""OpenAI's Responses API: text, function tools and reasoning (docs/protocol.md, "Responses API").

A response is an ordinary token stream (``resp_<stream id>``): its log is the truth, and
streamed events, the Response object, a resume with ``starting_after`` and a cancel are
all read from it (streaming.responses.events), so any worker answers any of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from accounts.connections import credential_watch
from accounts.credentials import credential_for_request
from core.eventlog import LogEvent, LogMeta, get_log
from core.http import api_view, parse_id, signed_in_user
from core.sse import after_the_end, encode_event, follow, last_event_id, sse_response
from core.text import is_storable_text
from streaming import services
from streaming.backends import ChatTurn
from streaming.openai.errors import OPENAI_ERRORS
from streaming.openai.parsing import request_json
from streaming.responses.events import ResponseHead, Translator, head_from, translate
from streaming.services import MAX_MESSAGE_CHARS, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, StreamRefusedError

# What we honour (`tools`: function tools). Anything else OpenAI accepts (temperature, reasoning,
# tool_choice, include, ...) is refused by name rather than dropped (docs/protocol.md, "Responses API").
FIELDS = {
    "model",
    "input",
    "instructions",
    "stream",
    "background",
    "store",
    "max_output_tokens",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}
ROLES = {"system", "developer", "user", "assistant"}
TEXT_PARTS = {"input_text", "output_text"}
# How long a cancel waits for the response to end before answering (the contract: within 1 s).
CANCEL_WAIT_SECONDS = 2.0
# Meta fields of a response, beside the log's own (core.eventlog.RedisLog.annotate).
PREFIX = "resp_"


def _bad(param: str, detail: str, code: str = "invalid_value") -> StreamRefusedError:
    return StreamRefusedError(code, f"{param}: {detail}")


def _not_found() -> StreamRefusedError:
    return StreamRefusedError("not_found", "No response with this id was found.", kind="not_found")


def _text(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(param, "must be a string", "invalid_type")
    if not is_storable_text(value):
        raise _bad(param, "must be Unicode text without NUL or lone surrogates")
    if len(value) > MAX_MESSAGE_CHARS:
        raise _bad(param, f"is longer than {MAX_MESSAGE_CHARS} characters", "string_above_max_length")
    return value


def _content(value: object, param: str) -> str:
    if isinstance(value, str):
        return _text(value, param)
    if not isinstance(value, list) or not value:
        raise _bad(param, "must be a string or a non-empty list of input_text parts", "invalid_type")
    texts = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS:
            raise _bad(f"{param}[{i}]", "only input_text parts are supported on /v1/responses yet")
        texts.append(_text(part.get("text"), f"{param}[{i}].text"))
    return "".join(texts)


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A ``function_call`` input item as a Chat Completions tool call."""
    for key in ("call_id", "name", "arguments"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(f"{param}.{key}", "must be a string", "invalid_type")
        if value is None or (key != "arguments" and not value):
            raise _bad(f"{param}.{key}", "must be a non-empty string", "missing_required_parameter")
    _text(item["arguments"], f"{param}.arguments")
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}


def _input(value: object, known: set[str]) -> list[ChatTurn]:
    """The input as chat turns: messages; function_call items (consecutive ones become one
    assistant turn with tool_calls) and function_call_output items (tool turns), so that a
    client can send a tool's result back."""
    if isinstance(value, str):
        return [ChatTurn("user", _text(value, "input"))]
    if not isinstance(value, list) or not value:
        raise _bad("input", "must be a string or a non-empty list of input items", "invalid_type")
    turns: list[ChatTurn] = []
    calls = set(known)  # the call ids a function_call_output may name (a previous response's too)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}]", "must be an object (an input item)", "invalid_type")
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise _bad(f"input[{i}].type", "must be a string", "invalid_type")
        if kind not in ("message", "function_call", "function_call_output"):
            raise _bad(f"input[{i}]", "only message, function_call and function_call_output items are supported")
        if kind == "function_call":
            call = _function_call(item, f"input[{i}]")
            calls.add(call["id"])
            last = turns[-1] if turns else None
            if last is not None and last.message is not None and last.message.get("tool_calls"):
                turns[-1] = ChatTurn("assistant", "", {**last.message, "tool_calls": [*last.message["tool_calls"], call]})
            else:
                turns.append(ChatTurn("assistant", "", {"role": "assistant", "content": None, "tool_calls": [call]}))
            continue
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in calls:
                raise _bad(f"input[{i}].call_id", "must name a function_call item before it", "invalid_value")
            output = _text(item.get("output"), f"input[{i}].output")
            turns.append(ChatTurn("tool", output, {"role": "tool", "tool_call_id": call_id, "content": output}))
            continue
        role = item.get("role")
        if not isinstance(role, str):  # (a list or an object is unhashable: ``in ROLES`` would raise)
            raise _bad(f"input[{i}].role", f"must be a string, one of {', '.join(sorted(ROLES))}", "invalid_type")
        if role not in ROLES:
            raise _bad(f"input[{i}].role", f"must be one of {', '.join(sorted(ROLES))}")
        turns.append(ChatTurn(str(item["role"]), _content(item.get("content"), f"input[{i}].content")))
    return turns


def _tools(value: object) -> list[dict[str, Any]]:
    """Function tools (OpenAI's Responses shape: ``type``, ``name``, ``parameters``, ...)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad("tools", "must be a list", "invalid_type")
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}]", "must be an object (a function tool)", "invalid_type")
        if tool.get("type") != "function":
            raise _bad(f"tools[{i}].type", "only function tools are supported", "unsupported_parameter")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools[{i}].name", "must be a non-empty string", "missing_required_parameter")
        for key, kind in (("parameters", dict), ("description", str), ("strict", bool)):
            if tool.get(key) is not None and not isinstance(tool[key], kind):
                raise _bad(f"tools[{i}].{key}", f"must be a {kind.__name__}", "invalid_type")
        tools.append(tool)
    return tools


def _tool_choice(value: object) -> object:
    """``tool_choice`` as Chat Completions has it (None: left to the model)."""
    if value is None or value in ("none", "auto", "required"):
        return value
    if not isinstance(value, str | dict):
        raise _bad("tool_choice", 'must be a string or an object {"type": "function", "name": ...}', "invalid_type")
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise _bad("tool_choice", 'must be "none", "auto", "required" or {"type": "function", "name": ...}', "invalid_value")


def _chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses function tools as Chat Completions tools (what the backends take)."""
    return [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type" and v is not None}} for tool in tools]


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(name, "must be a boolean", "invalid_type")
    return value


def _stream_id(response_id: object) -> str:
    if not isinstance(response_id, str):
        raise _bad("previous_response_id", "must be a string, the id of one of your responses (resp_...)", "invalid_type")
    if not response_id.startswith("resp_"):
        raise _bad("previous_response_id", "must be the id of one of your responses, resp_...")
    return response_id.removeprefix("resp_")


async def _load(stream_id: str, user_id: int) -> tuple[ResponseHead, LogMeta]:
    """The response's head, if it is this user's; a 404 otherwise (someone else's is no different)."""
    meta = await get_log().meta(stream_id)
    if meta is None or meta.owner_id != user_id or f"{PREFIX}model" not in meta.extra:
        raise _not_found()
    fields = {k.removeprefix(PREFIX): v for k, v in meta.extra.items() if k.startswith(PREFIX)}
    return head_from(stream_id, fields), meta


async def _all_events(stream_id: str) -> list[LogEvent]:
    log = get_log()
    events: list[LogEvent] = []
    after = -1
    while batch := await log.read(stream_id, after=after, wait=0):
        events.extend(batch)
        after = batch[-1].seq
    return events


async def _previous_turns(response_id: object, user_id: int) -> list[ChatTurn]:
    """The turns of a previous response, its input then its output (its instructions are not carried over, as OpenAI)."""
    stream_id = _stream_id(response_id)
    _, meta = await _load(stream_id, user_id)
    # Each turn as [role, content, message] (message: its tool calls or tool result, or null).
    turns = [ChatTurn(*turn) for turn in json.loads(meta.extra.get(f"{PREFIX}input", "[]"))]
    translator = translate(head_from(stream_id, {}), await _all_events(stream_id))
    calls = translator.tool_calls()
    if calls:
        return [*turns, ChatTurn("assistant", translator.text(), {"role": "assistant", "content": None, "tool_calls": calls})]
    return [*turns, ChatTurn("assistant", translator.text())]


async def _parse(body: dict[str, Any], user_id: int) -> dict[str, Any]:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _bad(unknown[0], "is not supported on /v1/responses", "unsupported_parameter")
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls", "must be a boolean", "invalid_type")
    model = body.get("model")
    if model is None:
        raise _bad("model", "is required", "missing_required_parameter")
    if not isinstance(model, str):
        raise _bad("model", "must be a string", "invalid_type")
    if not model:
        raise _bad("model", "must name a model (GET /v1/models), not be empty")
    services.model_spec(model)  # 404 model_not_found, as /v1/chat/completions
    if "input" not in body:
        raise _bad("input", "is required", "missing_required_parameter")
    raw_input = body["input"]
    instructions = body.get("instructions")
    if instructions is not None:
        instructions = _text(instructions, "instructions")
    stream = _flag(body, "stream", False)
    background = _flag(body, "background", False)
    if not _flag(body, "store", True):
        # Every response is kept (its log) for resuming and retrieving: we cannot promise not to store it.
        raise _bad("store", "false is not supported: every response is stored for ten minutes", "unsupported_parameter")
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None and (isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int)):
        raise _bad("max_output_tokens", f"must be an integer from 1 to {MAX_TOKENS_LIMIT}", "invalid_type")
    if max_output_tokens is not None and not 1 <= max_output_tokens <= MAX_TOKENS_LIMIT:
        raise _bad("max_output_tokens", f"must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    previous = body.get("previous_response_id")
    earlier = await _previous_turns(previous, user_id) if previous is not None else []
    known = {call["id"] for turn in earlier if turn.message for call in turn.message.get("tool_calls") or []}
    turns = earlier + _input(raw_input, known)
    context = ([ChatTurn("system", instructions)] if instructions else []) + turns
    if sum(len(t.content) for t in context) > MAX_PROMPT_CHARS:
        raise _bad("input", f"the input is longer than {MAX_PROMPT_CHARS} characters", "context_length_exceeded")
    return {
        "model": model,
        "turns": turns,
        "context": context,
        "instructions": instructions,
        "stream": stream,
        "background": background,
        "max_output_tokens": max_output_tokens,
        "previous_response_id": previous,
        "tools": tools,
        # What the backend gets beside the turns, in Chat Completions' shape.
        "params": {
            key: value
            for key, value in (
                ("tools", _chat_tools(tools) or None),
                ("tool_choice", tool_choice),
                ("parallel_tool_calls", parallel),
            )
            if value is not None
        },
    }


def _body(request: HttpRequest) -> dict[str, Any]:
    body = request_json(request)  # the body cap and parse of every /v1 request
    if not isinstance(body, dict):
        raise StreamRefusedError("invalid_json", "The body must be a JSON object.")
    return body


def _render(event: dict[str, Any]) -> str:
    """One Responses event as SSE. A Responses stream is one event per token, so its JSON is
    orjson's (bench-sse: json.dumps was a tenth of a worker's time), and the event and id
    fields, ours, need no checking; text orjson cannot encode (a lone surrogate from an
    upstream, which has no UTF-8 form) goes through core.sse, which escapes it."""
    try:
        data = orjson.dumps(event).decode()
    except TypeError:
        return encode_event(data=event, event=event["type"], id=str(event["sequence_number"]))
    return f"event: {event['type']}\ndata: {data}\nid: {event['sequence_number']}\n\n"


async def _batches(head: ResponseHead, *, starting_after: int) -> AsyncIterator[list[dict[str, Any]]]:
    # The numbering is the log's translation from its start (streaming.responses.events).
    translator = Translator(head)
    async for events in services.stream_follow(stream_id=head.stream_id, after=-1):
        yield [out for event in events for out in translator.feed(event) if out["sequence_number"] > starting_after]


async def _finished(events: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    yield events


def _stream(
    request: HttpRequest,
    head: ResponseHead,
    user_id: int,
    *,
    starting_after: int,
    finished: list[dict[str, Any]] | None = None,
) -> HttpResponseBase:
    """The SSE response of a response's events above ``starting_after``: followed live, or
    ``finished``, the events of a response that has ended, already translated."""
    batches = _batches(head, starting_after=starting_after) if finished is None else _finished(finished)
    return sse_response(
        body=follow(batches=batches, render=_render),
        headers={"X-Stream-Id": head.stream_id},
        watch=credential_watch(request, user_id=user_id),
    )


async def _object(head: ResponseHead) -> dict[str, Any]:
    return translate(head, await _all_events(head.stream_id)).response()


async def _cancel(stream_id: str, user_id: int) -> None:
    """Ask the producer, wherever it runs, to stop, and wait (a little) for the end."""
    if await services.stream_end(stream_id=stream_id) is not None:
        return
    await services.stream_cancel(stream_id=stream_id, user_id=user_id)
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    last = await get_log().last_seq(stream_id)
    async for events in services.stream_follow(stream_id=stream_id, after=-1 if last is None else last):
        if time.monotonic() > deadline or (events and events[-1].kind in services.FINAL_KINDS):
            break


@api_view("POST", errors=OPENAI_ERRORS)
async def responses(request: HttpRequest) -> HttpResponseBase:
    user = signed_in_user(request)
    asked = await _parse(_body(request), user.pk)
    started = await services.generation_start(
        user_id=user.pk,
        turns=asked["context"],
        conversation_id=None,
        max_tokens=asked["max_output_tokens"],
        credential=credential_for_request(request, user_id=user.pk),
        abandonable=not asked["background"],
        model=asked["model"],
        params=asked["params"] or None,
    )
    input_tokens = sum(services.count_tokens(t.content) for t in asked["context"])
    fields = {
        "model": asked["model"],
        "created_at": str(int(time.time())),
        "instructions": asked["instructions"] or "",
        "max_output_tokens": str(asked["max_output_tokens"] or ""),
        "background": "1" if asked["background"] else "0",
        "previous_response_id": asked["previous_response_id"] or "",
        "input_tokens": str(input_tokens),
        "input": json.dumps([[t.role, t.content, t.message] for t in asked["turns"]]),
        "tools": json.dumps(asked["tools"]),
    }
    await get_log().annotate(started.stream_id, {PREFIX + k: v for k, v in fields.items()})
    head = head_from(started.stream_id, fields)
    if asked["stream"]:
        return _stream(request, head, user.pk, starting_after=-1)
    if asked["background"]:
        response = JsonResponse(Translator(head).response() | {"status": "queued"})
    else:
        async for _ in services.stream_follow(stream_id=started.stream_id, after=0):
            pass
        response = JsonResponse(await _object(head))
    response["X-Stream-Id"] = started.stream_id
    return response


@api_view("GET", "DELETE", errors=OPENAI_ERRORS)
async def response(request: HttpRequest, response_id: str) -> HttpResponseBase:
    stream_id = response_id.removeprefix("resp_")
    user = signed_in_user(request)
    head, _ = await _load(stream_id, user.pk)
    if request.method == "DELETE":
        # Stopped first: deleted under a running producer, the log's meta data would be
        # written again by its heartbeat, and the generation would go on unseen.
        await _cancel(stream_id, user.pk)
        await get_log().delete(stream_id)
        return JsonResponse({"id": head.id, "object": "response.deleted", "deleted": True})
    if request.GET.get("stream") not in ("true", "1"):
        return JsonResponse(await _object(head))
    # A reconnecting EventSource sends its URL again (starting_after and all) with the
    # Last-Event-ID it has since read up to: that one is the newer position, so it wins,
    # or the reconnect would replay from starting_after forever (docs/protocol.md, "After the end").
    raw = last_event_id(request) or request.GET.get("starting_after")
    starting_after = parse_id(raw) if raw is not None else -1
    if starting_after is None:
        raise _bad("starting_after", "must be a sequence number, such as 12")
    if await services.stream_end(stream_id=stream_id) is None:
        return _stream(request, head, user.pk, starting_after=starting_after)
    # Ended: its log is read and translated once, for the 204 and for the rest alike.
    translator = Translator(head)
    rest = [
        out for event in await _all_events(stream_id) for out in translator.feed(event) if out["sequence_number"] > starting_after
    ]
    ended = after_the_end(end=translator.next - 1, after=starting_after)
    if ended is not None:
        return ended
    return _stream(request, head, user.pk, starting_after=starting_after, finished=rest)


@api_view("POST", errors=OPENAI_ERRORS)
async def response_cancel(request: HttpRequest, response_id: str) -> HttpResponseBase:
    stream_id = response_id.removeprefix("resp_")
    user = signed_in_user(request)
    head, _ = await _load(stream_id, user.pk)
    await _cancel(stream_id, user.pk)
    return JsonResponse(await _object(head))
