"""docs/COMPATIBILITY.md stays true: its routes are exactly the routes served, its errors the mappings'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from multidict import MultiDict

from gateway import oauth_provider, passthrough
from gateway.app import create_app
from gateway.config import load_config
from gateway.dialects.base import Dialect, LegacyRequest, RouteSpec
from gateway.errors import ERROR_KINDS
from gateway.render.mapping import load_mapping
from gateway.router import DialectRouter

DOC = (Path(__file__).parent.parent / "docs" / "COMPATIBILITY.md").read_text("utf-8")


def _documented_routes() -> set[tuple[str, str]]:
    section = DOC.split("## Routes served", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(GET|POST|DELETE|PUT) (/[^`]*)`$", section, re.MULTILINE))


def _served_routes() -> set[tuple[str, str]]:
    app = create_app(load_config(env={}))
    served = set()
    for route in app.router.routes():
        assert route.resource is not None
        if route.handler is passthrough.handle:
            # /2/... is v2's own surface, proxied as is, for every method: its own section documents it.
            assert route.method == "*" and route.resource.canonical == "/2/{tail}"
            assert "\n## v2 pass-through\n" in DOC
            continue
        if route.handler.__module__ == oauth_provider.__name__:
            continue  # the login endpoints: documented under Authentication, see the test below
        path = route.resource.canonical
        if "{fmt}" in path:
            # The format placeholder accepts exactly the two documented formats.
            assert route.resource.get_info()["pattern"].pattern.endswith(r"\.(?P<fmt>xml|json)")
            path = path.replace("{fmt}", "{xml|json}")
        served.add((route.method, path))
    # HEAD comes with every GET (the same handler), and the section says so once rather than per route.
    heads = {(method, path) for method, path in served if method == "HEAD"}
    assert heads == {("HEAD", path) for method, path in served if method == "GET"}
    assert "Every `GET` route below also takes `HEAD`" in DOC.replace("\n", " ")
    return served - heads


def test_documented_routes_are_exactly_the_served_routes() -> None:
    documented = _documented_routes()
    assert documented, "no routes found in docs/COMPATIBILITY.md"
    assert documented == _served_routes()


def test_documented_login_routes_are_exactly_the_served_ones() -> None:
    section = DOC.split("\n### Logging in\n", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- `")]
    documented = {route for line in lines for route in re.findall(r"`(GET|POST) (/[^`]*)`", line)}
    app = create_app(load_config(env={}))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.handler.__module__ == oauth_provider.__name__
    }
    assert documented and documented == served


def test_error_table_matches_the_mappings() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d+) \| (\d+) \| ([^|]+) \| (\d+) \| ([^|]+) \|$", DOC, re.MULTILINE)
    table = {row[0]: row[1:] for row in rows}
    assert set(table) == set(ERROR_KINDS)
    twitter, statusnet = load_mapping("twitter_v1"), load_mapping("statusnet")
    for kind, (status, code, message, sn_status, sn_message) in table.items():
        v11, sn = twitter.errors[kind], statusnet.errors[kind]
        assert (int(status), int(code), message.strip()) == (v11.status, v11.code, v11.message), kind
        assert (int(sn_status), sn_message.strip()) == (sn.status, sn.message), kind


# --- Each call's parameters: what the page lists is what the code reads --------------------------------

# A value each parameter may take, so that parsing gets as far as reading every parameter it wants.
SAMPLE_VALUES = {
    "id": "1583890000000000001",
    "count": "5",
    "page": "2",
    "since_id": "1",
    "max_id": "1583890000000000009",
    "include_entities": "true",
    "skip_status": "true",
    "full_text": "true",
    "text": "hello",
    "user_id": "776627022",
    "screen_name": "s0c1alm3dia",
    "user": "s0c1alm3dia",
    "cursor": "token",
    "include_email": "true",
    "resources": "direct_messages,users",
}


def _calls() -> list[tuple[list[tuple[str, str]], dict[str, str]]]:
    """Each documented call: its routes, and its parameters with their support text (none for a call that
    says it "Takes no parameters.")."""
    section = DOC.split("## Routes served", 1)[1].split("\n## ", 1)[0]
    calls = []
    for block in section.split("\n#### ")[1:]:
        routes = re.findall(r"^- `(GET|POST|DELETE|PUT) (/[^`]*)`$", block, re.MULTILINE)
        rows = re.findall(r"^\| `([^`]+)`[^|]* \| ([^\n]+) \|$", block, re.MULTILINE)
        assert bool(rows) != ("\nTakes no parameters.\n" in block), routes
        calls.append((routes, dict(rows)))
    return calls


def _dialect_route(method: str, path: str) -> tuple[Dialect, RouteSpec, str]:
    config = load_config(env={})
    for prefix, dialect, spec in DialectRouter(config).mounts:
        served = (prefix + spec.path).replace("{fmt:xml|json}", "{xml|json}")
        if method in spec.methods and served == path:
            return dialect, spec, prefix
    raise AssertionError(f"{method} {path} is documented but not served")


def test_every_call_has_its_routes_and_a_parameter_table() -> None:
    calls = _calls()
    documented = [route for routes, _ in calls for route in routes]
    assert sorted(documented) == sorted(_served_routes())


@pytest.mark.parametrize("routes_and_params", _calls(), ids=lambda call: f"{call[0][0][0]} {call[0][0][1]}")
def test_the_parameters_read_are_the_parameters_documented(routes_and_params) -> None:
    routes, params = routes_and_params
    # What is ignored, or refused whenever it is present, is not read as a value.
    used = {name for name, support in params.items() if not support.startswith(("ignored", "refused"))}
    for method, path in routes:
        dialect, spec, _ = _dialect_route(method, path)
        if spec.body == "json":
            # The members of a JSON body: a document holding each of them parses into a send.
            document = {"event": {"type": "message_create", "message_create": {
                "target": {"recipient_id": "776627022"}, "message_data": {
                    "text": "hello", "attachment": {"type": "media", "media": {"id": "1583890000000000100"}}}}}}  # fmt: skip
            for name in used:
                node = document
                for part in name.split(".")[:-1]:
                    node = node[part]
                assert name.split(".")[-1] in node, name
            request = LegacyRequest(method, path, {}, MultiDict(), MultiDict(), document)
        else:
            match = {"id": SAMPLE_VALUES["id"]} if "{id}" in path else {}
            query = MultiDict((name, SAMPLE_VALUES[name]) for name in params)
            request = LegacyRequest(method, path, match, query, MultiDict())
        dialect.parse(spec.operation, request)
        if spec.body != "json":
            assert request.asked == used, f"{method} {path}"


def test_the_events_dialect_differs_from_classic_only_where_documented() -> None:
    classic, events = load_mapping("twitter_v1"), load_mapping("twitter_events")
    differing = {kind for kind in ERROR_KINDS if classic.errors[kind] != events.errors[kind]}
    assert differing == {"recipient_refuses"}
    refusal = events.errors["recipient_refuses"]
    assert f'code {refusal.code}, "{refusal.message}"' in DOC.replace("\n", " ")
    assert refusal.status == 403
