"""The OpenAPI 3.1 description of the JSON API (/api/ and /v1/), served at /api/schema/.

Written by hand, kept true by tests/ops/test_openapi.py: every route under /api/
and /v1/ must be described here, and every path described here must exist.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

ERROR = {"$ref": "#/components/schemas/Error"}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
# Under OpenAPI 3.1 the schema of text/event-stream describes one event, as an
# EventSource parser reads it (schemathesis checks each event of a response against it).
SSE = {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}}
# What each error status means, for the statuses an operation declares beyond the common ones.
STATUS_MEANING = {
    "409": "exists already",
    "413": "the request body is too large",
    "423": "the room is locked",
    "502": "the model upstream failed",
}


def _object(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _op(
    summary: str,
    *,
    ok: str = "200",
    body: dict[str, Any] | None = None,
    sse: bool = False,
    public: bool = False,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = (),
    openai: bool = False,
    json_or_sse: bool = False,
) -> dict[str, Any]:
    """One operation: ``errors`` names the statuses it answers besides 400, 401, 403, 404
    and 429; ``openai`` gives its errors OpenAI's shape instead of ours; ``json_or_sse``
    answers JSON or, when the request asks for a stream, SSE."""
    error = {"application/json": {"schema": OPENAI_ERROR if openai else ERROR}}
    success: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if sse:
        success = SSE
    elif json_or_sse:
        success = {**success, **SSE}
    responses: dict[str, Any] = {
        ok: {"description": "success", "content": success},
        "400": {"description": "bad input", "content": error},
        "404": {"description": "not found (or not yours)", "content": error},
    }
    if ok == "204":
        responses[ok] = {"description": "done"}
    if not public:
        responses["401"] = {"description": "not authenticated", "content": error}
        responses["403"] = {"description": "not allowed", "content": error}
        responses["429"] = {"description": "rate, concurrency or budget limit", "content": error}
    for status in errors:
        responses[status] = {"description": STATUS_MEANING[status], "content": error}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    return operation


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
# Database ids: what Django's <int:…> converter accepts, up to a signed 64-bit integer.
ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
TOOL_CALL = _object(
    ["id", "type", "function"],
    id=STRING,
    type={"const": "function"},
    function=_object(["name", "arguments"], name=STRING, arguments=STRING),
)
# Content parts other than text (images) are sent on to an openai upstream as they came.
CHAT_MESSAGE = _object(
    ["role"],
    role={"enum": ["system", "developer", "user", "assistant", "tool"]},
    content={"anyOf": [STRING, {"type": "array", "items": _object(["type"], type=STRING, text=STRING)}, {"type": "null"}]},
    tool_calls={"type": "array", "items": TOOL_CALL, "description": "assistant messages: content may then be null"},
    tool_call_id={**STRING, "description": "tool messages: the id of the call they answer"},
)
NUMBER = {"type": "number"}
# What /v1/chat/completions passes to an openai upstream as sent (docs/protocol.md, "Chat Completions parameters").
CHAT_PARAMETERS: dict[str, Any] = {
    "max_completion_tokens": INTEGER,
    "stream_options": _object(include_usage={"type": "boolean"}),
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": INTEGER,
    "stop": {"anyOf": [STRING, {"type": "array", "items": STRING}]},
    "response_format": {"type": "object"},
    "tools": {"type": "array", "items": _object(["type"], type=STRING, function=_object(["name"], name=STRING))},
    "tool_choice": {"anyOf": [STRING, {"type": "object"}]},
    "parallel_tool_calls": {"type": "boolean"},
    "user": STRING,
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "logit_bias": {"type": "object"},
    "reasoning_effort": STRING,
    "n": {"const": 1},
}
SANCTION = _object(["user"], user=STRING, room=STRING, minutes={"type": "number"}, reason=STRING)


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


SLUG = _path("slug", {"type": "string", "pattern": "^[a-z0-9-]{1,50}$"})
MESSAGE_ID = _path("message_id", ID)
STREAM_ID = _path("stream_id", {"type": "string", "pattern": "^[0-9a-f]{32}$"})
TASK_ID = _path("task_id", ID)
MODEL_ID = _path("model_id", STRING)
RESPONSE_ID = _path("response_id", {"type": "string", "pattern": "^resp_[0-9a-f]{32}$"})
# Resuming an event stream: the header EventSource sends, or the same as a query parameter.
RESUME = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": STRING},
    _query("last_event_id", STRING),
]

PATHS: dict[str, dict[str, Any]] = {
    "/api/schema/": {"get": _op("This description", public=True)},
    "/api/rooms/": {
        "get": _op("Rooms visible to the caller"),
        "post": _op(
            "Create a room",
            ok="201",
            body=_object(["slug"], slug=STRING, title=STRING, private={"type": "boolean"}),
            errors=("409",),
        ),
    },
    "/api/rooms/{slug}/messages": {
        "get": _op(
            "Messages after an id (or the page before one), ascending",
            params=[
                SLUG,
                _query("after", ID),
                _query("before", ID),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
            ],
        ),
        "post": _op(
            "Send a message",
            ok="201",
            body=_object(["content"], content=STRING, nonce=STRING, reply_to=ID),
            params=[SLUG],
            errors=("423",),
        ),
    },
    "/api/rooms/{slug}/messages/{message_id}": {
        "patch": _op(
            "Edit a message (author in the edit window, or staff)",
            body=_object(["content"], content=STRING),
            params=[SLUG, MESSAGE_ID],
            errors=("423",),
        ),
        "delete": _op("Remove a message (staff or author)", ok="204", params=[SLUG, MESSAGE_ID], errors=("423",)),
    },
    "/api/rooms/{slug}/messages/{message_id}/restore": {
        "post": _op("Restore a removed message (staff)", params=[SLUG, MESSAGE_ID])
    },
    "/api/rooms/{slug}/messages/{message_id}/reactions/{emoji}": {
        "put": _op("React to a message", params=[SLUG, MESSAGE_ID, _path("emoji", STRING)], errors=("423",)),
        "delete": _op("Take a reaction back", params=[SLUG, MESSAGE_ID, _path("emoji", STRING)], errors=("423",)),
    },
    "/api/rooms/{slug}/messages/{message_id}/report": {
        "post": _op("Report a message", ok="201", body=_object(reason=STRING), params=[SLUG, MESSAGE_ID], errors=("409",))
    },
    "/api/rooms/{slug}": {
        "patch": _op(
            "Turn the room's assistant on or off, with a model of /v1/models (the owner or staff)",
            body=_object(assistant={"type": "boolean"}, assistant_model=STRING),
            params=[SLUG],
        )
    },
    "/api/rooms/{slug}/members": {
        "get": _op("Members of a private room", params=[SLUG]),
        "post": _op("Add a member", ok="201", body=_object(["user"], user=STRING), params=[SLUG]),
    },
    "/api/rooms/{slug}/members/{username}": {
        "delete": _op("Remove a member", ok="204", params=[SLUG, _path("username", STRING)])
    },
    "/api/rooms/{slug}/read": {
        "post": _op("Move the caller's read marker forward", ok="204", body=_object(["id"], id=ID), params=[SLUG])
    },
    "/api/rooms/{slug}/lock": {
        "post": _op("Lock or unlock (staff)", body=_object(["locked"], locked={"type": "boolean"}), params=[SLUG])
    },
    "/api/rooms/{slug}/notice": {
        "post": _op("Send a notice (staff)", ok="202", body=_object(["content"], content=STRING), params=[SLUG])
    },
    "/api/dms/": {"post": _op("Open the direct-message room with a user", ok="201", body=_object(["user"], user=STRING))},
    "/api/moderation/bans": {"post": _op("Ban a user (staff)", ok="201", body=SANCTION)},
    "/api/moderation/bans/{ban_id}": {"delete": _op("Lift a ban (staff)", ok="204", params=[_path("ban_id", ID)])},
    "/api/moderation/mutes": {"post": _op("Mute a user (staff)", ok="201", body=SANCTION)},
    "/api/moderation/mutes/{mute_id}": {"delete": _op("Lift a mute (staff)", ok="204", params=[_path("mute_id", ID)])},
    "/api/assistant/stream": {
        "post": _op(
            "Stream a reply as SSE",
            body=_object(["message"], message=STRING, conversation_id=STRING, max_tokens=INTEGER, model=STRING),
            sse=True,
        )
    },
    "/api/streams/{stream_id}/events": {
        "get": _op(
            "Resume a stream (Last-Event-ID); format=openai: as Chat Completions chunks",
            sse=True,
            params=[STREAM_ID, *RESUME, _query("format", {"enum": ["openai"]})],
        )
    },
    "/api/streams/{stream_id}/cancel": {"post": _op("Cancel a stream", ok="202", params=[STREAM_ID])},
    "/api/conversations/": {"get": _op("The caller's conversations")},
    "/api/conversations/{conversation_id}": {
        "get": _op("One conversation with its messages", params=[_path("conversation_id", {"type": "string", "format": "uuid"})])
    },
    "/api/tasks/": {
        "get": _op("The caller's newest tasks"),
        "post": _op(
            "Start a task", ok="202", body=_object(["kind"], kind=STRING, steps=INTEGER, interval_ms=INTEGER, room=STRING)
        ),
    },
    "/api/tasks/{task_id}": {
        "get": _op("A task's state", params=[TASK_ID]),
        "delete": _op("Cancel a task", ok="202", params=[TASK_ID]),
    },
    "/api/tasks/{task_id}/events": {"get": _op("A task's progress as SSE (Last-Event-ID)", sse=True, params=[TASK_ID, *RESUME])},
    "/api/notifications/": {"get": _op("Unread notifications after an id", params=[_query("after", ID)])},
    "/api/notifications/read": {
        "post": _op("Mark notifications read", body=_object(ids={"type": "array", "items": ID}, up_to=ID))
    },
    "/api/notifications/stream": {"get": _op("The caller's notifications as SSE (Last-Event-ID)", sse=True, params=RESUME)},
    "/v1/chat/completions": {
        "post": _op(
            "OpenAI-compatible chat completions (streamed or not)",
            body=_object(
                ["model", "messages"],
                model=STRING,
                messages={"type": "array", "items": CHAT_MESSAGE},
                stream={"type": "boolean"},
                max_tokens=INTEGER,
                **CHAT_PARAMETERS,
            ),
            openai=True,
            json_or_sse=True,
            errors=("413", "502"),
        )
    },
    "/v1/models": {"get": _op("Models", openai=True)},
    "/v1/models/{model_id}": {"get": _op("One model (404 model_not_found for another)", params=[MODEL_ID], openai=True)},
    "/v1/responses": {
        "post": _op(
            "OpenAI Responses API: text, function tools, reasoning (docs/protocol.md, Responses API)",
            body=_object(
                ["model", "input"],
                model=STRING,
                input={"type": ["string", "array"]},
                instructions=STRING,
                stream={"type": "boolean"},
                background={"type": "boolean"},
                store={"type": "boolean"},
                max_output_tokens=INTEGER,
                previous_response_id=STRING,
                tools={"type": "array", "items": {"type": "object"}},
                tool_choice={"type": ["string", "object"]},
                parallel_tool_calls={"type": "boolean"},
            ),
            openai=True,
            json_or_sse=True,
            errors=("413",),
        )
    },
    "/v1/responses/{response_id}": {
        "get": _op(
            "A response, or its events after starting_after (stream=true)",
            params=[RESPONSE_ID, _query("stream", {"type": "boolean"}), _query("starting_after", INTEGER), *RESUME],
            openai=True,
            json_or_sse=True,
        ),
        "delete": _op("Delete a response", params=[RESPONSE_ID], openai=True),
    },
    "/v1/responses/{response_id}/cancel": {"post": _op("Cancel a response", params=[RESPONSE_ID], openai=True)},
}


def schema() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Realtime rooms API",
            "version": "1",
            "description": "See docs/protocol.md for the WebSocket protocol.",
        },
        "paths": PATHS,
        "components": {
            "schemas": {
                "Error": _object(["error"], error=_object(["code", "detail"], code=STRING, detail=STRING)),
                "OpenAIError": _object(
                    ["error"],
                    error=_object(
                        ["message", "type", "code"],
                        message=STRING,
                        type=STRING,
                        param={"type": ["string", "null"]},
                        code={"type": ["string", "null"]},
                    ),
                ),
                # One event as EventSource reads it: comments are not events; data lines joined.
                "ServerSentEvent": _object(["data"], event=STRING, data=STRING, id=STRING, retry=INTEGER),
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema())
