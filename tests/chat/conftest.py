"""Fixtures of chat's tests."""

import pytest
import pytest_asyncio

from chat.hub import get_hub
from chat.writer import get_writer
from core import broker


@pytest.fixture
def published(monkeypatch):
    """Everything the services publish, as (topic, data) pairs (notifications included)."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(broker, "publish", lambda topic, data: sent.append((topic, data)))
    monkeypatch.setattr(broker, "publish_many", sent.extend)
    return sent


@pytest_asyncio.fixture
async def close_hub():
    """The test's event loop's hub and writer are closed after it (socket tests through
    the ASGI stack start them): ``pytestmark = pytest.mark.usefixtures("close_hub")``."""
    yield
    await get_hub().close()
    await get_writer().close()
