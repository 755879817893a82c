"""A finished Responses stream (``GET /v1/responses/<id>?stream=true``) read by a client
nobody here wrote: the npm ``eventsource`` package, which reconnects by itself as a
browser's EventSource does, against three daphne workers. It sees every event once, then
its reconnect gets 204 and it stops (docs/protocol.md, "After the end"), also when it
started mid-way with ``starting_after`` and when the response ends while it reads."""

from __future__ import annotations

import httpx
import pytest

from tests.support.node import eventsource_read
from tests.support.processes import Cluster
from tests.support.sse_parsing import parse_events
from tests.support.streams import auth

pytestmark = pytest.mark.multiworker

USER = "user9"
# Every event type a response of the echo model streams ("/sources /think": reasoning and
# citations too); the EventSource listens for each by name.
KINDS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.reasoning_text.delta",
    "response.content_part.added",
    "response.output_text.annotation.added",
    "response.output_text.delta",
    "response.reasoning_text.done",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
]


def finished_response(cluster: Cluster, token: str, text: str) -> tuple[str, list[dict]]:
    """A response run to its end (not streamed), and its events as a plain stream reads them."""
    made = httpx.post(f"{cluster.http(0)}/v1/responses", json={"model": "echo", "input": text}, headers=auth(token), timeout=20)
    assert made.status_code == 200 and made.json()["status"] == "completed", made.text
    response_id = made.json()["id"]
    with httpx.Client(timeout=20) as client:
        read = client.get(f"{cluster.http(1)}/v1/responses/{response_id}?stream=true", headers=auth(token))
    assert read.status_code == 200
    return response_id, [e["data"] for e in parse_events(read.text)]


def assert_once_then_stopped(result: dict, *, numbers: list[int], first_id: str | None) -> None:
    ids = [event["id"] for event in result["events"]]
    assert ids == [str(n) for n in numbers], "every event once, in order, numbered as the stream numbers them"
    assert [e["data"]["sequence_number"] for e in result["events"]] == numbers
    assert result["events"][-1]["type"] == "response.completed"
    assert result["stopped"], f"the EventSource was still reconnecting: {result['requests']}"
    assert result["requests"] == [{"lastEventId": first_id, "status": 200}, {"lastEventId": ids[-1], "status": 204}]
    assert result["errors"][-1]["code"] == 204


def test_a_finished_response_is_read_once_then_the_eventsource_stops(cluster: Cluster):
    token = cluster.tokens[USER]
    response_id, events = finished_response(cluster, token, "/sources /think tea cake")
    assert {e["type"] for e in events} <= set(KINDS)
    url = f"{cluster.http(2)}/v1/responses/{response_id}?stream=true"
    result = eventsource_read(url, headers=auth(token), kinds=KINDS)
    assert [e["data"] for e in result["events"]] == events, "the same events as any other reader"
    assert_once_then_stopped(result, numbers=list(range(len(events))), first_id=None)


def test_an_eventsource_that_starts_after_a_number_reads_the_rest_once_then_stops(cluster: Cluster):
    """Its reconnect carries the URL's starting_after and, newer, its Last-Event-ID: the
    latter wins, so the reconnect is at the end (204), not a replay from starting_after."""
    token = cluster.tokens[USER]
    response_id, events = finished_response(cluster, token, "tea cake")
    url = f"{cluster.http(1)}/v1/responses/{response_id}?stream=true&starting_after=3"
    result = eventsource_read(url, headers=auth(token), kinds=KINDS)
    assert_once_then_stopped(result, numbers=list(range(4, len(events))), first_id=None)


def test_a_response_that_ends_while_the_eventsource_reads_it(cluster: Cluster):
    token = cluster.tokens[USER]
    # 100 tokens at the echo model's 20 ms: about 2 s of stream after the POST answers.
    body = {"model": "echo", "input": "a b c", "max_output_tokens": 100, "background": True}
    made = httpx.post(f"{cluster.http(0)}/v1/responses", json=body, headers=auth(token), timeout=20)
    assert made.status_code == 200 and made.json()["status"] == "queued"
    result = eventsource_read(f"{cluster.http(2)}/v1/responses/{made.json()['id']}?stream=true", headers=auth(token), kinds=KINDS)
    numbers = [e["data"]["sequence_number"] for e in result["events"]]
    assert numbers == list(range(len(numbers)))
    assert result["events"][-1]["type"] == "response.incomplete"  # max_output_tokens reached
    assert result["stopped"] and result["requests"][-1]["status"] == 204, result["requests"]
    assert len(result["requests"]) == 2
