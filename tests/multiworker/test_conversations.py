"""A token stream's conversation, turns and replies, stored through streaming/conversation_store.py's
SQL on SQLite and on PostgreSQL, and read back on other workers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.processes import Cluster
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


async def test_a_conversation_and_its_replies_are_stored_on_either_database(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    headers = {"Authorization": f"Bearer {cluster.tokens['user0']}"}
    async with httpx.AsyncClient(timeout=20, headers=headers) as http:
        # Quotes, a percent sign and a non-ASCII word: parameters, not text spliced into the SQL.
        first = await http.post(f"{cluster.http(0)}/api/assistant/stream", json={"message": "it's 100% café", "max_tokens": 2})
        events = parse_events(first.text)
        assert events[-1]["event"] == "done", events[-1]
        conversation_id, first_reply = events[0]["data"]["conversation_id"], events[-1]["data"]["content"]
        second = await http.post(
            f"{cluster.http(1)}/api/assistant/stream", json={"message": "again", "conversation_id": conversation_id}
        )
        second_events = parse_events(second.text)
        assert second_events[-1]["event"] == "done", second_events[-1]
        second_reply = second_events[-1]["data"]["content"]

        expected = [
            ("user", "it's 100% café", None, None),
            ("assistant", first_reply, "length", first.headers["X-Stream-Id"]),
            ("user", "again", None, None),
            ("assistant", second_reply, "stop", second.headers["X-Stream-Id"]),
        ]
        for _ in range(100):  # a reply is stored just after its "done"; within 5 s
            found = (await http.get(f"{cluster.http(2)}/api/conversations/{conversation_id}")).json()
            if len(found["messages"]) == len(expected):
                break
            await asyncio.sleep(0.05)
        stored = [(m["role"], m["content"], m["finish_reason"], m["stream_id"]) for m in found["messages"]]
        assert stored == expected, "every turn once, in order, with the replies' ends and streams"
        assert found["title"] == "it's 100% café"
        assert first_reply == "it's 100% " and second_reply == "again "
        listed = (await http.get(f"{cluster.http(0)}/api/conversations/")).json()
        assert conversation_id in [c["id"] for c in listed["conversations"]]
