"""ASGI entry of the bare peer: `daphne bare_channels.asgi:application` with bench/ on sys.path."""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "bare_channels.settings"

import django

django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bare_channels.consumers import RoomConsumer  # noqa: E402

application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/rooms/<slug:slug>/", RoomConsumer.as_asgi())])})
