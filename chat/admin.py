from django.contrib import admin

from chat.models import Ban, Message, Mute, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "locked", "created_at"]
    search_fields = ["slug", "title"]
    list_filter = ["locked"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "user", "content", "created_at", "removed_at"]
    list_filter = ["room", "created_at"]
    search_fields = ["content", "user__username", "room__slug"]
    raw_id_fields = ["user", "room", "removed_by"]
    readonly_fields = ["created_at"]


@admin.register(Ban, Mute)
class SanctionAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "reason", "created_at", "ends_at", "lifted_at"]
    raw_id_fields = ["user", "room", "created_by"]
