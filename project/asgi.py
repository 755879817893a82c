"""ASGI entry point: ``daphne project.asgi:application`` is one web worker.

http -> Django; websocket -> Origin check and authentication (one layer) -> routes.
"""

import os
import sys
from typing import Any

from django.core.asgi import get_asgi_application

from core.env import ImproperlyConfiguredError

# daphne's command line (and runserver) import its server before the application. Asked
# before Django's set-up, which imports daphne.server too (its app's system checks).
SERVED_BY_DAPHNE = "daphne.server" in sys.modules

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
try:
    django_application = get_asgi_application()  # set up Django before importing consumers
except ImproperlyConfiguredError as error:  # a variable missing or malformed: one line naming it, no traceback
    sys.exit(f"project.asgi: {error}")

if SERVED_BY_DAPHNE:
    from project import daphne_limits

    daphne_limits.install()  # flow control for stalled readers, the idle time-out (slowloris)
    http_application: Any = django_application
else:  # uvicorn: its send waits for a slow reader; a stalled one is cut off after a while
    from project.send_timeout import SendTimeoutMiddleware

    http_application = SendTimeoutMiddleware(django_application)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import WebSocketAuthMiddleware  # noqa: E402
from project.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
