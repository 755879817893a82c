"""The official openai SDK against a live worker: models.retrieve of ours, and a 404
model_not_found for one we do not serve (docs/protocol.md, "Chat Completions parameters")."""

from __future__ import annotations

import openai
import pytest

from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker


def test_the_sdk_retrieves_echo_and_gets_not_found_for_an_unknown_model(cluster: Cluster):
    client = openai.OpenAI(base_url=f"{cluster.http(1)}/v1", api_key=cluster.tokens["user6"], max_retries=0, timeout=20)
    assert client.models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-nothing")
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found"
