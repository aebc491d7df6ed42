"""docs/COMPATIBILITY.md stays true: its routes are exactly the routes served, its errors the mappings'."""

from __future__ import annotations

import re
from pathlib import Path

from gateway import passthrough
from gateway.app import create_app
from gateway.config import load_config
from gateway.errors import ERROR_KINDS
from gateway.render.mapping import load_mapping

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
        path = route.resource.canonical
        if "{fmt}" in path:
            # The format placeholder accepts exactly the two documented formats.
            assert route.resource.get_info()["pattern"].pattern.endswith(r"\.(?P<fmt>xml|json)")
            path = path.replace("{fmt}", "{xml|json}")
        served.add((route.method, path))
    return served


def test_documented_routes_are_exactly_the_served_routes() -> None:
    documented = _documented_routes()
    assert documented, "no routes found in docs/COMPATIBILITY.md"
    assert documented == _served_routes()


def test_error_table_matches_the_mappings() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d+) \| (\d+) \| ([^|]+) \| (\d+) \| ([^|]+) \|$", DOC, re.MULTILINE)
    table = {row[0]: row[1:] for row in rows}
    assert set(table) == set(ERROR_KINDS)
    twitter, statusnet = load_mapping("twitter_v1"), load_mapping("statusnet")
    for kind, (status, code, message, sn_status, sn_message) in table.items():
        v11, sn = twitter.errors[kind], statusnet.errors[kind]
        assert (int(status), int(code), message.strip()) == (v11.status, v11.code, v11.message), kind
        assert (int(sn_status), sn_message.strip()) == (sn.status, sn.message), kind
