"""Token streams across three real daphne workers and a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import Cluster, RedisServer
from tests.support.streams import auth, read_events, start_stream

pytestmark = pytest.mark.multiworker


@pytest.fixture(params=["daphne", "uvicorn"])
def server_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The shared cluster under daphne, then its twin under uvicorn (WEB_SERVER)."""
    return request.getfixturevalue("cluster" if request.param == "daphne" else "uvicorn_cluster")


def test_a_dropped_stream_resumes_on_another_worker_with_exactly_the_rest(server_cluster: Cluster):
    cluster = server_cluster
    token = cluster.tokens["user3"]
    response = start_stream(cluster, 0, token, message="alpha beta gamma", max_tokens=60)
    stream_id = response.headers["X-Stream-Id"]
    first = read_events(response, until=10)
    response.close()  # the client drops; the generation goes on
    seen = [e["data"]["index"] for e in first if e.get("event") == "token"]
    last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
    with httpx.stream(
        "GET", f"{cluster.http(1)}/api/streams/{stream_id}/events", headers={**auth(token), "Last-Event-ID": last_id}, timeout=20
    ) as resumed:
        rest = read_events(resumed)
    indexes = [e["data"]["index"] for e in rest if e.get("event") == "token"]
    assert seen + indexes == list(range(60)), "every token exactly once across the two connections"
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["finish_reason"] == "length"
    assert rest[-1]["data"]["usage"]["completion_tokens"] == 85, "340 characters at four a token (count_tokens)"


def test_cancel_through_another_worker_stops_the_stream_within_a_second(cluster: Cluster):
    token = cluster.tokens["user4"]
    response = start_stream(cluster, 0, token, message="never ending", max_tokens=5000)
    stream_id = response.headers["X-Stream-Id"]
    read_events(response, until=3)
    asked = time.monotonic()
    cancel = httpx.post(f"{cluster.http(2)}/api/streams/{stream_id}/cancel", headers=auth(token), timeout=10)
    assert cancel.status_code == 202
    events = read_events(response)
    stopped_after = time.monotonic() - asked
    response.close()
    assert events[-1]["event"] == "done" and events[-1]["data"]["finish_reason"] == "cancelled"
    assert stopped_after < 1.5, f"stopped {stopped_after:.2f}s after the cancel"
    assert events[-1]["data"]["usage"]["completion_tokens"] < 5000


def test_readers_learn_of_a_killed_producer_within_ten_seconds(cluster: Cluster):
    token = cluster.tokens["user5"]
    try:
        response = start_stream(cluster, 0, token, message="doomed words", max_tokens=5000)
        stream_id = response.headers["X-Stream-Id"]
        read_events(response, until=2)
        with httpx.stream("GET", f"{cluster.http(1)}/api/streams/{stream_id}/events", headers=auth(token), timeout=20) as reader:
            cluster.kill_worker(0)
            killed = time.monotonic()
            events = read_events(reader)
        assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "producer_lost"
        assert time.monotonic() - killed < 10
    finally:
        cluster.start_worker(0)


def test_the_openai_sdk_works_unchanged(server_cluster: Cluster):
    cluster = server_cluster
    client = openai.OpenAI(base_url=f"{cluster.http(1)}/v1", api_key=cluster.tokens["user6"], max_retries=0, timeout=20)
    assert [m.id for m in client.models.list()] == ["echo"]
    reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "say this back"}])
    assert reply.choices[0].message.content == "say this back " and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 4, "14 characters at four a token"
    stream = client.chat.completions.create(
        model="echo",
        messages=[{"role": "system", "content": "echo"}, {"role": "user", "content": "one two"}],
        stream=True,
        max_tokens=4,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two one two "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []


def test_an_openai_stream_is_resumable_by_its_stream_id(server_cluster: Cluster):
    cluster = server_cluster
    token = cluster.tokens["user7"]
    client = openai.OpenAI(base_url=f"{cluster.http(0)}/v1", api_key=token, max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "resume me"}], stream=True, max_tokens=6
    )
    stream_id = raw.headers["X-Stream-Id"]
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "resume me resume me resume me "
    with httpx.stream(
        "GET", f"{cluster.http(2)}/api/streams/{stream_id}/events", headers={**auth(token), "Last-Event-ID": f"{stream_id}:3"}
    ) as resumed:
        events = read_events(resumed)
    assert [e["data"]["token"] for e in events if e.get("event") == "token"] == ["me ", "resume ", "me "]


