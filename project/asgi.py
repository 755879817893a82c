"""ASGI entry point: ``daphne project.asgi:application`` is one web worker.

http -> Django; websocket -> Origin check -> session auth -> bearer auth -> routes.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_asgi_application()  # set up Django before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import WebSocketBearerMiddleware  # noqa: E402
from project.origin import OriginValidator  # noqa: E402
from project.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": OriginValidator(AuthMiddlewareStack(WebSocketBearerMiddleware(URLRouter(websocket_urlpatterns)))),
    }
)
