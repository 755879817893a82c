"""Open room sockets re-authenticate when their user's credentials change.

Authentication happens at the handshake, so a socket opened with a token that is then
revoked, or by a session that then logs out, changes its password or whose account is
deactivated, would stay open. On any of those, every room socket of that user, on every
worker, is closed with 4011: clients reconnect, and the handshake decides again (4001
when no valid credential is left). Connected from ChatConfig.ready().
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save
from django.http import HttpRequest

from accounts.signals import credentials_changed
from chat import events, protocol


def _reauthenticate(user_id: int) -> None:
    events.user_close_on_commit(user_id=user_id, code=protocol.CLOSE_REAUTHENTICATE, room_id=None)


def on_credentials_changed(*, user_id: int, **kwargs: Any) -> None:
    _reauthenticate(user_id)


def on_logged_out(*, request: HttpRequest, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        _reauthenticate(user.pk)


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
        _reauthenticate(instance.pk)


def connect() -> None:
    credentials_changed.connect(on_credentials_changed, dispatch_uid="chat.credentials_changed")
    user_logged_out.connect(on_logged_out, dispatch_uid="chat.user_logged_out")
    pre_save.connect(before_user_save, sender=User, dispatch_uid="chat.before_user_save")
    post_save.connect(after_user_save, sender=User, dispatch_uid="chat.after_user_save")
