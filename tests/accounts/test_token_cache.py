"""Bearer tokens remembered for a few seconds per worker (accounts.token_cache): a token
seen recently skips the database, and no credential change is outlived."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

import accounts.middleware
from accounts import token_cache
from accounts.models import ApiToken
from accounts.services import token_revoke
from core.layer import get_layer
from tests.support.asgi_client import BearerClient
from tests.support.factories import make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token looked up in the database, in order."""
    seen: list[str] = []
    lookup = accounts.middleware.token_authenticate

    def counting(*, raw: str) -> ApiToken | None:
        seen.append(raw)
        return lookup(raw=raw)

    monkeypatch.setattr(accounts.middleware, "token_authenticate", counting)
    return seen


async def models_status(raw: str) -> int:
    response = await BearerClient(raw).get("/v1/models")
    return int(response.status_code)


async def test_a_token_seen_moments_ago_skips_the_database(lookups):
    raw = await database_sync_to_async(make_token)(await database_sync_to_async(make_user)("ann"))
    assert [await models_status(raw) for _ in range(3)] == [200, 200, 200]
    assert lookups == [raw], "one lookup for three requests"
    assert [await models_status("rt_not-a-token") for _ in range(2)] == [401, 401]
    assert lookups[1:] == ["rt_not-a-token"] * 2, "an unknown token is never remembered"


async def test_a_revoked_token_is_refused_at_once(lookups):
    user = await database_sync_to_async(make_user)("ann")
    raw = await database_sync_to_async(make_token)(user)
    assert await models_status(raw) == 200
    token = await ApiToken.objects.aget(user=user)
    assert await database_sync_to_async(token_revoke)(token=token)
    assert await models_status(raw) == 401, "this worker forgets the user when the revocation commits"


async def test_a_change_on_another_worker_is_heard_and_forgets_the_user(lookups):
    ann, bob = await database_sync_to_async(lambda: (make_user("ann"), make_user("bob")))()
    raw_ann, raw_bob = await database_sync_to_async(lambda: (make_token(ann), make_token(bob)))()
    assert await models_status(raw_ann) == 200 and await models_status(raw_bob) == 200
    # Another worker revoked ann's token: its row changed, and the layer carries the news.
    await ApiToken.objects.filter(user=ann).aupdate(revoked_at="2026-01-01T00:00:00Z")
    await get_layer().apublish(token_cache.CHANGES_GROUP, str(ann.pk))
    for _ in range(100):  # within 1 s, well before the entry would expire by itself
        if await models_status(raw_ann) == 401:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the change published by another worker was not heard")
    assert await models_status(raw_bob) == 200
    assert lookups.count(raw_bob) == 1, "bob's entry was kept"


async def test_an_entry_lives_a_few_seconds_and_a_reconnect_forgets_everything(lookups, monkeypatch):
    user: User = await database_sync_to_async(make_user)("ann")
    raw = await database_sync_to_async(make_token)(user)
    assert await models_status(raw) == 200
    # A revocation whose news was lost: refused once the entry is TOKEN_CACHE_SECONDS old.
    await ApiToken.objects.filter(user=user).aupdate(revoked_at="2026-01-01T00:00:00Z")
    assert await models_status(raw) == 200, "remembered (the news was lost)"
    monkeypatch.setattr(token_cache, "TOKEN_CACHE_SECONDS", 0.0)
    assert await models_status(raw) == 401
    monkeypatch.undo()
    other = await database_sync_to_async(make_token)(await database_sync_to_async(make_user)("bob"))
    assert await models_status(other) == 200
    await get_layer()._local()._on_reconnect()  # the subscriber came back: news may be lost
    assert token_cache.remembered(accounts.middleware.token_hash(other)) is None


async def test_a_token_read_before_a_revocation_committed_is_not_kept(monkeypatch):
    # The lookup finds the token valid; the revocation commits and its news arrives before
    # the answer is back on the event loop. Kept, it would let requests through for seconds.
    raw = await database_sync_to_async(make_token)(await database_sync_to_async(make_user)("ann"))
    lookup = accounts.middleware.token_authenticate

    def read_then_revoked(*, raw: str) -> ApiToken | None:
        token = lookup(raw=raw)
        assert token is not None and token_revoke(token=token)
        token_cache.forget_user(token.user_id)  # what the commit does (it ran in no transaction)
        return token

    monkeypatch.setattr(accounts.middleware, "token_authenticate", read_then_revoked)
    assert await models_status(raw) == 200, "the request that raced the revocation"
    monkeypatch.setattr(accounts.middleware, "token_authenticate", lookup)
    assert await models_status(raw) == 401
