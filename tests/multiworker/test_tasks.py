"""Tasks and notifications across three daphne workers, a task worker and one Redis."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Cluster
from tests.support.rooms_api import new_room
from tests.support.sse_parsing import parse_events

pytestmark = pytest.mark.multiworker


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def tasks_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The shared cluster with a task worker running, on SQLite, then on PostgreSQL
    (where claims take SELECT ... FOR UPDATE SKIP LOCKED)."""
    cluster: Cluster = request.getfixturevalue("cluster" if request.param == "sqlite" else "pg_cluster")
    cluster.start_taskworker()
    yield cluster
    for worker in cluster.taskworkers:  # tests kill and replace task workers
        worker.terminate()
        worker.wait(10)
    cluster.taskworkers.clear()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class SSE:
    """Reads SSE events from a streaming httpx response, a few at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.texts = response.iter_text()
        self.buffer = ""

    def until(self, kinds: tuple[str, ...], *, deadline: float) -> list[dict]:
        events: list[dict] = []
        for text in self.texts:
            self.buffer += text
            *blocks, self.buffer = self.buffer.split("\n\n")
            events += [e for block in blocks for e in parse_events(block + "\n\n") if "event" in e]
            if any(e["event"] in kinds for e in events) or time.monotonic() > deadline:
                return events
        return events


def create_task(cluster: Cluster, worker: int, token: str, **body) -> int:
    response = httpx.post(f"{cluster.http(worker)}/api/tasks/", json=body, headers=auth(token), timeout=10)
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_a_task_outlives_the_web_worker_that_accepted_it(tasks_cluster: Cluster):
    cluster = tasks_cluster
    token = cluster.tokens["user8"]
    try:
        task_id = create_task(cluster, 0, token, kind="countdown", steps=15, interval_ms=200)
        with httpx.stream("GET", f"{cluster.http(1)}/api/tasks/{task_id}/events", headers=auth(token), timeout=30) as response:
            sse = SSE(response)
            first = sse.until(("progress",), deadline=time.monotonic() + 10)
            cluster.kill_worker(0)
            events = first + sse.until(("complete", "failed"), deadline=time.monotonic() + 20)
        assert events[-1]["event"] == "complete" and events[-1]["data"] == {"status": "succeeded", "result": {"steps": 15}}
        ids = [int(e["id"]) for e in events]
        assert ids == list(range(1, len(ids) + 1)), "every event once, numbered from 1"
    finally:
        cluster.start_worker(0)
    # Resume from any worker with Last-Event-ID.
    with httpx.stream(
        "GET", f"{cluster.http(2)}/api/tasks/{task_id}/events", headers={**auth(token), "Last-Event-ID": str(ids[-3])}, timeout=10
    ) as response:
        rest = SSE(response).until(("complete",), deadline=time.monotonic() + 10)
    assert [int(e["id"]) for e in rest] == ids[-2:]
    state = httpx.get(f"{cluster.http(2)}/api/tasks/{task_id}", headers=auth(token), timeout=10).json()
    assert (state["status"], state["progress"]) == ("succeeded", 100)
    other = httpx.get(f"{cluster.http(1)}/api/tasks/{task_id}", headers=auth(cluster.tokens["user9"]), timeout=10)
    assert other.status_code == 404


def test_cancel_from_another_worker_stops_the_task_within_a_second(tasks_cluster: Cluster):
    cluster = tasks_cluster
    token = cluster.tokens["user8"]
    task_id = create_task(cluster, 1, token, kind="countdown", steps=500, interval_ms=50)
    with httpx.stream("GET", f"{cluster.http(0)}/api/tasks/{task_id}/events", headers=auth(token), timeout=20) as response:
        sse = SSE(response)
        deadline = time.monotonic() + 10
        while not any(e["data"].get("status") == "running" for e in sse.until(("progress",), deadline=deadline)):
            assert time.monotonic() < deadline, "the task never started"
        asked = time.monotonic()
        assert httpx.delete(f"{cluster.http(2)}/api/tasks/{task_id}", headers=auth(token), timeout=10).status_code == 202
        events = sse.until(("failed", "complete"), deadline=time.monotonic() + 5)
    assert events[-1]["event"] == "failed" and events[-1]["data"]["status"] == "cancelled"
    assert time.monotonic() - asked < 1.5


def test_a_task_worker_killed_mid_task_leaves_no_task_running_forever(tasks_cluster: Cluster):
    cluster = tasks_cluster
    token = cluster.tokens["user10"]
    victim = cluster.taskworkers[-1]
    task_id = create_task(cluster, 0, token, kind="countdown", steps=40, interval_ms=100)
    deadline = time.monotonic() + 10
    while httpx.get(f"{cluster.http(0)}/api/tasks/{task_id}", headers=auth(token), timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    cluster.taskworkers.remove(victim)
    cluster.start_taskworker()  # another worker takes over once the lease runs out
    deadline = time.monotonic() + 40
    state: dict = {}
    while time.monotonic() < deadline:
        state = httpx.get(f"{cluster.http(1)}/api/tasks/{task_id}", headers=auth(token), timeout=10).json()
        if state["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.5)
    assert state["status"] in ("succeeded", "failed"), f"the task is stuck: {state}"
    with httpx.stream("GET", f"{cluster.http(2)}/api/tasks/{task_id}/events", headers=auth(token), timeout=10) as response:
        events = SSE(response).until(("complete", "failed"), deadline=time.monotonic() + 10)
    assert any("retrying" in e["data"].get("message", "") for e in events), "the retry is visible in the events"


def test_a_mention_on_worker_0_reaches_the_mentioned_users_stream_on_worker_2(tasks_cluster: Cluster):
    cluster = tasks_cluster
    slug = new_room(cluster, cluster.tokens["user0"])
    with httpx.stream(
        "GET", f"{cluster.http(2)}/api/notifications/stream", headers=auth(cluster.tokens["user11"]), timeout=20
    ) as response:
        time.sleep(0.3)
        posted = httpx.post(
            f"{cluster.http(0)}/api/rooms/{slug}/messages",
            json={"content": "hello @user11, see this"},
            headers=auth(cluster.tokens["user0"]),
            timeout=10,
        )
        assert posted.status_code == 201
        events = SSE(response).until(("mention",), deadline=time.monotonic() + 10)
    mention = next(e for e in events if e["event"] == "mention")
    assert mention["data"] == {
        "room": slug,
        "from": "user0",
        "message_id": posted.json()["id"],
        "content": "hello @user11, see this",
    }


def test_taskworker_command_starts_and_stops(tasks_cluster: Cluster):
    process = tasks_cluster.start_taskworker()
    time.sleep(1.5)
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(10) in (0, -signal.SIGINT, 1)
    tasks_cluster.taskworkers.remove(process)
