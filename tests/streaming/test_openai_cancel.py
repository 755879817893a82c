"""A /v1 stream cancelled from another worker ends with finish_reason "cancelled"
(docs/protocol.md, "Token streams"), read by the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.processes import Cluster
from tests.support.streams import auth

pytestmark = pytest.mark.multiworker


def test_a_v1_stream_cancelled_from_another_worker_ends_cancelled(cluster: Cluster):
    token = cluster.tokens["user4"]
    client = openai.OpenAI(base_url=f"{cluster.http(0)}/v1", api_key=token, max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "never ending"}], stream=True, max_tokens=5000
    )
    stream_id = raw.headers["X-Stream-Id"]
    chunks = raw.parse()
    first = [next(chunks) for _ in range(3)]
    assert first[0].choices[0].delta.role == "assistant"
    cancel = httpx.post(f"{cluster.http(2)}/api/streams/{stream_id}/cancel", headers=auth(token), timeout=10)
    assert cancel.status_code == 202
    rest = list(chunks)  # bounded by the client's 20 s timeout
    finishes = [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason]
    assert finishes == ["cancelled"]
