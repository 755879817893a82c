"""Minimal Django settings for the bare peer: no database, no middleware, no auth, no checks.

BENCH_REDIS_URL  the private redis-server that bench/fanout.py started
BENCH_LAYER      pubsub (default): channels_redis RedisPubSubChannelLayer, as the project uses
                 core: channels_redis RedisChannelLayer
"""

import os

SECRET_KEY = "bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"handlers": [], "level": "WARNING"}}

_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
# Explicit socket_timeout: redis-py 8 defaults it to 5 s, which is also how long
# RedisChannelLayer's BZPOPMIN blocks, so idle consumers would die (channels_redis#422).
# 10 s is the project's own REDIS_SOCKET_TIMEOUT default.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _BACKENDS[os.environ.get("BENCH_LAYER", "pubsub")],
        "CONFIG": {"hosts": [{"address": os.environ["BENCH_REDIS_URL"], "socket_timeout": 10.0}]},
    }
}
