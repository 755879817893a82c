from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_asyncio
from django.test import override_settings
from hypothesis import settings as hypothesis_settings

from accounts import token_cache
from chat.hub import get_hub
from chat.writer import get_writer
from core.redis_clients import reset_in_process
from tests.support.processes import Cluster, PostgresServer, RedisServer

# Property tests (tests/**/test_*_properties.py): a bounded number of examples, the same
# ones on every run (derandomize), and no example database; hypothesis's other caches
# (unicode tables) go to the temporary directory, not to a .hypothesis in the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "hypothesis-rooms"))
hypothesis_settings.register_profile("project", max_examples=150, deadline=None, database=None, derandomize=True)
hypothesis_settings.load_profile("project")


@pytest.fixture(autouse=True)
def _fresh_in_process_state() -> Iterator[None]:
    """What the in-process Redis holds (presence, rate limits, logs…) and the tokens this
    process remembers (accounts.token_cache) do not leak between tests."""
    reset_in_process()
    token_cache.forget_all()
    yield


@pytest_asyncio.fixture
async def close_hub() -> Any:
    """The test's event loop's hub and writer are closed after it (socket tests through
    the ASGI stack start them): ``pytestmark = pytest.mark.usefixtures("close_hub")``."""
    yield
    await get_hub().close()
    await get_writer().close()


@pytest.fixture(params=["in-process", "redis"])
def either_redis(request: pytest.FixtureRequest) -> Iterator[None]:
    """The test runs twice: on the in-process Redis (``make run``), and with REDIS_URL set
    to the session's redis-server."""
    if request.param == "in-process":
        yield
        return
    redis_server = request.getfixturevalue("redis_server")
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (tests that break Redis start their own)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    """Three daphne workers, one Redis, one SQLite file, shared by the multi-worker tests."""
    started = Cluster(redis_server, workers=3)
    started.tokens = started.mint_tokens(*CLUSTER_USERS)
    yield started
    started.stop()


CLUSTER_USERS = tuple(f"user{i}" for i in range(12))


def _cluster_twin(**options: Any) -> Iterator[Cluster]:
    """A twin of `cluster` (three workers, the same users) with ``options``, and a Redis of
    its own: pub/sub channels and presence are keyed by room id, and every database hands
    out the same ids."""
    redis = RedisServer()
    started = Cluster(redis, workers=3, **options)
    started.tokens = started.mint_tokens(*CLUSTER_USERS)
    yield started
    started.stop()
    redis.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL for the session; each cluster gets a database of its own."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_cluster(postgres_server: PostgresServer) -> Iterator[Cluster]:
    """The `cluster` fixture's twin on PostgreSQL."""
    yield from _cluster_twin(env={"DATABASE_URL": postgres_server.create_database("cluster")})


@pytest.fixture(scope="session")
def uvicorn_cluster() -> Iterator[Cluster]:
    """The `cluster` fixture's twin served by uvicorn (WEB_SERVER=uvicorn)."""
    yield from _cluster_twin(server="uvicorn")


@pytest.fixture(scope="session")
def granian_cluster() -> Iterator[Cluster]:
    """The `cluster` fixture's twin served by granian (WEB_SERVER=granian)."""
    yield from _cluster_twin(server="granian")
