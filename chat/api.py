"""The JSON API of docs/protocol.md, "REST" and "Moderation": thin views over chat.services and chat.selectors.

The services' refusals (core.errors.DomainError: ChatError, RoomExistsError, BannedError,
MembershipError, ReportExistsError) and Django's ValidationError are answered in one
place, core.http.api_view: the kind's status, the code and detail, Retry-After. The views
raise ApiError only for what the interface itself checks (the body, the caller, a 404).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse

from chat import protocol, selectors, signals
from chat.mentions import mentions_assistant
from chat.models import Message, Room
from chat.protocol import is_storable_text
from chat.services import messages, moderation
from chat.services import reactions as reaction_service
from chat.services.rooms import dm_open, member_add, member_remove, read_marker_move, room_create
from core.errors import DomainError
from core.http import MAX_ID, ApiError, api_view, json_body, signed_in_user


def _room_or_404(slug: str, request: HttpRequest) -> Room:
    """The room, as this caller may see it: a private room is a 404 for non-members
    (staff may read and moderate it over REST)."""
    room = selectors.room_get_for(slug=slug, user=signed_in_user(request))
    if room is None:
        raise ApiError(404, "no_such_room", f"no room {slug!r}")
    return room


def _message_or_404(room: Room, message_id: int) -> Message:
    message = selectors.message_get_visible(room=room, message_id=message_id)
    if message is None:
        raise ApiError(404, "no_such_message", f"no message {message_id} in {room.slug!r}")
    return message


def _staff_user(request: HttpRequest) -> User:
    """The signed-in caller if staff; 403 otherwise, before anything else is looked at."""
    user = signed_in_user(request)
    if not user.is_staff:
        raise ApiError(403, "forbidden", "staff only")
    return user


def _optional_string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"{name} must be a string")
    return value


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
    user = signed_in_user(request)
    if request.method == "GET":
        return JsonResponse({"rooms": selectors.room_objects(rooms=selectors.room_list_for(user=user), user=user)})
    body = json_body(request)
    slug, title, private = body.get("slug"), body.get("title", body.get("slug")), body.get("private", False)
    if not isinstance(slug, str) or not isinstance(title, str):
        raise ApiError(400, "invalid", "slug and title must be strings")
    if not isinstance(private, bool):
        raise ApiError(400, "invalid", "private must be true or false")
    room = room_create(slug=slug, title=title, created_by=user, private=private)  # 409 exists, 403 banned, 400
    return JsonResponse(selectors.room_object(room=room, online=0), status=201)


def _message_id_or_400(body: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ApiError(400, "invalid", f"{name} must be a message id")
    return value


def _message_response(room: Room, message_id: int) -> JsonResponse:
    """The message as it is now, as a ``message`` frame (also for a removed one: its author's view)."""
    message = selectors.message_get(room_id=room.pk, message_id=message_id)
    assert message is not None
    return JsonResponse(selectors.message_frames(messages=[message], room_slug=room.slug)[0])


@api_view("GET", "POST")
def room_messages(request: HttpRequest, slug: str) -> HttpResponse:
    room = _room_or_404(slug, request)
    if request.method == "GET":
        after = _int_param(request, "after", 0, minimum=0, maximum=MAX_ID)
        limit = _int_param(request, "limit", 50, minimum=1, maximum=protocol.PAGE_MAX)
        if "before" in request.GET:
            before = _int_param(request, "before", 0, minimum=1, maximum=MAX_ID)
            page = selectors.message_list_before(room=room, before=before, after=after, limit=limit)
        else:
            page = selectors.message_list_after(room=room, after=after, limit=limit)
        return JsonResponse({"messages": page})
    body = json_body(request)
    nonce = body.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > 64 or not is_storable_text(nonce)):
        raise ApiError(400, "bad_frame", "nonce must be a string of at most 64 characters")
    if "content" not in body:
        raise ApiError(400, "bad_frame", "content is required")
    user = signed_in_user(request)
    # A banned user's sockets are closed and refused; REST must not be the way around that.
    if selectors.user_is_banned(user_id=user.pk, room_id=room.pk):
        raise ApiError(403, "banned", "you are banned from this room")
    reply_to = _message_id_or_400(body, "reply_to", required=False)
    # ChatError: 429 rate_limited with Retry-After, 403 muted, 423 room_locked, 400 for bad
    # content, 404 not_found for a reply to no message of the room.
    message = messages.message_create(room=room, user=user, content=body["content"], nonce=nonce, reply_to=reply_to)
    frame = selectors.message_frames(messages=[message], room_slug=room.slug)[0]
    answer: dict[str, Any] = dict(frame)
    if mentions_assistant(frame["content"]):
        # As on the socket (docs/protocol.md, "The assistant in a room"), on the server's event
        # loop, where the reply goes on after this response; the message is stored whatever
        # happens, so a refusal comes back beside it, not instead of it.
        try:
            async_to_sync(signals.assistant_asked.asend)(sender=room_messages, frame=frame, room_id=room.pk, user_id=user.pk)
        except DomainError as error:
            answer["assistant_error"] = {"code": error.code, "detail": error.detail}
    return JsonResponse(answer, status=201)


