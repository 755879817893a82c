from django.urls import path

from room_assistant import api

urlpatterns = [
    path("rooms/<str:slug>", api.room),
]
