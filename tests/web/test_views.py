"""web.views in process: who may see which page, and the static files served without a proxy."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings

from tasks.models import Task
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(make_user(username))
    return client


def test_pages_need_a_login_and_render_for_people():
    make_room("lobby", "Lobby <script>")
    anonymous = Client()
    for path in ("/rooms/lobby/", "/assistant/", "/tasks/1/"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client = signed_in("alice")
    index = client.get("/")
    assert b"Lobby &lt;script&gt;" in index.content and b"Lobby <script>" not in index.content
    room = client.get("/rooms/lobby/")
    assert room.status_code == 200 and b'data-slug="lobby"' in room.content and b'<label for="message"' in room.content
    assert client.get("/rooms/nope/").status_code == 404
    assistant = client.get("/assistant/")
    assert b">Stop</button>" in assistant.content and b">Send</button>" in assistant.content


def test_a_task_page_is_its_owners_only():
    room = make_room("plans", "Plans")
    owner, other = signed_in("owner"), signed_in("other")
    task = Task.objects.create(owner_id=owner.session["_auth_user_id"], kind="summarize_room", params={"room": room.slug})
    page = owner.get(f"/tasks/{task.pk}/")
    assert page.status_code == 200
    assert b"Summary of Plans" in page.content and b'role="progressbar"' in page.content and b'aria-valuenow="0"' in page.content
    assert other.get(f"/tasks/{task.pk}/").status_code == 404


@override_settings(DEBUG=False)
def test_static_files_are_served_without_a_proxy_in_front():
    response = Client().get("/static/web/room.js")
    assert response.status_code == 200 and response["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert b"last_id" in b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert Client().get("/static/web/../../manage.py").status_code == 404
    assert Client().get("/static/web/nothing-here.js").status_code == 404


@override_settings(DEBUG=False)
def test_every_file_a_page_loads_is_served():
    """Each page's stylesheet and modules, and the modules those import, exist under /static/web/."""
    room = make_room("plans", "Plans")
    client = signed_in("owner")
    task = Task.objects.create(owner_id=client.session["_auth_user_id"], kind="summarize_room", params={"room": room.slug})
    pages = [client.get(path) for path in ("/", f"/rooms/{room.slug}/", "/assistant/", f"/tasks/{task.pk}/")]
    pages += [Client().get(path) for path in ("/", "/accounts/login/", "/accounts/signup/")]
    loaded = {url for page in pages for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.content.decode())}
    assert {"/static/web/site.css", "/static/web/rooms.js", "/static/web/room.js", "/static/web/task.js"} <= loaded
    assert {"/static/web/assistant.js", "/static/web/notifications.js"} <= loaded
    assert {"/static/web/manifest.webmanifest", "/static/web/icons/icon-180.png"} <= loaded
    for url in sorted(loaded):
        status, body = fetched(url)
        assert status == 200, url
        for module in re.findall(r'^import .* from "(\./[^"]+)";$', body, flags=re.MULTILINE):
            assert fetched(url.rsplit("/", 1)[0] + module[1:])[0] == 200, f"{url} imports {module}"


def fetched(url: str) -> tuple[int, str]:
    """A static file's status and text, its file closed."""
    response = Client().get(url)
    try:
        body = b"".join(response.streaming_content) if response.status_code == 200 else b""  # type: ignore[attr-defined]
        return response.status_code, body.decode(errors="replace")  # icons are binary
    finally:
        response.close()