@api_view("PATCH", "DELETE")
def room_message(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """PATCH {"content"}: edit (the author within the edit window, staff any time) -> 200
    the message. DELETE: remove (the author, or staff) -> 204."""
    room, user = _room_or_404(slug, request), signed_in_user(request)
    _message_or_404(room, message_id)  # over REST an unknown or removed message is no_such_message, as for reports
    if request.method == "DELETE":
        messages.message_delete(room=room, user=user, message_id=message_id)  # 404, 403, 423
        return HttpResponse(status=204)
    body = json_body(request)
    if "content" not in body:
        raise ApiError(400, "bad_frame", "content is required")
    # ChatError: 404 not_found, 403 forbidden / edit_window_passed / muted / banned, 423, 429, 400.
    messages.message_edit(room=room, user=user, message_id=message_id, content=body["content"])
    return _message_response(room, message_id)


@api_view("POST")
def message_restore(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """Staff: bring a removed message back; the room gets ``message_restored``. 200 the message."""
    staff = _staff_user(request)
    room = _room_or_404(slug, request)
    message = selectors.message_get(room_id=room.pk, message_id=message_id)
    if message is None:
        raise ApiError(404, "no_such_message", f"no message {message_id} in {room.slug!r}")
    moderation.message_restore(message=message, restored_by=staff)  # restoring a visible one changes nothing
    return _message_response(room, message_id)


@api_view("PUT", "DELETE")
def message_reaction(request: HttpRequest, slug: str, message_id: int, emoji: str) -> HttpResponse:
    """PUT: react with ``emoji``; DELETE: take it back. 200 {"reactions"}: the message's whole set."""
    room = _room_or_404(slug, request)
    _message_or_404(room, message_id)
    reactions = reaction_service.reaction_set(
        room=room, user=signed_in_user(request), message_id=message_id, emoji=emoji, on=request.method == "PUT"
    )  # 400 bad_emoji, 404, 403 muted / banned, 423, 429
    return JsonResponse({"reactions": reactions})


@api_view("POST")
def message_report(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """Any signed-in user may report a message, once."""
    message = _message_or_404(_room_or_404(slug, request), message_id)
    reason = _optional_string(json_body(request), "reason")
    report = moderation.report_create(message=message, reporter=signed_in_user(request), reason=reason)  # 409 exists
    return JsonResponse(selectors.report_object(report=report), status=201)


# ---- staff only (docs/protocol.md, "Moderation") ------------------------------------------------------------
@api_view("POST")
def room_lock(request: HttpRequest, slug: str) -> HttpResponse:
    staff = _staff_user(request)
    room = _room_or_404(slug, request)
    locked = json_body(request).get("locked")
    if not isinstance(locked, bool):
        raise ApiError(400, "invalid", "locked must be true or false")
    room = moderation.room_lock(room=room, locked=locked, locked_by=staff)
    return JsonResponse(selectors.room_object(room=room))


@api_view("POST")
def room_notice(request: HttpRequest, slug: str) -> HttpResponse:
    staff = _staff_user(request)
    room = _room_or_404(slug, request)
    content = json_body(request).get("content")
    if not isinstance(content, str):
        raise ApiError(400, "invalid", "content must be a string")
    messages.room_notice(room=room, content=content, sent_by=staff)  # ValidationError -> 400
    return JsonResponse({"room": room.slug, "content": content.strip()}, status=202)


def _sanction_body(request: HttpRequest) -> dict[str, Any]:
    """The keyword arguments of ban_create / mute_create from ``{"user","room","minutes","reason"}``:
    400 for a malformed body, then 404 for an unknown user or room."""
    body = json_body(request)
    username, slug, minutes = body.get("user"), body.get("room"), body.get("minutes")
    if not isinstance(username, str) or not username:
        raise ApiError(400, "invalid", "user must be a username")
    if slug is not None and not isinstance(slug, str):
        raise ApiError(400, "invalid", "room must be a room's slug, or null for site-wide")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int | float)):
        raise ApiError(400, "invalid", "minutes must be a number, or null for until lifted")
    reason = _optional_string(body, "reason")
    user = selectors.user_get(username=username)
    if user is None:
        raise ApiError(404, "no_such_user", f"no user {username!r}")
    room = None if slug is None else _room_or_404(slug, request)
    return {"user": user, "room": room, "minutes": minutes, "reason": reason}


@api_view("POST")
def bans(request: HttpRequest) -> HttpResponse:
    staff = _staff_user(request)
    ban = moderation.ban_create(**_sanction_body(request), created_by=staff)  # ValidationError -> 400
    return JsonResponse(selectors.sanction_object(sanction=ban), status=201)


@api_view("DELETE")
def ban(request: HttpRequest, ban_id: int) -> HttpResponse:
    staff = _staff_user(request)
    found = selectors.ban_get(ban_id=ban_id)
    if found is None:
        raise ApiError(404, "no_such_ban", f"no ban {ban_id}")
    moderation.ban_lift(ban=found, lifted_by=staff)
    return HttpResponse(status=204)


@api_view("POST")
def mutes(request: HttpRequest) -> HttpResponse:
    staff = _staff_user(request)
    mute = moderation.mute_create(**_sanction_body(request), created_by=staff)  # ValidationError -> 400
    return JsonResponse(selectors.sanction_object(sanction=mute), status=201)


@api_view("DELETE")
def mute(request: HttpRequest, mute_id: int) -> HttpResponse:
    staff = _staff_user(request)
    found = selectors.mute_get(mute_id=mute_id)
    if found is None:
        raise ApiError(404, "no_such_mute", f"no mute {mute_id}")
    moderation.mute_lift(mute=found, lifted_by=staff)
    return HttpResponse(status=204)


# ---- private rooms and direct messages (docs/protocol.md, "Other endpoints") ----------------------------------------
def _user_or_400(body: dict[str, Any]) -> User:
    name = body.get("user")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "invalid", "user must be a username")
    user = selectors.user_get(username=name)
    if user is None:
        raise ApiError(400, "no_such_user", f"no user {name!r}")
    return user


