"""/v1/chat/completions in process: its content limits, its token accounting and site-wide
bans, seen as the official ``openai`` SDK and plain HTTP clients see them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import openai
import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from chat.services import moderation as chat_services
from config.asgi import application
from streaming import services as streaming_services
from streaming.models import Conversation, ConversationMessage
from tests.support.asgi_client import BearerClient

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def completion(client: BearerClient, body: Any):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return await client.post("/v1/chat/completions", data, content_type="application/json")


def assert_openai_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["message"]


async def stored_conversations() -> int:
    return await Conversation.objects.acount() + await ConversationMessage.objects.acount()


async def test_a_message_over_the_assistants_limit_is_a_400_and_nothing_is_stored(token):
    client = BearerClient(token)
    huge = {"model": "echo", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_openai_error(await completion(client, huge), 400, "string_above_max_length")
    just_over = {"model": "echo", "messages": [{"role": "user", "content": "y" * (streaming_services.MAX_MESSAGE_CHARS + 1)}]}
    assert_openai_error(await completion(client, just_over), 400, "string_above_max_length")
    assert await stored_conversations() == 0


async def test_the_messages_together_are_limited_too(token):
    client = BearerClient(token)
    # Five messages of 30,000 characters: each under the per-message limit, 150,000 in all.
    messages = [{"role": "user", "content": "z" * 30_000} for _ in range(5)]
    assert_openai_error(await completion(client, {"model": "echo", "messages": messages}), 400, "context_length_exceeded")
    assert await stored_conversations() == 0
    within = {"model": "echo", "messages": messages[:4], "max_tokens": 1}  # 120,000 characters
    assert (await completion(client, within)).status_code == 200


async def test_a_body_over_the_cap_is_a_413_in_openais_shape(token):
    client = BearerClient(token)
    # Under Django's own cap (2.5 MB, which answered an HTML 400 above it), over ours (2 MiB).
    padded = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "user": "p" * 2_300_000}
    assert_openai_error(await completion(client, padded), 413, "request_too_large")
    over_djangos = json.dumps({**padded, "user": "p" * 3_000_000}).encode()
    assert_openai_error(await completion(client, over_djangos), 413, "request_too_large")
    assert await stored_conversations() == 0


@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_TOKENS_PER_DAY=5_000)
async def test_long_words_count_by_their_characters_in_usage_and_in_the_budget(token):
    client = BearerClient(token)
    word = "w" * 8_000  # one word: one token when tokens were words
    first = await completion(client, {"model": "echo", "messages": [{"role": "user", "content": word}]})
    assert first.status_code == 200
    usage = first.json()["usage"]
    assert usage["prompt_tokens"] == 2_000, "8,000 characters at four a token"
    assert usage["completion_tokens"] == 2_001, "the echo's 8,001 characters (the word and a space)"
    assert usage["total_tokens"] == 4_001
    await asyncio.sleep(0.2)  # the producer spends the budget after the final event
    second = await completion(client, {"model": "echo", "messages": [{"role": "user", "content": word}]})
    assert second.status_code == 200, "4,001 of 5,000 used: not yet exceeded"
    await asyncio.sleep(0.2)
    refused = await completion(client, {"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_the_sdk_sees_a_site_wide_ban_as_permission_denied_banned(token):
    def ban_alice():
        alice = chat_services.User.objects.get(username="alice")
        chat_services.ban_create(user=alice, room=None, reason="spam")

    transport = httpx2.ASGITransport(app=application)
    async with httpx2.AsyncClient(transport=transport) as http:
        client = openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=token, http_client=http, max_retries=0)
        reply = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "before"}])
        assert reply.choices[0].message.content == "before "
        await database_sync_to_async(ban_alice)()
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "after"}])
        assert raised.value.status_code == 403 and raised.value.code == "banned"
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "after"}], stream=True)
        assert [m.id for m in (await client.models.list()).data] == ["echo"], "reading still works"
    await asyncio.sleep(0.2)
    users = ConversationMessage.objects.filter(role="user").values_list("content", flat=True)
    contents = await database_sync_to_async(list)(users)
    assert contents == ["before"], "nothing of the refused requests was stored"
