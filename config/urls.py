from django.contrib import admin
from django.urls import include, path

from ops import openapi, views
from streaming import urls as streaming_urls

# An exception while the database is down answers 503 "unavailable", not 500.
handler500 = "ops.views.server_error"

urlpatterns = [
    # The pages (/, /rooms/<slug>/, /assistant/, /tasks/<id>/) and /static/.
    path("", include("web.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", openapi.schema_view),
    path("api/", include("chat.urls")),
    path("api/", include("room_assistant.urls")),
    path("api/", include(streaming_urls.api_urlpatterns)),
    path("api/", include("tasks.urls")),
    path("api/", include("notifications.urls")),
    path("v1/", include(streaming_urls.openai_urlpatterns)),
    path("healthz", views.healthz),
    path("metrics", views.metrics),
]
