"""Response headers that harden the pages (docs/security.md): the Content-Security-Policy
on HTML, and Django's own nosniff, framing and referrer headers everywhere."""

from __future__ import annotations

import pytest
from django.test import Client

from core.security_headers import CONTENT_SECURITY_POLICY
from tests.support.factories import make_token, make_user

pytestmark = pytest.mark.django_db


def test_html_pages_carry_the_policy_and_cannot_be_framed():
    browser = Client()
    browser.force_login(make_user())
    for path in ("/", "/assistant/", "/accounts/login/", "/admin/login/", "/rooms/no-such-room/"):
        response = browser.get(path)
        assert response["Content-Type"].startswith("text/html"), path
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff", path
        assert response["Referrer-Policy"] == "same-origin", path
    for directive in ("script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "unsafe-eval" not in CONTENT_SECURITY_POLICY


def test_json_is_never_sniffed_as_html_or_script():
    """User text comes back inside JSON; nosniff stops a browser from rendering or running it."""
    script = Client(headers={"Authorization": f"Bearer {make_token(make_user())}"})
    for path in ("/api/rooms/", "/api/rooms/no-such-room/messages", "/v1/models"):
        response = script.get(path)
        assert response["Content-Type"].startswith("application/json"), path
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert "Content-Security-Policy" not in response, "the policy is for pages"
