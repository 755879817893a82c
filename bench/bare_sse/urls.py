from django.urls import path

from bare_sse.views import assistant_stream

urlpatterns = [path("api/assistant/stream", assistant_stream)]
