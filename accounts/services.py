"""Bearer tokens: minted, checked and revoked here only."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from accounts.connections import credentials_changed_on_commit
from accounts.models import ApiToken
from accounts.token_store import token_with_user

TOKEN_PREFIX = "rt_"
# Writing last_used_at on every request would turn every read into a write.
LAST_USED_PRECISION = timedelta(minutes=1)


def token_hash(raw: str) -> str:
    # A token has 256 random bits, so a fast unsalted hash is enough: nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Mint a token; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], token_hash=token_hash(raw))
    return token, raw


def token_revoke(*, token: ApiToken) -> bool:
    """Revoke the token; every connection it authenticated ends (accounts.connections).
    False if it was revoked already."""
    now = timezone.now()
    if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
        return False
    token.revoked_at = now
    credentials_changed_on_commit(user_id=token.user_id)
    return True


def user_for_token(*, raw: str) -> User | None:
    """The active user a raw token belongs to, or None."""
    token = token_authenticate(raw=raw)
    return token.user if token is not None else None


def token_authenticate(*, raw: str) -> ApiToken | None:
    """The valid token (its user active, selected with it) a raw token is, or None."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = token_with_user(token_hash=token_hash(raw))
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def user_get_or_create(*, username: str, create: bool, staff: bool) -> User:
    if create:
        user, _ = User.objects.get_or_create(username=username)
    else:
        user = User.objects.get(username=username)
    if staff and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return user


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
