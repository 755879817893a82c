"""Fixtures of streaming's tests."""

import pytest

from core.redis_clients import reset_in_process
from tests.support.factories import make_token, make_user


@pytest.fixture(autouse=True)
def fresh_limits():
    """No concurrency slot, budget or stream log left over from another test (the
    in-process Redis, emptied before and after each test)."""
    reset_in_process()
    yield
    reset_in_process()


@pytest.fixture
def token(transactional_db):
    """alice's bearer token."""
    return make_token(make_user("alice"))
