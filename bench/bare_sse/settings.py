"""Minimal Django settings for the bare SSE peer: no apps, no middleware, no database, no auth, no log."""

SECRET_KEY = "bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bare_sse.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"handlers": [], "level": "WARNING"}}
