"""Settings for the in-process tests: the project's, with a test environment first."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-secret")
# The in-process layer; multi-worker tests start their own Redis.
os.environ.pop("REDIS_URL", None)
os.environ.pop("REDIS_URLS", None)
os.environ.pop("REDIS_SENTINELS", None)
os.environ.pop("REDIS_CLUSTER_URL", None)

from config.settings import *  # noqa: F403

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's shared-cache in-memory database: the consumers' threads and the
    # message writer's thread then lock the way they do in production (WAL, busy timeout)
    # instead of failing with "table is locked".
    import tempfile

    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"rooms-test-{os.getpid()}.sqlite3")}  # noqa: F405
