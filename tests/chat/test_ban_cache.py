"""Users found not banned site-wide, remembered for a few seconds per worker (chat.ban_cache):
a stream start skips the database, and no site-wide ban is outlived."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

import chat.ban_cache
from accounts import token_cache
from chat.ban_cache import user_is_banned_site_wide_remembered
from chat.models import Ban
from chat.selectors import user_is_banned_site_wide
from chat.services.moderation import ban_create, ban_lift
from core.layer import get_layer
from tests.support.factories import make_room, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every user looked up in the database, in order."""
    seen: list[int] = []

    def counting(*, user_id: int) -> bool:
        seen.append(user_id)
        return user_is_banned_site_wide(user_id=user_id)

    monkeypatch.setattr(chat.ban_cache, "user_is_banned_site_wide", counting)
    return seen


@pytest.fixture
def ann() -> User:
    return make_user("ann")


async def banned(user: User) -> bool:
    return await user_is_banned_site_wide_remembered(user_id=user.pk)


async def test_not_banned_is_remembered_and_a_ban_here_counts_at_once(ann, lookups):
    assert [await banned(ann) for _ in range(3)] == [False, False, False]
    assert lookups == [ann.pk], "one lookup for three starts"
    await database_sync_to_async(ban_create)(user=ann, room=None, reason="spam")
    assert await banned(ann), "this worker forgets ann when the ban commits"
    assert await banned(ann) and lookups == [ann.pk] * 3, "banned is never remembered"


async def test_a_lifted_ban_counts_at_once_and_a_room_ban_forgets_nothing(ann, lookups):
    ban = await database_sync_to_async(ban_create)(user=ann, room=None, reason="spam")
    assert await banned(ann)
    assert await database_sync_to_async(ban_lift)(ban=ban, lifted_by=None)
    assert not await banned(ann)
    room = await database_sync_to_async(make_room)()
    await database_sync_to_async(ban_create)(user=ann, room=room, reason="off topic")
    assert not await banned(ann) and lookups == [ann.pk] * 2, "a room's ban is not site-wide"


async def test_a_ban_on_another_worker_is_heard(ann, lookups):
    bob = await database_sync_to_async(make_user)("bob")
    assert not await banned(ann) and not await banned(bob)
    # Another worker banned ann: its row is there, and the layer carries the news.
    await Ban.objects.acreate(user=ann, reason="spam")
    await get_layer().apublish(token_cache.CHANGES_GROUP, str(ann.pk))
    for _ in range(100):  # within 1 s, well before the entry would expire by itself
        if await banned(ann):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the ban published by another worker was not heard")
    assert not await banned(bob) and lookups.count(bob.pk) == 1, "bob's entry was kept"


async def test_an_answer_read_before_a_ban_committed_is_not_kept(ann, monkeypatch):
    # The lookup reads "not banned"; the ban commits and its news arrives before the answer
    # is back on the event loop. Kept, it would let starts through for BAN_CACHE_SECONDS.
    def read_then_banned(*, user_id: int) -> bool:
        answer = user_is_banned_site_wide(user_id=user_id)
        Ban.objects.create(user_id=user_id, reason="spam")
        token_cache.forget_user(user_id)
        return answer

    monkeypatch.setattr(chat.ban_cache, "user_is_banned_site_wide", read_then_banned)
    assert not await banned(ann)
    monkeypatch.setattr(chat.ban_cache, "user_is_banned_site_wide", user_is_banned_site_wide)
    assert await banned(ann)


async def test_an_entry_lives_a_few_seconds_and_a_reconnect_forgets_everything(ann, lookups, monkeypatch):
    assert not await banned(ann)
    monkeypatch.setattr(chat.ban_cache, "BAN_CACHE_SECONDS", 0.0)
    assert not await banned(ann) and len(lookups) == 2, "an aged entry is looked up again"
    monkeypatch.setattr(chat.ban_cache, "BAN_CACHE_SECONDS", 5.0)
    assert not await banned(ann) and len(lookups) == 2
    await token_cache._on_reconnect()  # bans made while the subscriber was away are not heard
    assert not await banned(ann) and len(lookups) == 3
