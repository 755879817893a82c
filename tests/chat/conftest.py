"""Fixtures of chat's tests."""

import pytest

from core import broker


@pytest.fixture
def published(monkeypatch):
    """Everything the services publish, as (topic, data) pairs (notifications included)."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(broker, "publish", lambda topic, data: sent.append((topic, data)))
    monkeypatch.setattr(broker, "publish_many", sent.extend)
    return sent
