"""How the tasks modules depend on each other: the runner and the backend use the
services; the services use neither, not even through an import inside a function."""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tasks", "core", "accounts", "notifications", "chat", "streaming")


@pytest.mark.parametrize("upper", ["tasks.runner", "tasks.backend", "tasks.views"])
def test_services_import_nothing_that_imports_them(graph, upper):
    assert graph.find_shortest_chain(importer="tasks.services", imported=upper) is None, f"tasks.services reaches {upper}"


def test_the_runner_does_not_import_the_backend(graph):
    assert graph.find_shortest_chain(importer="tasks.runner", imported="tasks.backend") is None
    assert graph.direct_import_exists(importer="tasks.runner", imported="tasks.services")
