"""Password guessing: a username is refused after LOGIN_MAX_FAILURES wrong passwords."""

from __future__ import annotations

import time

import pytest
import redis
from django.test import Client, override_settings

from tests.support.factories import make_user
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-only"  # tests.support.factories.make_user's


def log_in(client: Client, path: str, username: str, password: str) -> bool:
    client.post(path, {"username": username, "password": password})
    return "_auth_user_id" in client.session


# A fast hasher: with the default one, four logins on a busy machine can outlast the 1 s window.
@override_settings(
    LOGIN_MAX_FAILURES=3,
    LOGIN_FAILURE_WINDOW_SECONDS=1.0,
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
)
def test_after_too_many_wrong_passwords_even_the_right_one_fails_until_the_window_passes():
    make_user("alice")
    make_user("bob")
    client = Client()
    for _ in range(3):
        assert not log_in(client, "/accounts/login/", "alice", "wrong")
    assert not log_in(client, "/accounts/login/", "alice", PASSWORD), "locked: the right password fails too"
    assert not log_in(Client(), "/admin/login/", "alice", PASSWORD), "the admin's login page as well"
    assert log_in(Client(), "/accounts/login/", "bob", PASSWORD), "per username: bob is not affected"
    time.sleep(1.1)
    assert log_in(Client(), "/accounts/login/", "alice", PASSWORD), "the window has passed"


@override_settings(LOGIN_MAX_FAILURES=3)
def test_a_few_wrong_passwords_do_not_lock_anyone_out():
    make_user("carol")
    for _ in range(2):
        assert not log_in(Client(), "/accounts/login/", "carol", "wrong")
    assert log_in(Client(), "/accounts/login/", "carol", PASSWORD)


@override_settings(LOGIN_MAX_FAILURES=2, LOGIN_FAILURE_WINDOW_SECONDS=60)
def test_failures_are_counted_in_redis_for_every_worker(redis_server: RedisServer):
    make_user("dave")
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        for _ in range(2):
            assert not log_in(Client(), "/accounts/login/", "Dave", "wrong")  # usernames are counted case-blind
        assert not log_in(Client(), "/accounts/login/", "dave", PASSWORD)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            assert client.get("login:failures:dave") == "2"
            assert 0 < client.ttl("login:failures:dave") <= 60, "the window runs from the first failure"
            client.delete("login:failures:dave")
        finally:
            client.close()
        assert log_in(Client(), "/accounts/login/", "dave", PASSWORD)


@pytest.mark.parametrize("counted_in", ["process", "redis"])
@override_settings(
    LOGIN_MAX_FAILURES=10,
    LOGIN_FAILURE_WINDOW_SECONDS=60,
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
)
def test_a_successful_login_starts_the_count_again(request: pytest.FixtureRequest, counted_in: str):
    """9 typos, a login, 9 typos: 18 failures in the window, never 10 in a row, so the right
    password still works."""
    make_user("erin")
    shards = [{"url": request.getfixturevalue("redis_server").url}] if counted_in == "redis" else []
    with override_settings(REDIS_SHARDS=shards):
        for _ in range(9):
            assert not log_in(Client(), "/accounts/login/", "erin", "wrong")
        assert log_in(Client(), "/accounts/login/", "erin", PASSWORD)
        for _ in range(9):
            assert not log_in(Client(), "/accounts/login/", "Erin", "wrong")
        assert log_in(Client(), "/accounts/login/", "erin", PASSWORD), "not locked out: the login reset the count"
