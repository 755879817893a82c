from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from core.errors import HTTP_STATUS, DomainError
from core.http import api_view


def domain_error_response(error: DomainError):
    """What an API view that raises ``error`` answers."""

    @api_view("GET", login_required=False)
    def view(request):
        raise error

    return view(RequestFactory().get("/api/x"))


class RoomGoneError(DomainError):
    kind = "not_found"


def test_a_subclass_names_its_kind_and_rest_answers_with_its_status():
    response = domain_error_response(RoomGoneError("no_such_room", "no room called x"))
    assert response.status_code == 404
    assert json.loads(response.content) == {"error": {"code": "no_such_room", "detail": "no room called x"}}


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (1.5, "2"), (30, "30")])
def test_retry_after_is_whole_seconds_rounded_up(retry_after, header):
    response = domain_error_response(DomainError("busy", "try later", kind="rate_limited", retry_after=retry_after))
    assert response.status_code == 429
    assert response["Retry-After"] == header


def test_without_retry_after_there_is_no_header():
    assert not domain_error_response(DomainError("invalid", "bad")).has_header("Retry-After")


def test_every_kind_has_a_client_error_or_unavailable_status():
    assert all(400 <= status < 500 or status == 503 for status in HTTP_STATUS.values())
