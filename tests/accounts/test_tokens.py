import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import ApiToken
from accounts.services import token_create, token_hash, token_revoke, user_for_token
from chat.models import ModerationAction
from chat.services.moderation import moderator_make
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


def test_tokens_are_stored_hashed_and_revocable():
    user = make_user()
    token, raw = token_create(user=user)
    assert raw not in {token.token_hash, token.prefix} and token.token_hash == token_hash(raw)
    assert not ApiToken.objects.filter(token_hash=raw).exists()
    assert user_for_token(raw=raw) == user
    token_revoke(token=token)
    assert user_for_token(raw=raw) is None


def test_inactive_users_and_forged_tokens_are_nobody():
    user = make_user()
    _, raw = token_create(user=user)
    assert user_for_token(raw=raw + "x") is None
    assert user_for_token(raw="not-even-the-prefix") is None
    user.is_active = False
    user.save()
    assert user_for_token(raw=raw) is None


def test_mint_token_prints_a_working_token_last(capsys):
    call_command("mint_token", "carol", "--create", "--staff")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    user = user_for_token(raw=raw)
    assert user is not None and user.get_username() == "carol" and user.is_staff
    with pytest.raises(Exception, match="no user"):
        call_command("mint_token", "nobody")


def test_admin_lists_tokens_without_secrets_and_revokes_them():
    admin = make_user("root", staff=True)
    admin.is_superuser = True
    admin.save()
    token, raw = token_create(user=admin)
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/accounts/apitoken/")
    assert page.status_code == 200 and token.prefix in page.content.decode() and raw not in page.content.decode()
    client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None


def bearer_status(raw: str) -> int:
    return Client().get("/api/rooms/", headers={"Authorization": f"Bearer {raw}"}).status_code


def test_a_moderator_revokes_with_the_action_logged_and_cannot_unrevoke_by_editing():
    moderator = make_user("mod")
    moderator_make(user=moderator)
    alice = make_user("alice")
    token, raw = token_create(user=alice)
    client = Client()
    client.force_login(moderator)
    assert bearer_status(raw) == 200
    response = client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    assert bearer_status(raw) == 401
    entry = ModerationAction.objects.get()
    assert (entry.action, entry.actor, entry.target_user) == ("token_revoke", moderator, alice)
    # The attack: clear "revoked at" in the change form and save.
    response = client.post(f"/admin/accounts/apitoken/{token.pk}/change/", {"name": "", "revoked_at_0": "", "revoked_at_1": ""})
    assert response.status_code == 403, "moderators may view and revoke tokens, not change them"
    assert bearer_status(raw) == 401
    assert client.get(f"/admin/accounts/apitoken/{token.pk}/change/").status_code == 200, "view-only"


def test_nobody_edits_a_tokens_revocation_or_deletes_it_in_the_admin_not_even_a_superuser():
    root = make_user("root", staff=True)
    root.is_superuser = True
    root.save()
    alice = make_user("alice")
    token, raw = token_create(user=alice, name="laptop")
    token_revoke(token=token)
    client = Client()
    client.force_login(root)
    form = {"name": "renamed", "user": str(root.pk), "revoked_at_0": "", "revoked_at_1": ""}
    response = client.post(f"/admin/accounts/apitoken/{token.pk}/change/", form)
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.user, token.revoked_at is not None) == ("renamed", alice, True)
    assert bearer_status(raw) == 401
    # Deleting would end none of the connections the token opened: revoke instead.
    assert client.post(f"/admin/accounts/apitoken/{token.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_signup_login_and_logout_pages():
    client = Client()
    assert client.get("/accounts/signup/").status_code == 200
    response = client.post(
        "/accounts/signup/", {"username": "dora", "password1": "a-long-Passphrase-9", "password2": "a-long-Passphrase-9"}
    )
    assert response.status_code == 302
    assert client.get("/").context["user"].username == "dora"
    client.post("/accounts/logout/")
    assert not client.get("/").context["user"].is_authenticated
    assert client.post("/accounts/login/", {"username": "dora", "password": "a-long-Passphrase-9"}).status_code == 302
