"""Rooms through the REST API of a running cluster: create one, post to it, list it."""

from __future__ import annotations

import itertools

import httpx

from tests.support.processes import Cluster

_room_numbers = itertools.count(1)


def new_room(cluster: Cluster, token: str, worker: int = 0) -> str:
    """Create a room with a slug no other test uses; return the slug."""
    slug = f"mw-{next(_room_numbers)}-{id(cluster) % 10000}"
    response = httpx.post(
        f"{cluster.http(worker)}/api/rooms/",
        json={"slug": slug, "title": slug},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return slug


def post_message(cluster: Cluster, worker: int, slug: str, token: str, content: str) -> httpx.Response:
    return httpx.post(
        f"{cluster.http(worker)}/api/rooms/{slug}/messages",
        json={"content": content},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def list_messages(cluster: Cluster, slug: str, token: str, after: int = 0) -> list[dict]:
    """The room's messages after ``after``, every page of them."""
    messages: list[dict] = []
    while True:
        response = httpx.get(
            f"{cluster.http(0)}/api/rooms/{slug}/messages?after={after}&limit=200",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        page = response.json()["messages"]
        messages += page
        if len(page) < 200:
            return messages
        after = page[-1]["id"]
