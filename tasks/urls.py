from django.urls import path

from tasks import views

urlpatterns = [
    path("tasks/", views.tasks),
    path("tasks/<int:task_id>", views.task_detail),
    path("tasks/<int:task_id>/events", views.task_events),
]
