"""Pages for people (the full set is CONTRACT §9)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from chat import selectors
from chat.models import Room


def index(request: HttpRequest) -> HttpResponse:
    rooms = selectors.room_objects(rooms=selectors.room_list()) if request.user.is_authenticated else []
    return render(request, "chat/index.html", {"rooms": rooms})


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    return render(request, "chat/room.html", {"room": get_object_or_404(Room, slug=slug)})
