"""accounts/token_store.py: the bearer-token lookup in SQL gives what the ORM gives."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import token_create, token_hash, token_revoke
from accounts.token_store import token_with_user
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


def _fields(instance):
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_the_token_and_its_user_are_the_instances_the_orm_gives(django_assert_num_queries):
    user = make_user("dora")
    user.first_name, user.is_staff, user.last_login = "Dora", True, timezone.now() - timedelta(days=1)
    user.save()
    token, raw = token_create(user=user, name="laptop")
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    expected = ApiToken.objects.select_related("user").get(pk=token.pk)

    with django_assert_num_queries(1):
        found = token_with_user(token_hash=token_hash(raw))
        assert found is not None
        assert found.user.get_username() == "dora"  # selected with the token: no second query
    assert _fields(found) == _fields(expected)
    assert _fields(found.user) == _fields(expected.user)
    assert found.last_used_at is not None and found.last_used_at.tzinfo is not None, "an aware datetime, as the ORM's"
    assert type(found.user.is_staff) is bool and found.user.is_staff
    assert not found._state.adding and found._state.db == "default" and not found.user._state.adding
    found.user.first_name = "Dorothea"
    found.user.save(update_fields=["first_name"])  # a usable instance: it saves as an update
    assert User.objects.get(pk=user.pk).first_name == "Dorothea"


def test_revoked_tokens_inactive_users_and_unknown_hashes_find_nothing():
    user, other = make_user("erin"), make_user("fay")
    revoked, revoked_raw = token_create(user=user)
    token_revoke(token=revoked)
    _, inactive_raw = token_create(user=other)
    User.objects.filter(pk=other.pk).update(is_active=False)
    assert token_with_user(token_hash=token_hash(revoked_raw)) is None
    assert token_with_user(token_hash=token_hash(inactive_raw)) is None
    assert token_with_user(token_hash="' OR 1=1 --") is None, "the hash is a parameter, not SQL"
    _, live_raw = token_create(user=user)
    assert token_with_user(token_hash=token_hash(live_raw)) is not None