@api_view("GET", "POST")
def room_members(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the members (members and staff only). POST {"user"}: add one (a member, or staff)."""
    caller = signed_in_user(request)
    room = _room_or_404(slug, request)
    if not room.private:
        raise ApiError(400, "invalid", "only private rooms have members")
    if request.method == "GET":
        if not (caller.is_staff or selectors.room_member(room_id=room.pk, user_id=caller.pk)):
            raise ApiError(404, "no_such_room", f"no room {slug!r}")
        return JsonResponse({"members": selectors.room_members(room=room)})
    user = _user_or_400(json_body(request))
    member = member_add(room=room, user=user, added_by=caller)
    return JsonResponse({"username": user.get_username(), "role": member.role}, status=201)


@api_view("DELETE")
def room_member(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    """Remove a member: themselves, or anyone by the owner or staff (403 for other members)."""
    caller = signed_in_user(request)
    room = _room_or_404(slug, request)
    user = selectors.user_get(username=username)
    if user is None:
        raise ApiError(404, "not_found", f"{username} is not a member")
    member_remove(room=room, user=user, removed_by=caller)
    return HttpResponse(status=204)


@api_view("POST")
def room_read(request: HttpRequest, slug: str) -> HttpResponse:
    """POST {"id"}: the caller has read up to this message (forward only) -> 204; every
    socket of theirs in the room gets a ``read`` frame. ``last_id`` is the older name of ``id``."""
    room = _room_or_404(slug, request)
    body = json_body(request)
    message_id = _message_id_or_400(body, "id" if "id" in body or "last_id" not in body else "last_id")
    assert message_id is not None
    read_marker_move(room=room, user=signed_in_user(request), message_id=message_id)  # 404 not_found
    return HttpResponse(status=204)


@api_view("POST")
def direct_messages(request: HttpRequest) -> HttpResponse:
    """POST {"user"}: the direct-message room with that user; 201 the first time, 200 after."""
    caller = signed_in_user(request)
    other = _user_or_400(json_body(request))
    room, created = dm_open(user=caller, other=other)  # ValidationError -> 400, BannedError -> 403
    return JsonResponse(selectors.room_object(room=room), status=201 if created else 200)
