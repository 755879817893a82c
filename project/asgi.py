"""ASGI entry point: ``daphne project.asgi:application`` is one web worker.

http -> Django; websocket -> Origin check and authentication (one layer) -> routes.
"""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_asgi_application()  # set up Django before importing consumers

if "daphne.server" in sys.modules:  # daphne imports its server before the application
    from project import daphne_limits

    daphne_limits.install()  # flow control for stalled readers, the idle time-out (slowloris)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import WebSocketAuthMiddleware  # noqa: E402
from project.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
