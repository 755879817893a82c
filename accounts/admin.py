from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken
from accounts.services import token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are minted with `manage.py mint_token` and revoked with the action, for
    everyone, superusers included: revocation set by hand would skip token_revoke (the
    open connections would stay) and clearing it would bring a revoked token back.

    chat.admin replaces this with a subclass whose action also writes the moderation log."""

    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A deleted row would end no connection the token opened: revoke it instead.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.revoke_apitoken")

    def revoke_one(self, request: HttpRequest, token: ApiToken) -> bool:
        return token_revoke(token=token)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = sum(self.revoke_one(request, token) for token in queryset)
        self.message_user(request, f"Revoked {revoked} token{'' if revoked == 1 else 's'}.", messages.SUCCESS)
