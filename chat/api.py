"""The JSON API of CONTRACT §3: thin views over chat.services and chat.selectors."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from chat import selectors, services
from chat.models import Message, Room
from chat.protocol import ChatError
from project.api import ApiError, api_view, json_body, signed_in_user

# A ChatError code -> the HTTP status REST answers with.
_STATUS = {"rate_limited": 429, "muted": 403, "room_locked": 423}


def _room_or_404(slug: str) -> Room:
    room = selectors.room_get(slug=slug)
    if room is None:
        raise ApiError(404, "no_such_room", f"no room {slug!r}")
    return room


def _int_param(request: HttpRequest, name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be an integer") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, "invalid", f"{name} must be between {minimum} and {maximum}")
    return value


@api_view("GET", "POST")
def rooms(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse({"rooms": selectors.room_objects(rooms=selectors.room_list())})
    body = json_body(request)
    slug, title = body.get("slug"), body.get("title", body.get("slug"))
    if not isinstance(slug, str) or not isinstance(title, str):
        raise ApiError(400, "invalid", "slug and title must be strings")
    try:
        room = services.room_create(slug=slug, title=title, created_by=signed_in_user(request))
    except services.RoomExistsError:
        raise ApiError(409, "exists", f"room {slug!r} exists") from None
    except ValidationError as error:
        raise ApiError(400, "invalid", "; ".join(error.messages)) from None
    return JsonResponse(selectors.room_object(room=room, online=0), status=201)


@api_view("GET", "POST")
def room_messages(request: HttpRequest, slug: str) -> HttpResponse:
    room = _room_or_404(slug)
    if request.method == "GET":
        after = _int_param(request, "after", 0, minimum=0, maximum=2**63 - 1)
        limit = _int_param(request, "limit", 50, minimum=1, maximum=200)
        return JsonResponse({"messages": selectors.message_list_after(room=room, after=after, limit=limit)})
    body = json_body(request)
    nonce = body.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > 64):
        raise ApiError(400, "bad_frame", "nonce must be a string of at most 64 characters")
    if "content" not in body:
        raise ApiError(400, "bad_frame", "content is required")
    try:
        message = services.message_create(room=room, user=signed_in_user(request), content=body["content"], nonce=nonce)
    except ChatError as error:
        headers = {"Retry-After": str(max(1, round(error.retry_after + 0.499)))} if error.retry_after else None
        raise ApiError(_STATUS.get(error.code, 400), error.code, error.detail, headers=headers) from None
    frame = selectors.message_frames(messages=[message], room_slug=room.slug)[0]
    return JsonResponse(frame, status=201)


@api_view("DELETE")
def room_message(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    room = _room_or_404(slug)
    message = Message.objects.filter(pk=message_id, room=room, removed_at__isnull=True).first()
    if message is None:
        raise ApiError(404, "no_such_message", f"no message {message_id} in {slug!r}")
    if not (request.user.is_staff or message.user_id == request.user.pk):
        raise ApiError(403, "forbidden", "only staff or the author may remove a message")
    services.message_remove(message=message, removed_by=signed_in_user(request))
    return HttpResponse(status=204)
