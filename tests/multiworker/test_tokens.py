"""Bearer tokens and site-wide bans, looked up through accounts/token_store.py's and
chat/message_store.py's SQL, on SQLite and PostgreSQL and under both web servers."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.processes import Cluster

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


async def test_a_token_is_checked_and_a_site_wide_ban_stops_a_stream_on_either_database(db_cluster: Cluster):
    cluster = db_cluster
    name = f"token-sql-{uuid.uuid4().hex[:8]}"
    token = cluster.mint_tokens(name)[name]
    async with httpx.AsyncClient(timeout=20, headers={"Authorization": f"Bearer {token}"}) as http:
        for worker in range(3):  # a cold lookup on each worker
            response = await http.get(f"{cluster.http(worker)}/api/conversations/")
            assert response.status_code == 200, response.text
        forged = await http.get(f"{cluster.http(0)}/api/conversations/", headers={"Authorization": f"Bearer {token}x"})
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "not_authenticated"

        cluster.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User\n"
            "from chat.services.moderation import ban_create\n"
            f"ban_create(user=User.objects.get(username={name!r}))",
        )
        started = await http.post(f"{cluster.http(1)}/api/assistant/stream", json={"message": "hello", "max_tokens": 2})
        assert started.status_code == 403 and started.json()["error"]["code"] == "banned", started.text

        cluster.manage(
            "shell",
            "-c",
            "from accounts.models import ApiToken\n"
            "from accounts.services import token_revoke\n"
            f"[token_revoke(token=t) for t in ApiToken.objects.filter(user__username={name!r})]",
        )
        for worker in range(3):
            response = await http.get(f"{cluster.http(worker)}/api/conversations/")
            assert response.status_code == 401, (worker, response.text)
