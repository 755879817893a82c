"""SSE after the end (docs/protocol.md, "After the end"), with a client nobody here wrote:
the npm ``eventsource`` package, which reconnects by itself as a browser's EventSource
does, against three daphne workers, a task worker and one Redis. On a finished task and
on a finished token stream, and on one that ends while it reads, it sees every event
once, then its reconnect gets 204 and it stops."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.node import eventsource_read
from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker

TASK_KINDS = ["progress", "complete", "failed"]
STREAM_KINDS = ["start", "token", "done", "error"]


@pytest.fixture(scope="module")
def tasks_cluster(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start_taskworker()
    yield cluster
    for worker in cluster.taskworkers:
        worker.terminate()
        worker.wait(10)
    cluster.taskworkers.clear()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def finished_task(cluster: Cluster, token: str) -> int:
    body = {"kind": "countdown", "steps": 4, "interval_ms": 10}
    response = httpx.post(f"{cluster.http(0)}/api/tasks/", json=body, headers=auth(token), timeout=10)
    assert response.status_code == 202, response.text
    task_id = int(response.json()["id"])
    deadline = time.monotonic() + 20
    while httpx.get(f"{cluster.http(1)}/api/tasks/{task_id}", headers=auth(token), timeout=10).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the countdown did not finish within 20 s"
        time.sleep(0.1)
    return task_id


def assert_once_then_stopped(result: dict, *, final: str, first_id: str | None) -> None:
    """Every event once, in order, ending with ``final``; then one reconnect, at the end,
    answered 204, and no other."""
    ids = [event["id"] for event in result["events"]]
    assert len(ids) == len(set(ids)), f"an event came twice: {ids}"
    assert result["events"][-1]["type"] == final and [e["type"] for e in result["events"]].count(final) == 1
    assert result["stopped"], f"the EventSource was still reconnecting: {result['requests']}"
    assert result["requests"] == [{"lastEventId": first_id, "status": 200}, {"lastEventId": ids[-1], "status": 204}]
    assert result["errors"][-1]["code"] == 204


def test_a_finished_task_is_read_once_then_the_eventsource_stops(tasks_cluster: Cluster):
    token = tasks_cluster.tokens["user9"]
    task_id = finished_task(tasks_cluster, token)
    result = eventsource_read(f"{tasks_cluster.http(2)}/api/tasks/{task_id}/events", headers=auth(token), kinds=TASK_KINDS)
    assert [e["id"] for e in result["events"]] == [str(i) for i in range(1, len(result["events"]) + 1)]
    assert result["events"][-1]["data"] == {"status": "succeeded", "result": {"steps": 4}}
    assert_once_then_stopped(result, final="complete", first_id=None)


def test_a_reader_that_missed_the_end_of_a_task_gets_the_rest_then_stops(tasks_cluster: Cluster):
    token = tasks_cluster.tokens["user9"]
    task_id = finished_task(tasks_cluster, token)
    url = f"{tasks_cluster.http(1)}/api/tasks/{task_id}/events?last_event_id=2"
    result = eventsource_read(url, headers=auth(token), kinds=TASK_KINDS)
    assert result["events"][0]["id"] == "3", "the events after Last-Event-ID 2, not the start"
    assert_once_then_stopped(result, final="complete", first_id=None)


def test_a_finished_token_stream_is_read_once_then_the_eventsource_stops(cluster: Cluster):
    token = cluster.tokens["user10"]
    body = {"message": "one two three"}
    started = httpx.post(f"{cluster.http(0)}/api/assistant/stream", json=body, headers=auth(token), timeout=20)
    assert started.status_code == 200 and "event: done" in started.text
    stream_id = started.headers["X-Stream-Id"]
    result = eventsource_read(f"{cluster.http(1)}/api/streams/{stream_id}/events", headers=auth(token), kinds=STREAM_KINDS)
    assert [e["type"] for e in result["events"]] == ["start", "token", "token", "token", "done"]
    assert [e["id"] for e in result["events"]] == [f"{stream_id}:{i}" for i in range(5)]
    assert_once_then_stopped(result, final="done", first_id=None)


def test_a_token_stream_that_ends_while_the_eventsource_reads_it(cluster: Cluster):
    token = cluster.tokens["user11"]
    # 150 tokens at the echo backend's 20 ms: the stream runs for about 3 s after the POST.
    body = {"message": "a b c", "max_tokens": 150}
    with httpx.stream("POST", f"{cluster.http(0)}/api/assistant/stream", json=body, headers=auth(token), timeout=20) as started:
        assert started.status_code == 200
        stream_id = started.headers["X-Stream-Id"]
    # The POST's reader is gone; the generation runs on (§4b) and this one reads it live.
    result = eventsource_read(f"{cluster.http(2)}/api/streams/{stream_id}/events", headers=auth(token), kinds=STREAM_KINDS)
    assert [e["id"] for e in result["events"]] == [f"{stream_id}:{i}" for i in range(152)]
    assert result["events"][-1]["data"]["finish_reason"] == "length"
    assert_once_then_stopped(result, final="done", first_id=None)
