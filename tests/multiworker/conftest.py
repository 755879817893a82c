from __future__ import annotations

import pytest

from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker

_DB_CLUSTERS = {"sqlite": "cluster", "postgres": "pg_cluster", "uvicorn": "uvicorn_cluster"}


@pytest.fixture(params=list(_DB_CLUSTERS))
def db_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The shared three-worker cluster on SQLite, its twin on PostgreSQL, and its twin
    served by uvicorn: for the tests that must hold on both databases (DATABASE_URL
    decides, docs/protocol.md, "Other endpoints") and under both web servers (WEB_SERVER)."""
    return request.getfixturevalue(_DB_CLUSTERS[request.param])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the workers' logs to the report."""
    report = yield
    if report.when == "call" and report.failed:
        for name, started in item.funcargs.items():
            if isinstance(started, Cluster):
                report.sections.append((f"{name} worker logs", started.logs()))
    return report
