"""A model's concurrency cap (LLM_MODELS' max_concurrent, docs/protocol.md, "Models") holds
across workers: its slots are a sorted set in Redis, beside the user's and everyone's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Cluster, RedisServer
from tests.support.streams import auth, read_events, start_stream

pytestmark = pytest.mark.multiworker

MODELS = {"echo": {}, "scarce": {"max_concurrent": 2}}


@pytest.fixture(scope="module")
def capped_cluster() -> Iterator[Cluster]:
    """Two workers serving two echo models, one capped at two generations; a Redis of its
    own (the shared cluster's users have the same ids, and so the same slot keys)."""
    redis = RedisServer()
    started = Cluster(redis, workers=2, env={"LLM_MODELS": json.dumps(MODELS)})
    started.tokens = started.mint_tokens("cap-a", "cap-b")
    yield started
    started.stop()
    redis.stop()


def test_a_models_cap_holds_across_workers_and_frees_when_a_reply_ends(capped_cluster: Cluster):
    cluster = capped_cluster
    a, b = cluster.tokens["cap-a"], cluster.tokens["cap-b"]
    running = [
        start_stream(cluster, worker, token, message="slow", max_tokens=500, model="scarce") for worker, token in ((0, a), (1, b))
    ]
    assert [r.status_code for r in running] == [200, 200]
    chat = {"model": "scarce", "messages": [{"role": "user", "content": "hi"}]}
    for worker, token in ((0, b), (1, a)):
        refused = httpx.post(f"{cluster.http(worker)}/v1/chat/completions", json=chat, headers=auth(token), timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "busy" and "scarce" in refused.json()["error"]["message"]
    other = httpx.post(f"{cluster.http(1)}/v1/chat/completions", json=chat | {"model": "echo"}, headers=auth(a), timeout=10)
    assert other.status_code == 200, "another model is not held back"

    first = running[0]
    cancelled = httpx.post(f"{cluster.http(1)}/api/streams/{first.headers['X-Stream-Id']}/cancel", headers=auth(a), timeout=10)
    assert cancelled.status_code == 202
    assert read_events(first)[-1]["data"]["finish_reason"] == "cancelled"
    first.close()
    deadline = time.monotonic() + 5
    while True:  # the slot is freed once the producer has stored the reply, a moment after done
        again = httpx.post(f"{cluster.http(1)}/v1/chat/completions", json=chat, headers=auth(b), timeout=10)
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert again.status_code == 200, again.text
    httpx.post(f"{cluster.http(0)}/api/streams/{running[1].headers['X-Stream-Id']}/cancel", headers=auth(b), timeout=10)
    running[1].close()
