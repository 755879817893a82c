"""Test-session environment, set before Django reads its settings."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-secret")
os.environ.pop("REDIS_URL", None)  # in-process layer unless a test starts its own Redis
os.environ.setdefault("WS_HEARTBEAT_SECONDS", "20")
