from django.urls import path, re_path

from streaming import conversations_api, views
from streaming.openai import views as openai_views
from streaming.responses import views as responses_views

STREAM_ID = r"(?P<stream_id>[0-9a-f]{32})"
RESPONSE_ID = r"(?P<response_id>resp_[0-9a-f]{32})"

api_urlpatterns = [
    path("assistant/stream", views.assistant_stream),
    re_path(rf"^streams/{STREAM_ID}/events$", views.stream_events),
    re_path(rf"^streams/{STREAM_ID}/cancel$", views.stream_cancel),
    path("conversations/", conversations_api.conversations),
    path("conversations/<uuid:conversation_id>", conversations_api.conversation),
]

openai_urlpatterns = [
    path("chat/completions", openai_views.chat_completions),
    path("models", openai_views.models),
    path("models/<path:model_id>", openai_views.model),
    path("responses", responses_views.responses),
    re_path(rf"^responses/{RESPONSE_ID}$", responses_views.response),
    re_path(rf"^responses/{RESPONSE_ID}/cancel$", responses_views.response_cancel),
]
