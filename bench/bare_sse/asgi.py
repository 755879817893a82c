"""ASGI entry of the bare SSE peer: `daphne bare_sse.asgi:application` with bench/ on sys.path."""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "bare_sse.settings"

from django.core.asgi import get_asgi_application

application = get_asgi_application()
