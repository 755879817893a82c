from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from accounts import backends as login_throttle
from chat import presence, ratelimit
from tests.processes import Cluster, PostgresServer, RedisServer

# Property tests (tests/**/test_*_properties.py): a bounded number of examples, the same
# ones on every run (derandomize), and no example database; hypothesis's other caches
# (unicode tables) go to the temporary directory, not to a .hypothesis in the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "hypothesis-rooms"))
hypothesis_settings.register_profile("project", max_examples=150, deadline=None, database=None, derandomize=True)
hypothesis_settings.load_profile("project")


@pytest.fixture(autouse=True)
def _fresh_in_process_state() -> Iterator[None]:
    """In-process presence and rate-limit state does not leak between tests."""
    presence.reset_local_state()
    ratelimit.reset_local_state()
    login_throttle.reset_local_state()
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
    started.tokens = started.mint_tokens(*(f"user{i}" for i in range(12)))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL for the session; each cluster gets a database of its own."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_cluster(postgres_server: PostgresServer) -> Iterator[Cluster]:
    """The `cluster` fixture's twin on PostgreSQL, with the same users.

    It has a Redis of its own: pub/sub channels and presence are keyed by room id, and
    the two databases hand out the same ids."""
    redis = RedisServer()
    started = Cluster(redis, workers=3, env={"DATABASE_URL": postgres_server.create_database("cluster")})
    started.tokens = started.mint_tokens(*(f"user{i}" for i in range(12)))
    yield started
    started.stop()
    redis.stop()


@pytest.fixture(scope="session")
def uvicorn_cluster() -> Iterator[Cluster]:
    """The `cluster` fixture's twin served by uvicorn (WEB_SERVER=uvicorn), with the same
    users, and a Redis of its own (its database hands out the same room ids)."""
    redis = RedisServer()
    started = Cluster(redis, workers=3, server="uvicorn")
    started.tokens = started.mint_tokens(*(f"user{i}" for i in range(12)))
    yield started
    started.stop()
    redis.stop()
