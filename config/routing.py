from django.urls import re_path

from chat.consumers import RoomConsumer
from streaming.consumers import AssistantConsumer

websocket_urlpatterns = [
    re_path(r"^ws/rooms/(?P<slug>[a-z0-9-]{1,50})/$", RoomConsumer.as_asgi()),
    re_path(r"^ws/assistant/$", AssistantConsumer.as_asgi()),
]
