"""What authenticated a long-lived connection, and whether it still would.

Sockets, SSE responses and the generations they start are authenticated once, when
they begin. A ``Credential`` remembers what did it (a bearer token, or a browser
session), so that when the user's credentials change the ones that outlive their
request can ask again (docs/protocol.md, "Connections and credentials").
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest

from accounts.models import ApiToken


@dataclass(frozen=True, slots=True)
class Credential:
    user_id: int
    token_id: int | None = None  # an accounts.ApiToken
    session_key: str | None = None  # a browser session


def credential_for_request(request: HttpRequest, *, user_id: int) -> Credential:
    """The credential that authenticated ``request`` (set by accounts.middleware)."""
    token_id = getattr(request, "api_token_id", None)
    if token_id is not None:
        return Credential(user_id=user_id, token_id=token_id)
    session = getattr(request, "session", None)
    return Credential(user_id=user_id, session_key=session.session_key if session is not None else None)


class _SessionOnly:
    """What django.contrib.auth.get_user needs of a request: its session."""

    def __init__(self, session: Any) -> None:
        self.session = session


def credential_valid(*, credential: Credential) -> bool:
    """Whether the credential would authenticate its user now (queries the database).

    A token: not revoked, its user active. A session: it still exists and Django still
    accepts it for that user (active, and the password hash it was made with is
    current, as django.contrib.auth.get_user checks on every request)."""
    if credential.token_id is not None:
        return ApiToken.objects.filter(
            pk=credential.token_id, user_id=credential.user_id, revoked_at__isnull=True, user__is_active=True
        ).exists()
    if credential.session_key is None:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(credential.session_key)
    user = get_user(_SessionOnly(session))  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.pk == credential.user_id)


def credentials_invalid(*, credentials: set[Credential]) -> set[Credential]:
    """Those of ``credentials`` that no longer authenticate their user (tokens in one query)."""
    tokens = {c.token_id for c in credentials if c.token_id is not None}
    valid_tokens = set(
        ApiToken.objects.filter(pk__in=tokens, revoked_at__isnull=True, user__is_active=True).values_list("pk", flat=True)
    )
    invalid = {c for c in credentials if c.token_id is not None and c.token_id not in valid_tokens}
    invalid |= {c for c in credentials if c.token_id is None and not credential_valid(credential=c)}
    return invalid
