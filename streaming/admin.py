from django.contrib import admin

from streaming.models import Conversation, ConversationMessage


class ConversationMessageInline(admin.TabularInline):
    model = ConversationMessage
    extra = 0
    readonly_fields = ["role", "content", "finish_reason", "stream_id", "prompt_tokens", "completion_tokens", "created_at"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "title", "created_at", "updated_at"]
    search_fields = ["owner__username", "title"]
    raw_id_fields = ["owner"]
    inlines = [ConversationMessageInline]
