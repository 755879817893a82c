"""Django's own credential events, as one "credentials changed" (accounts.connections).

Authentication happens when a connection opens, so a socket or SSE response opened with
a token that is then revoked, or by a session that then logs out, changes its password
or whose account is deactivated, would stay open. Token revocation calls
``credentials_changed_on_commit`` itself (accounts.services.token_revoke); log-outs,
password changes and deactivations are Django's signals and saves, turned into the same
call here. Connected from AccountsConfig.ready().
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save
from django.http import HttpRequest

from accounts.connections import credentials_changed_on_commit


def on_logged_out(*, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is None:
        return
    session = getattr(request, "session", None)
    if session is not None:
        # Django sends this signal before it flushes the session; a generation that
        # re-checks its session when told must find it gone, so it goes now (logout's own
        # flush then ends an empty session, which is harmless).
        session.flush()
    credentials_changed_on_commit(user_id=user.pk)


def before_user_save(*, instance: User, update_fields: frozenset[str] | None = None, **kwargs: Any) -> None:
    """Remember what the save changes that authentication depends on (one query, and
    none for saves that name other fields: a login's last_login)."""
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & update_fields):
        return
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    instance._credentials_changed = before is not None and (  # type: ignore[attr-defined]
        before["password"] != instance.password or (before["is_active"] and not instance.is_active)
    )


def after_user_save(*, instance: User, created: bool, **kwargs: Any) -> None:
    if not created and getattr(instance, "_credentials_changed", False):
        credentials_changed_on_commit(user_id=instance.pk)


def connect() -> None:
    user_logged_out.connect(on_logged_out, dispatch_uid="accounts.user_logged_out")
    pre_save.connect(before_user_save, sender=User, dispatch_uid="accounts.before_user_save")
    post_save.connect(after_user_save, sender=User, dispatch_uid="accounts.after_user_save")
