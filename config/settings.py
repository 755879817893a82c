"""Django settings. Every value comes from the environment through core.env.

See docs/configuration.md for the variables and their defaults.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers

from core.env import ImproperlyConfiguredError, env_bool, env_float, env_int, env_list, env_optional, env_optional_int, env_str
from core.redis_config import redis_shards

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
# A fixed development key is only acceptable when DEBUG is on; production must set one.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-insecure-key-change-me") if DEBUG else env_str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# ---- HTTPS, behind the proxy (docs/deployment.md) -----------------------------------
# DJANGO_HTTPS=1: the site is served over HTTPS, TLS ending at the proxy in front of the
# workers. Off by default, so that plain-http local runs (make run, make serve) work.
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
# The proxy overwrites X-Forwarded-Proto with its own scheme on every request
# (deploy/nginx.conf.template) and the workers are reachable only through it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
# Health checks and metrics scrapers talk to a worker directly, over plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
# security.W005 and W021 ask for HSTS includeSubDomains and preload. Both bind every
# subdomain of the domain to HTTPS (preload: for good, in browsers' built-in lists), a
# decision about the whole domain that this application cannot make for its owner; they
# are opt-in above, and their checks are silenced only while they are off.
SILENCED_SYSTEM_CHECKS = [
    check
    for check, enabled in (("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS), ("security.W021", SECURE_HSTS_PRELOAD))
    if not enabled
]

INSTALLED_APPS = [
    # daphne first, before staticfiles, so that `runserver` serves ASGI (WebSocket, SSE).
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "accounts",
    "chat",
    "streaming",
    "notifications",
    "django_tasks",  # Django's task API (django.tasks from Django 6): its checks and signals
    "tasks",
    "room_assistant",
    "web",
]

MIDDLEWARE = [
    # First, so that every answer under /api/ and /v1/ gets its CORS headers, errors too.
    "corsheaders.middleware.CorsMiddleware",
    # Outside ApiErrorMiddleware, so the JSON errors it substitutes get nosniff and HSTS too.
    # Django's own middleware, by the dotted paths its deploy and admin checks look for; on
    # async requests our ASGI handler runs them without a thread hop (core.middleware.ASGIHandler).
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.ApiErrorMiddleware",
    "core.security_headers.ContentSecurityPolicyMiddleware",  # HTML pages only (docs/security.md)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After the session's user is set, so a bearer token overrides it; CSRF is
    # checked later, in process_view, so the exemption it sets still counts.
    "accounts.middleware.BearerTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Under /api/ and /v1/ a CSRF failure is a JSON error that says what to send.
CSRF_FAILURE_VIEW = "ops.views.csrf_failure"
ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several daphne workers share one SQLite file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock at BEGIN (no lock-upgrade deadlocks between
    # processes) and the busy timeout makes a writer wait its turn instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Password logins fail for a username after LOGIN_MAX_FAILURES wrong passwords within
# LOGIN_FAILURE_WINDOW_SECONDS (accounts/backends.py): ten guesses per quarter hour.
AUTHENTICATION_BACKENDS = ["accounts.backends.ThrottledModelBackend"]
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 10, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env_float("LOGIN_FAILURE_WINDOW_SECONDS", 900.0, minimum=1.0)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# ---- Redis and the channel layer -------------------------------------------------
# One Redis (REDIS_URL), several shards (REDIS_URLS, comma-separated), or masters found
# through Sentinel (REDIS_SENTINELS=host:port,... and REDIS_SENTINEL_MASTERS=name,...,
# one shard per master), or a Redis Cluster (REDIS_CLUSTER_URL, any one node: the client
# finds the rest). Set one of the four; none keeps everything in process.
REDIS_URL = env_optional("REDIS_URL")
REDIS_URLS = env_list("REDIS_URLS", [])
REDIS_CLUSTER_URL = env_list("REDIS_CLUSTER_URL", [])
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTERS = env_list("REDIS_SENTINEL_MASTERS", [])
REDIS_SHARDS = redis_shards(
    url=REDIS_URL,
    urls=REDIS_URLS,
    cluster_url=REDIS_CLUSTER_URL,
    sentinels=REDIS_SENTINELS,
    sentinel_masters=REDIS_SENTINEL_MASTERS,
    sentinel_db=env_int("REDIS_SENTINEL_DB", 0, minimum=0),
    password=env_optional("REDIS_PASSWORD"),
    sentinel_password=env_optional("REDIS_SENTINEL_PASSWORD"),
)
# redis-py 8 defaults socket_timeout to 5 s, the same as channels_redis' BZPOPMIN
# timeout, so idle readers die every 5 s (channels_redis#422). Commands get an explicit
# timeout well above any blocking call we make; the broker's subscriber connection
# sets its own (none, with health checks) in core/broker.py.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 10.0, minimum=1.0)
# Our channel layer (core/layer.py), for our consumers and for any code's group_send: over
# the Redis servers above when they are set (shards and Sentinel included), in process
# without them (one process only, like Channels' InMemoryChannelLayer).
CHANNEL_LAYERS = {"default": {"BACKEND": "core.layer.RealtimeChannelLayer"}}

# ---- Chat ------------------------------------------------------------------------
CHAT_RATE_LIMIT = env_int("CHAT_RATE_LIMIT", 20, minimum=1)
CHAT_RATE_WINDOW = env_float("CHAT_RATE_WINDOW", 10.0, minimum=0.001)
CHAT_MAX_CONNECTIONS_PER_USER = env_int("CHAT_MAX_CONNECTIONS_PER_USER", 10, minimum=1)
# How long an author may edit a message (staff: any time); docs/protocol.md, "Room changes".
CHAT_EDIT_WINDOW_SECONDS = env_int("CHAT_EDIT_WINDOW_SECONDS", 3600, minimum=0)
# The emoji a message may be reacted with (comma-separated).
CHAT_REACTIONS = env_list(
    "CHAT_REACTIONS", ["\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f389", "\U0001f62e", "\U0001f622"]
)
# Assistant sockets and notification streams are capped per user across workers too
# (accounts/connections.py), so that one token cannot hold a worker's sockets and the
# database polls of many streams: a person has a few tabs open, the page opens one
# notification stream per tab, and scripts rarely need more than one assistant socket.
ASSISTANT_MAX_SOCKETS_PER_USER = env_int("ASSISTANT_MAX_SOCKETS_PER_USER", 5, minimum=1)
NOTIFICATIONS_MAX_STREAMS_PER_USER = env_int("NOTIFICATIONS_MAX_STREAMS_PER_USER", 10, minimum=1)
# A notification stream that has sent no notification for this long ends; EventSource
# reconnects by itself with Last-Event-ID and misses nothing, and a stream whose tab was
# left open for days does not hold its slot and its wake-up subscription for ever.
NOTIFICATIONS_STREAM_IDLE_SECONDS = env_float("NOTIFICATIONS_STREAM_IDLE_SECONDS", 300.0, minimum=1.0)
# Graceful drain on SIGTERM (core/drain.py): a worker's sockets are told to reconnect
# (close 1012) at random moments over this many seconds, so its clients arrive at the
# other workers spread out. 10 s: the default grace period of docker compose and
# Kubernetes is 10 s and 30 s; deployments give the process DRAIN_SECONDS plus a few.
# 0 closes every socket at once.
DRAIN_SECONDS = env_float("DRAIN_SECONDS", 10.0, minimum=0.0)
# Handshakes a worker admits per second (a token bucket with a burst as large); a
# handshake beyond waits up to WS_ADMIT_WAIT_SECONDS for its turn, else gets 1013 (try
# again later). A room handshake costs a worker a few milliseconds of CPU and database
# time (authentication, membership, the backlog): 200 a second keeps a drained worker's
# clients (10 s of them) from starving the rest of the survivor's work. 0: no limit.
WS_ADMIT_PER_SECOND = env_float("WS_ADMIT_PER_SECOND", 200.0, minimum=0.0)
# Below daphne's 5 s handshake time-out, so a waiting handshake is answered, not dropped.
WS_ADMIT_WAIT_SECONDS = env_float("WS_ADMIT_WAIT_SECONDS", 3.0, minimum=0.0)
# 20 s: below the 30-60 s idle time-outs of common proxies and load balancers
# (nginx proxy_read_timeout defaults to 60 s), so a quiet connection is never cut.
WS_HEARTBEAT_SECONDS = env_float("WS_HEARTBEAT_SECONDS", 20.0, minimum=0.2)
# 64 KiB is above the largest legal frame (4000 characters of content and a 64-character
# nonce: under 50 KB even with every character escaped in JSON as a surrogate pair,
# "\ud83d\ude00") and small enough that a flood of them cannot exhaust memory
# (docs/protocol.md, "Frames from the client"). The web server's own limit is higher
# (1 MiB under daphne, 16 MiB under uvicorn); past it the socket is closed with 1009.
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 64 * 1024, minimum=1024)
# Slow and stalled HTTP clients under daphne (core/servers/daphne.py). A connection that
# sends nothing for HTTP_IDLE_TIMEOUT_SECONDS outside a running request is closed (half a
# request, slowloris, idle keep-alive): 20 s, as a real client sends its request at once.
# A client that takes nothing of a response for HTTP_SEND_TIMEOUT_SECONDS while 64 KiB
# wait for it is cut off (60 s, nginx's send_timeout): a reader that stalls cannot grow
# the worker's memory. SSE clients resume with Last-Event-ID.
HTTP_IDLE_TIMEOUT_SECONDS = env_float("HTTP_IDLE_TIMEOUT_SECONDS", 20.0, minimum=0.5)
HTTP_SEND_TIMEOUT_SECONDS = env_float("HTTP_SEND_TIMEOUT_SECONDS", 60.0, minimum=0.5)
# A room socket whose client stopped reading (core/servers: SocketFlow under daphne,
# Outbox under uvicorn) is closed with 4008 once its buffer has stayed full for WS_SEND_TIMEOUT_SECONDS, or sooner when
# WS_SEND_BUFFER_BYTES more piled up meanwhile (16 MiB: above the largest backlog burst,
# 1000 messages of 16 KiB), so it never blocks the room nor grows the worker's memory.
WS_SEND_TIMEOUT_SECONDS = env_float("WS_SEND_TIMEOUT_SECONDS", 30.0, minimum=0.5)
WS_SEND_BUFFER_BYTES = env_int("WS_SEND_BUFFER_BYTES", 16 * 1024 * 1024, minimum=64 * 1024)

# ---- Token streaming (see streaming/) ----------------------------------------------
LLM_BACKEND = env_str("LLM_BACKEND", "echo")
if LLM_BACKEND not in ("echo", "openai"):
    raise ImproperlyConfiguredError(f"environment variable LLM_BACKEND must be echo or openai, got {LLM_BACKEND!r}")
LLM_BASE_URL = env_str("LLM_BASE_URL", "https://api.openai.com/v1")
LLM_API_KEY = env_optional("LLM_API_KEY")
LLM_MODEL = env_str("LLM_MODEL", "echo")
LLM_TOKEN_DELAY_MS = env_int("LLM_TOKEN_DELAY_MS", 20, minimum=0)
LLM_ABANDON_SECONDS = env_float("LLM_ABANDON_SECONDS", 30.0, minimum=1.0)
LLM_TIMEOUT_SECONDS = env_float("LLM_TIMEOUT_SECONDS", 30.0, minimum=0.1)
LLM_MAX_CONCURRENT = env_int("LLM_MAX_CONCURRENT", 100, minimum=1)
# Per user, so that one account cannot hold every slot of LLM_MAX_CONCURRENT (a person
# reads a few replies at once; scripts that need more get their own setting).
LLM_MAX_CONCURRENT_PER_USER = env_int("LLM_MAX_CONCURRENT_PER_USER", 5, minimum=1)
LLM_TOKENS_PER_DAY = env_optional_int("LLM_TOKENS_PER_DAY", minimum=0)
# A reply ends with finish_reason "length" past this many characters, whatever max_tokens
# says: a reply lives in the producer's memory, the log and its done event, and the echo
# model repeating a 32,000-character word 100,000 times would be 3.2 GB. Real models stop
# far below (a 128k-token context is about half a million characters).
LLM_MAX_REPLY_CHARS = env_int("LLM_MAX_REPLY_CHARS", 1_000_000, minimum=1)
# What one token stream may write to its log (streaming.limits.stream_cap), which Redis keeps for ten
# minutes after the stream ends: 32,768 token events (above the 16,384-token output limit
# of common chat models; each event costs about 45 bytes besides its text) and 262,144
# characters (64 Ki tokens at four characters a token). The final event repeats the
# content, so a stream holds at most about 0.5 MB of ASCII text, 2 MB of emoji, plus
# 1.5 MB of event framing. A generation that reaches either cap ends with "length".
LLM_STREAM_MAX_EVENTS = env_int("LLM_STREAM_MAX_EVENTS", 32_768, minimum=1)
LLM_STREAM_MAX_CHARS = env_int("LLM_STREAM_MAX_CHARS", 262_144, minimum=1)

# ---- Tasks (see tasks/) ----------------------------------------------------------------
# `@task` functions and `.enqueue()`, as Django documents them, run in our runner (tasks.backend).
TASKS = {"default": {"BACKEND": "tasks.backend.RunnerBackend"}}
# Without Redis there is no task worker to hand tasks to: the web process runs them.
TASKS_IN_PROCESS = env_bool("TASKS_IN_PROCESS", not REDIS_SHARDS)
TASK_CONCURRENCY = env_int("TASK_CONCURRENCY", 16, minimum=1)
# Queued plus running tasks per user (429 busy beyond): well below a runner's
# concurrency, so that one account's long tasks never take every slot.
TASKS_MAX_ACTIVE_PER_USER = env_int("TASKS_MAX_ACTIVE_PER_USER", 4, minimum=1)
# Tasks created per user in any 60 s (429 rate_limited beyond): a person starts a few a
# minute; every task is a row kept for ever and a log Redis keeps ten minutes, so without
# it a loop of one-step countdowns grows both as fast as the server answers.
TASKS_PER_MINUTE_PER_USER = env_int("TASKS_PER_MINUTE_PER_USER", 30, minimum=1)

# ---- Operations -------------------------------------------------------------------
METRICS_TOKEN = env_optional("METRICS_TOKEN")
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
# django-cors-headers, for the API only: pages and the admin never answer other origins.
# Browser clients there authenticate with a bearer token, never cookies, so credentials
# stay off; Last-Event-ID lets an EventSource polyfill resume a stream across origins.
CORS_URLS_REGEX = r"^/(api|v1)/"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*cors_default_headers, "last-event-id")
CORS_EXPOSE_HEADERS = ["X-Stream-Id", "Retry-After"]
CORS_PREFLIGHT_MAX_AGE = 600

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
