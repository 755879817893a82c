"""The signed-in user's conversations with the assistant, for the /assistant/ page's sidebar.

GET /api/conversations/ -> {"conversations":[{"id","title","created_at","updated_at"}]}, newest first;
GET /api/conversations/<id> -> the same object plus "messages":[{"role","content","finish_reason","stream_id","created_at"}].
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest, HttpResponse, JsonResponse

from core.http import ApiError, api_view, signed_in_user
from streaming.models import Conversation

# The sidebar shows this many; older conversations stay stored.
LIST_LIMIT = 100


def conversation_object(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


@api_view("GET")
def conversations(request: HttpRequest) -> HttpResponse:
    mine = Conversation.objects.filter(owner=signed_in_user(request)).order_by("-updated_at")[:LIST_LIMIT]
    return JsonResponse({"conversations": [conversation_object(c) for c in mine]})


@api_view("GET")
def conversation(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    found = Conversation.objects.filter(pk=conversation_id, owner=signed_in_user(request)).first()
    if found is None:
        raise ApiError(404, "not_found", "no such conversation")
    messages = [
        {
            "role": m.role,
            "content": m.content,
            "finish_reason": m.finish_reason or None,
            "stream_id": m.stream_id or None,
            "created_at": m.created_at.isoformat(),
        }
        for m in found.messages.all()
    ]
    return JsonResponse({**conversation_object(found), "messages": messages})
