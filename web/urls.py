from django.urls import path, re_path

from web import views

urlpatterns = [
    path("", views.index, name="index"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("assistant/", views.assistant, name="assistant"),
    path("tasks/<int:task_id>/", views.task, name="task"),
    re_path(r"^static/(?P<path>.+)$", views.static_file),
]
