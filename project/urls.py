from django.contrib import admin
from django.urls import include, path, re_path

from chat import pages
from ops import openapi, views
from streaming import urls as streaming_urls

# An exception while the database is down answers 503 "unavailable", not 500.
handler500 = "ops.views.server_error"

urlpatterns = [
    path("", pages.index, name="index"),
    path("rooms/<slug:slug>/", pages.room, name="room"),
    path("assistant/", pages.assistant, name="assistant"),
    path("tasks/<int:task_id>/", pages.task, name="task"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", openapi.schema_view),
    path("api/", include("chat.urls")),
    path("api/", include(streaming_urls.api_urlpatterns)),
    path("api/", include("tasks.urls")),
    path("api/", include("notifications.urls")),
    path("v1/", include(streaming_urls.openai_urlpatterns)),
    path("healthz", views.healthz),
    path("metrics", views.metrics),
    re_path(r"^static/(?P<path>.+)$", pages.static_file),
]
