from django.urls import path

from chat import api

urlpatterns = [
    path("rooms/", api.rooms),
    path("rooms/<str:slug>/messages", api.room_messages),
    path("rooms/<str:slug>/messages/<int:message_id>", api.room_message),
    path("rooms/<str:slug>/messages/<int:message_id>/report", api.message_report),
    path("rooms/<str:slug>/messages/<int:message_id>/restore", api.message_restore),
    path("rooms/<str:slug>/messages/<int:message_id>/reactions/<str:emoji>", api.message_reaction),
    # Private rooms and direct messages (docs/protocol.md, "Other endpoints").
    path("rooms/<str:slug>/members", api.room_members),
    path("rooms/<str:slug>/members/<str:username>", api.room_member),
    path("rooms/<str:slug>/read", api.room_read),
    path("dms/", api.direct_messages),
    # Staff only (docs/protocol.md, "Moderation").
    path("rooms/<str:slug>/lock", api.room_lock),
    path("rooms/<str:slug>/notice", api.room_notice),
    path("moderation/bans", api.bans),
    path("moderation/bans/<int:ban_id>", api.ban),
    path("moderation/mutes", api.mutes),
    path("moderation/mutes/<int:mute_id>", api.mute),
]
