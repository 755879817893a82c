"""PATCH /api/rooms/<slug>: a room's assistant (docs/protocol.md, "The assistant in a room")."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from chat import selectors
from core.http import ApiError, api_view, json_body, signed_in_user
from room_assistant.services import room_assistant_configure


@api_view("PATCH")
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """``{"assistant": bool, "assistant_model": name}`` (either or both) -> 200 the room
    object; 403 for members who are not its owner or staff; 404 for a private room the
    caller is not in; 400 for a model not in GET /v1/models."""
    user = signed_in_user(request)
    found = selectors.room_get_for(slug=slug, user=user)
    if found is None:
        raise ApiError(404, "no_such_room", f"no room {slug!r}")
    body = json_body(request)
    updated = room_assistant_configure(room=found, user=user, enabled=body.get("assistant"), model=body.get("assistant_model"))
    return JsonResponse(selectors.room_object(room=updated))
