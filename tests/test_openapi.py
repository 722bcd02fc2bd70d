"""/openapi.json is built from the routes: every route has its operation, every
operation its route, and the document says which ones need a token as the app does."""

from __future__ import annotations

import re

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from gateway.api.openapi import UndocumentedRoute, build_spec

# Not operations of the API: Flask's own file route, and the document itself.
NOT_API = {"static", "openapi.spec"}
METHODS = ("get", "post", "put", "patch", "delete")


def documented(app) -> set[tuple[str, str]]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200, response.get_json()  # UndocumentedRoute is logged
    document = response.get_json()
    return {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}


def routed(app) -> set[tuple[str, str]]:
    return {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in NOT_API and not rule.endpoint.startswith("console.")  # pages, not the API
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_every_route_is_documented_and_every_operation_is_routed(make_app):
    app = make_app()
    assert documented(app) == routed(app)
    urls = app.url_map.bind("localhost")
    for path, method in documented(app):
        try:
            urls.match(path.replace("{task_id}", "task-1"), method=method.upper())
        except (NotFound, MethodNotAllowed):
            pytest.fail(f"{method.upper()} {path} is in /openapi.json but no route answers it")


def test_a_route_without_an_operation_stops_the_document(make_app):
    app = make_app()
    app.add_url_rule("/v1/extra", "extra", lambda: "")
    with app.app_context(), pytest.raises(UndocumentedRoute, match="/v1/extra"):
        build_spec(app)


def test_operations_need_a_token_exactly_where_the_document_says(make_app):
    app = make_app(API_TOKENS={"a-token-of-some-length-0123": "tenant-a"})
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            response = client.open(path.replace("{task_id}", "task-1"), method=method.upper())
            assert (response.status_code == 401) == ("security" in operation), (method, path, response.status_code)
