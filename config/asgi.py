"""ASGI entry point: ``daphne config.asgi:application`` is one web worker.

http -> Django; websocket -> Origin check and authentication (one layer) -> routes.
"""

import os
import sys

import django

from core import memtrace, servers
from core.env import ImproperlyConfiguredError

# Asked before Django's set-up (core.servers.detect says why).
SERVER = servers.detect()
# Heap snapshots on SIGUSR2, only with TRACEMALLOC_SNAPSHOT_DIR and tracing on (core.memtrace).
memtrace.install_from_env()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
try:
    django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application; before importing consumers
except ImproperlyConfiguredError as error:  # a variable missing or malformed: one line naming it, no traceback
    sys.exit(f"config.asgi: {error}")

from core.middleware import ASGIHandler  # noqa: E402

# Django's handler, running Django's middlewares without thread hops (core.middleware says how).
django_application = ASGIHandler()

# Bounds on stalled readers and slow clients, for the server we run under (core.servers).
http_application = servers.guard_http(django_application, SERVER)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import authenticated  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

routes = {
    "http": http_application,
    # Routed first, then the Origin check and authentication of each route's socket
    # (accounts.middleware.authenticated): the consumer's scope is the one dict it shrinks.
    "websocket": URLRouter(authenticated(websocket_urlpatterns)),
}
# The drain on SIGTERM, where the server has a lifespan (uvicorn, granian; daphne's is patched in).
lifespan = servers.lifespan(SERVER)
if lifespan is not None:
    routes["lifespan"] = lifespan
# The client's address from the proxy's X-Forwarded-For, where the server leaves it to us (granian).
application = servers.proxy_headers(ProtocolTypeRouter(routes), SERVER)
