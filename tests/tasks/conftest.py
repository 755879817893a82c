"""Fixtures of the task tests: the in-process runner (no Redis, no task worker) stopped
after each test, and a signed-in API client."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from tasks.runner import _local_runners
from tests.support.asgi_client import BearerClient
from tests.support.factories import make_token, make_user


@pytest_asyncio.fixture(autouse=True)
async def _stop_runner():
    yield
    runner = _local_runners.get(asyncio.get_running_loop())
    if runner is not None:
        await runner.close()


@pytest.fixture
def client(transactional_db):
    return BearerClient(make_token(make_user("tess")))
