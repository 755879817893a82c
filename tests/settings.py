"""Settings for the in-process tests: the project's, with a test environment first."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-secret")
os.environ.pop("REDIS_URL", None)  # the in-process layer; multi-worker tests start their own Redis

from project.settings import *  # noqa: F403
