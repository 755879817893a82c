from __future__ import annotations

import itertools

import httpx
import pytest

from tests.processes import Cluster

pytestmark = pytest.mark.multiworker

_room_numbers = itertools.count(1)


_DB_CLUSTERS = {"sqlite": "cluster", "postgres": "pg_cluster", "uvicorn": "uvicorn_cluster"}


@pytest.fixture(params=list(_DB_CLUSTERS))
def db_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The shared three-worker cluster on SQLite, its twin on PostgreSQL, and its twin
    served by uvicorn: for the tests that must hold on both databases (DATABASE_URL
    decides, docs/protocol.md, "Other endpoints") and under both web servers (WEB_SERVER)."""
    return request.getfixturevalue(_DB_CLUSTERS[request.param])


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
    response = httpx.get(
        f"{cluster.http(0)}/api/rooms/{slug}/messages?after={after}&limit=200",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["messages"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the workers' logs to the report."""
    report = yield
    if report.when == "call" and report.failed:
        for name, started in item.funcargs.items():
            if isinstance(started, Cluster):
                report.sections.append((f"{name} worker logs", started.logs()))
    return report
