"""Pages for people (docs/protocol.md, "Other endpoints"): server-rendered shells; the live parts are the plain
JavaScript modules in web/static/web/, talking to the same API as any client.

web is the top layer beside ops: it reads the apps' selectors and models, and no app imports it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.staticfiles import views as staticfiles_views
from django.core.exceptions import SuspiciousFileOperation
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render

from chat import selectors
from chat.models import Ban
from tasks.models import Task


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User), "login_required lets only signed-in users through"
    return request.user


def index(request: HttpRequest) -> HttpResponse:
    """Public rooms, the private ones the user is in, and their direct messages (as GET /api/rooms/)."""
    if not request.user.is_authenticated:
        return render(request, "web/index.html")
    user = _user(request)
    rooms = selectors.room_objects(rooms=selectors.room_list_for(user=user), user=user)
    rooms.sort(key=lambda room: str(room["title"]).casefold())  # as rooms.js sorts them
    for room_object in rooms:
        if room_object["direct"]:
            room_object["name"] = _dm_name(str(room_object["title"]), user.get_username())
    return render(
        request,
        "web/index.html",
        {"rooms": [r for r in rooms if not r["direct"]], "dms": [r for r in rooms if r["direct"]]},
    )


def _dm_name(title: str, me: str) -> str:
    """A direct conversation is named after the other person ("alice and bob" is "bob" to alice),
    on its page as in the rooms list (rooms.js' dmName; usernames have no spaces)."""
    names = title.split(" and ")
    if len(names) == 2 and me in names:
        return next((name for name in names if name != me), me)
    return title


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    # As on the socket: a private room does not exist for those outside it, staff included.
    found = selectors.room_get_for(slug=slug, user=_user(request), staff_sees_private=False)
    if found is None:
        raise Http404("no such room")
    user = _user(request)
    page = {
        # room.js (docs/protocol.md, "Room changes"): the reactions it may offer, the read
        # marker its "new messages" divider starts at, and what this user may change.
        "reactions": list(settings.CHAT_REACTIONS),
        "read_id": selectors.read_marker_get(user_id=user.pk, room_id=found.pk),
        "edit_window": settings.CHAT_EDIT_WINDOW_SECONDS,
        "staff": user.is_staff,  # staff may remove (and restore) anyone's message
        "assistant_model": found.assistant_model or None,
        "owner": found.created_by_id == user.pk,  # may stop the assistant's replies (docs/protocol.md, "The assistant in a room")
        "ban": _ban_for(user=user, room_id=found.pk),  # what the page says when the socket closes with 4003
    }
    banned_site_wide = selectors.user_is_banned_site_wide(user_id=user.pk)
    name = _dm_name(found.title, user.get_username()) if found.direct_key else found.title
    context = {"room": found, "name": name, "page": page, "banned_site_wide": banned_site_wide}
    return render(request, "web/room.html", context)


def _ban_for(*, user: User, room_id: int) -> dict[str, object] | None:
    """The ban in force on this user in this room (site-wide or the room's) that ends last: its
    reason and end, which the user may know (they are told they are banned, not by whom)."""
    ban = Ban.objects.applying_to(user_id=user.pk, room_id=room_id).order_by(F("ends_at").desc(nulls_first=True), "-pk").first()
    if ban is None:
        return None
    return {
        "reason": ban.reason,
        "ends_at": ban.ends_at.isoformat() if ban.ends_at else None,
        "site_wide": ban.room_id is None,
    }


@login_required
def assistant(request: HttpRequest) -> HttpResponse:
    return render(request, "web/assistant.html")


@login_required
def task(request: HttpRequest, task_id: int) -> HttpResponse:
    found = get_object_or_404(Task, pk=task_id, owner_id=request.user.pk)  # someone else's task is no task
    room = None
    slug = found.params.get("room") if found.kind == "summarize_room" and isinstance(found.params, dict) else None
    if isinstance(slug, str):
        # Only a room its owner may read: the page must not name a private room to an outsider.
        room = selectors.room_get_for(slug=slug, user=_user(request))
    title = f"Summary of {room.title}" if room else found.kind.replace("_", " ").capitalize()
    return render(request, "web/task.html", {"task": found, "room": room, "title": title})


def static_file(request: HttpRequest, path: str) -> HttpResponseBase:
    """/static/ when nothing in front of Django serves it (`make serve`, the test cluster).

    docker-compose's nginx serves the collected files itself and never gets here. The
    finders look only inside the static directories (no path escapes them)."""
    try:
        response = staticfiles_views.serve(request, path, insecure=True)
    except SuspiciousFileOperation:  # "../" out of a static directory
        raise Http404(path) from None
    response["Cache-Control"] = "no-cache"  # revalidate (Last-Modified), so a deploy is seen at once
    return response