def test_the_openai_sdk_sees_bad_keys_and_bad_requests_as_openai_errors(cluster: Cluster):
    bad = openai.OpenAI(base_url=f"{cluster.http(0)}/v1", api_key="rt_wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError) as raised:
        bad.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=f"{cluster.http(0)}/v1", api_key=cluster.tokens["user7"], max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError):
        good.chat.completions.create(model="echo", messages=[])
    response = httpx.post(f"{cluster.http(0)}/v1/nothing-here", headers=auth(cluster.tokens["user7"]), timeout=10)
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def upstream_cluster() -> Iterator[tuple[Cluster, FakeUpstream]]:
    """Two workers whose model is the fake OpenAI-compatible upstream."""
    upstream = FakeUpstream()
    redis = RedisServer()
    env = {
        "LLM_BACKEND": "openai",
        "LLM_BASE_URL": upstream.url,
        "LLM_API_KEY": "sk-upstream",
        "LLM_MODEL": "fake-model",
        "LLM_TIMEOUT_SECONDS": "1",
        "LLM_ABANDON_SECONDS": "2",
    }
    started = Cluster(redis, workers=2, env=env)
    started.tokens = started.mint_tokens("una")
    yield started, upstream
    started.stop()
    redis.stop()
    upstream.stop()


def test_upstream_tokens_flow_end_to_end(upstream_cluster):
    cluster, upstream = upstream_cluster
    response = start_stream(cluster, 0, cluster.tokens["una"], message="through the fake upstream")
    events = read_events(response)
    response.close()
    assert "".join(e["data"]["token"] for e in events if e.get("event") == "token") == "through the fake upstream "
    assert events[-1]["event"] == "done" and events[-1]["data"]["finish_reason"] == "stop"
    assert upstream.requests[-1]["auth"] == "Bearer sk-upstream" and upstream.requests[-1]["body"]["model"] == "fake-model"


@pytest.mark.parametrize(
    ("message", "code"), [("hang on", "upstream_timeout"), ("fail now", "upstream_error"), ("garbage in", "upstream_malformed")]
)
def test_upstream_failures_end_the_stream_with_an_error_event(upstream_cluster, message, code):
    cluster, _ = upstream_cluster
    started = time.monotonic()
    response = start_stream(cluster, 1, cluster.tokens["una"], message=message)
    events = read_events(response)
    response.close()
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == code
    assert time.monotonic() - started < 1 + 5, "within LLM_TIMEOUT_SECONDS plus 5 s"


def test_a_stream_nobody_reads_is_abandoned_and_the_upstream_request_closed(upstream_cluster):
    cluster, upstream = upstream_cluster
    before = upstream.closed_by_client
    token = cluster.tokens["una"]
    response = start_stream(cluster, 0, token, message="slow and steady")
    stream_id = response.headers["X-Stream-Id"]
    read_events(response, until=2)
    response.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and upstream.closed_by_client == before:
        time.sleep(0.1)
    assert upstream.closed_by_client == before + 1, "the upstream request was closed"
    with httpx.stream("GET", f"{cluster.http(1)}/api/streams/{stream_id}/events", headers=auth(token), timeout=10) as replay:
        events = read_events(replay)
    assert events[-1]["event"] == "done" and events[-1]["data"]["finish_reason"] == "cancelled"
    assert json.dumps(events[0]["data"]).count(stream_id) == 1
