from django.urls import path

from chat import api

urlpatterns = [
    path("rooms/", api.rooms),
    path("rooms/<str:slug>/messages", api.room_messages),
    path("rooms/<str:slug>/messages/<int:message_id>", api.room_message),
]
