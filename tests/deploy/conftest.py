from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the logs of the processes the test ran against."""
    report = yield
    if report.when == "call" and report.failed:
        started = item.funcargs.get("topology")
        if started is not None:
            report.sections.append(("topology logs (workers, nginx)", started.logs()))
    return report
