from django.urls import path

from notifications import views

urlpatterns = [
    path("notifications/", views.notification_list),
    path("notifications/read", views.notification_read),
    path("notifications/stream", views.notification_stream),
]
