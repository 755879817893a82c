"""Password logins (the login page and the admin's) with a limit on failed attempts.

After LOGIN_MAX_FAILURES wrong passwords for one username within
LOGIN_FAILURE_WINDOW_SECONDS, that username cannot log in with a password until the
window has passed since the first of them, right password or not: guessing a password
costs the window per handful of guesses. A successful login, before that, starts the
count again: the person who knows the password is not locked out by their own typos
spread over the window. Counted per username, across workers (Redis), never per
address: the address is the proxy's or a forged one (docs/security.md).
Bearer tokens are not passwords and are not checked here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from core.redis_clients import sync_redis


def _key(username: str) -> str:
    return f"login:failures:{username.lower()}"


def login_failures(*, username: str) -> int:
    """Failed password logins for ``username`` in the current window."""
    key = _key(username)
    return int(sync_redis(key).get(key) or 0)


def login_failure_record(*, username: str) -> None:
    window = float(settings.LOGIN_FAILURE_WINDOW_SECONDS)
    key = _key(username)
    pipe = sync_redis(key).pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, int(window), nx=True)  # the window runs from the first failure
    pipe.execute()


def login_failures_clear(*, username: str) -> None:
    key = _key(username)
    sync_redis(key).delete(key)


class ThrottledModelBackend(ModelBackend):
    """Django's username-and-password backend, refusing a username past its failures."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None or password is None:
            return None
        if login_failures(username=username) >= settings.LOGIN_MAX_FAILURES:
            raise PermissionDenied  # authenticate() then tries no other backend and fails the login
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(username=username)
        else:
            login_failures_clear(username=username)
        return user
