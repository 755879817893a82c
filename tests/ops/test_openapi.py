"""The OpenAPI description stays true: every API route is described, nothing else is."""

import re

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver

from ops.openapi import PATHS


def routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


def as_openapi(route: str) -> str:
    """Django's route syntax (path converters or regex groups) as an OpenAPI path."""
    route = route.replace("^", "").replace("$", "")
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return "/" + route


def test_every_api_route_is_described_and_nothing_else():
    api_routes = {as_openapi(r) for r in routes(get_resolver().url_patterns) if r.startswith(("api/", "v1/"))}
    assert api_routes == set(PATHS), f"undocumented: {sorted(api_routes - set(PATHS))}; stale: {sorted(set(PATHS) - api_routes)}"


@pytest.mark.django_db
def test_the_schema_is_served_without_login():
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    body = response.json()
    assert body["openapi"].startswith("3.1") and set(body["paths"]) == set(PATHS)
    for path, operations in body["paths"].items():
        for method, operation in operations.items():
            assert method in {"get", "post", "put", "patch", "delete"}, (path, method)
            assert operation["summary"] and operation["responses"], (path, method)
