"""The OpenAPI 3.1 description of the JSON API (/api/ and /v1/), served at /api/schema/.

Written by hand, kept true by tests/project/test_openapi.py: every route under /api/
and /v1/ must be described here, and every path described here must exist.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

ERROR = {"$ref": "#/components/schemas/Error"}
SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def _object(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _op(
    summary: str, *, ok: str = "200", body: dict[str, Any] | None = None, sse: bool = False, public: bool = False
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        ok: {"description": "success", "content": SSE if sse else {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "bad input", "content": {"application/json": {"schema": ERROR}}},
        "404": {"description": "not found (or not yours)", "content": {"application/json": {"schema": ERROR}}},
    }
    if ok == "204":
        responses[ok] = {"description": "done"}
    if not public:
        responses["401"] = {"description": "not authenticated", "content": {"application/json": {"schema": ERROR}}}
        responses["403"] = {"description": "not allowed", "content": {"application/json": {"schema": ERROR}}}
        responses["429"] = {
            "description": "rate, concurrency or budget limit",
            "content": {"application/json": {"schema": ERROR}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    return operation


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
SANCTION = _object(["user"], user=STRING, room=STRING, minutes={"type": "number"}, reason=STRING)

PATHS: dict[str, dict[str, Any]] = {
    "/api/schema/": {"get": _op("This description", public=True)},
    "/api/rooms/": {
        "get": _op("Rooms visible to the caller"),
        "post": _op("Create a room", ok="201", body=_object(["slug"], slug=STRING, title=STRING, private={"type": "boolean"})),
    },
    "/api/rooms/{slug}/messages": {
        "get": _op("Messages after an id, ascending"),
        "post": _op("Send a message", ok="201", body=_object(["content"], content=STRING, nonce=STRING)),
    },
    "/api/rooms/{slug}/messages/{message_id}": {"delete": _op("Remove a message (staff or author)", ok="204")},
    "/api/rooms/{slug}/messages/{message_id}/report": {"post": _op("Report a message", ok="201", body=_object(reason=STRING))},
    "/api/rooms/{slug}/members": {
        "get": _op("Members of a private room"),
        "post": _op("Add a member", ok="201", body=_object(["user"], user=STRING)),
    },
    "/api/rooms/{slug}/members/{username}": {"delete": _op("Remove a member", ok="204")},
    "/api/rooms/{slug}/read": {"post": _op("Record how far the caller has read", body=_object(["last_id"], last_id=INTEGER))},
    "/api/rooms/{slug}/lock": {"post": _op("Lock or unlock (staff)", body=_object(["locked"], locked={"type": "boolean"}))},
    "/api/rooms/{slug}/notice": {"post": _op("Send a notice (staff)", ok="202", body=_object(["content"], content=STRING))},
    "/api/dms/": {"post": _op("Open the direct-message room with a user", ok="201", body=_object(["user"], user=STRING))},
    "/api/moderation/bans": {"post": _op("Ban a user (staff)", ok="201", body=SANCTION)},
    "/api/moderation/bans/{ban_id}": {"delete": _op("Lift a ban (staff)", ok="204")},
    "/api/moderation/mutes": {"post": _op("Mute a user (staff)", ok="201", body=SANCTION)},
    "/api/moderation/mutes/{mute_id}": {"delete": _op("Lift a mute (staff)", ok="204")},
    "/api/assistant/stream": {
        "post": _op(
            "Stream a reply as SSE",
            body=_object(["message"], message=STRING, conversation_id=STRING, max_tokens=INTEGER),
            sse=True,
        )
    },
    "/api/streams/{stream_id}/events": {"get": _op("Resume a stream (Last-Event-ID)", sse=True)},
    "/api/streams/{stream_id}/cancel": {"post": _op("Cancel a stream", ok="202")},
    "/api/conversations/": {"get": _op("The caller's conversations")},
    "/api/conversations/{conversation_id}": {"get": _op("One conversation with its messages")},
    "/api/tasks/": {
        "get": _op("The caller's newest tasks"),
        "post": _op(
            "Start a task", ok="202", body=_object(["kind"], kind=STRING, steps=INTEGER, interval_ms=INTEGER, room=STRING)
        ),
    },
    "/api/tasks/{task_id}": {"get": _op("A task's state"), "delete": _op("Cancel a task", ok="202")},
    "/api/tasks/{task_id}/events": {"get": _op("A task's progress as SSE (Last-Event-ID)", sse=True)},
    "/api/notifications/": {"get": _op("Unread notifications after an id")},
    "/api/notifications/read": {
        "post": _op("Mark notifications read", body=_object(ids={"type": "array", "items": INTEGER}, up_to=INTEGER))
    },
    "/api/notifications/stream": {"get": _op("The caller's notifications as SSE (Last-Event-ID)", sse=True)},
    "/v1/chat/completions": {
        "post": _op(
            "OpenAI-compatible chat completions (streamed or not)",
            body=_object(
                ["model", "messages"], model=STRING, messages={"type": "array"}, stream={"type": "boolean"}, max_tokens=INTEGER
            ),
        )
    },
    "/v1/models": {"get": _op("Models")},
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
            "schemas": {"Error": _object(["error"], error=_object(["code", "detail"], code=STRING, detail=STRING))},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema())
