"""Hostile and malformed input, end to end through the real app and the emulator.

Whatever a client sends, it gets an answer in its own dialect's shape (never an aiohttp text page and never
a 500 for its own mistake), and nothing it should not cause ever reaches upstream.
"""

from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.emulator import EmulatorServer
from tests.conftest import HOSTILE_TEXT_ID, MARCOS_TOKEN, PLAIN_IDS, SEED_002_ID, XDEV_TOKEN, GatewayFactory

SEAN_ID, MICK_ID = "38895958", "776627022"
MESSAGE_ID = PLAIN_IDS[0]  # theSeanCook -> s0c1alm3dia
OTHER_ID = PLAIN_IDS[1]
FORM = "application/x-www-form-urlencoded"

V1_MESSAGES = {
    "missing_id": (400, 38, "id parameter is missing."),
    "invalid_id": (400, 214, "id parameter is invalid."),
    "not_found": (404, 34, "Sorry, that page does not exist."),
    "bad_request": (400, 214, "Bad request."),
    "too_large": (413, 214, "Request body is too large."),
    "forbidden": (403, 93, "This application is not allowed to access or delete your direct messages."),
}
STATUSNET_MESSAGES = {
    "missing_id": (400, None, "No direct message ID specified."),
    "invalid_id": (400, None, "Invalid direct message ID."),
    "not_found": (404, None, "API method not found."),
    "wrong_method": (400, None, "This method requires a POST or DELETE."),
    "bad_request": (400, None, "Bad request."),
    "too_large": (413, None, "Request body is too large."),
    "forbidden": (403, None, "You are not allowed to delete this direct message."),
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def send(client: TestClient, method: str, url: str | URL, **kwargs: Any) -> Reply:
    async with client.request(method, url, **kwargs) as response:
        return Reply(response.status, response.headers, await response.read())


def assert_legacy_error(reply: Reply, style: str, fmt: str, what: str, request_path: str | None = None) -> None:
    """``what`` in the dialect's error shape; ``request_path`` is what StatusNet echoes, when known."""
    status, code, message = (V1_MESSAGES if style == "v1" else STATUSNET_MESSAGES)[what]
    assert reply.status == status, reply.body
    content_type = reply.headers.get("Content-Type", "")
    if fmt == "xml":
        assert content_type.startswith("application/xml"), (content_type, reply.body)
        root = ET.fromstring(reply.body)
        if style == "v1":
            assert root.tag == "errors"
            assert [(e.tag, e.get("code"), e.text) for e in root] == [("error", str(code), message)]
        else:
            assert root.tag == "hash"
            assert [child.tag for child in root] == ["error", "request"]
            assert root.findtext("error") == message
            if request_path is not None:
                assert root.findtext("request") == request_path
        return
    assert content_type.startswith("application/json"), (content_type, reply.body)
    document = json.loads(reply.body)
    if style == "v1":
        assert document == {"errors": [{"code": code, "message": message}]}
    else:
        assert list(document) == ["error", "request"]
        assert document["error"] == message
        if request_path is not None:
            assert document["request"] == request_path


# --- malformed ids, in every position a dialect takes one from --------------------------------------------


@dataclass(frozen=True)
class Position:
    name: str
    method: str
    path: str  # "{id}" marks the path position
    style: str
    fmt: str
    where: str  # query, body or path

    def request(self, raw: str) -> tuple[URL, dict[str, Any]]:
        """The request carrying ``raw`` (already percent-encoded, sent as is) in this position."""
        if self.where == "path":
            return URL(self.path.replace("{id}", raw), encoded=True), {}
        if self.where == "query":
            return URL(f"{self.path}?id={raw}", encoded=True), {}
        return URL(self.path), {"data": f"id={raw}".encode(), "headers": {"Content-Type": FORM}}

    def request_path(self, raw: str) -> str:
        return unquote(self.path.replace("{id}", raw)) if self.where == "path" else self.path


POSITIONS = [
    Position("v1.1-query", "POST", "/1.1/direct_messages/destroy.json", "v1", "json", "query"),
    Position("v1.1-body", "POST", "/1.1/direct_messages/destroy.json", "v1", "json", "body"),
    Position("events-query", "DELETE", "/1.1/direct_messages/events/destroy.json", "v1", "json", "query"),
    Position("events-body", "DELETE", "/1.1/direct_messages/events/destroy.json", "v1", "json", "body"),
    Position("statusnet-query-xml", "POST", "/api/direct_messages/destroy.xml", "statusnet", "xml", "query"),
    Position("statusnet-body-json", "DELETE", "/1/direct_messages/destroy.json", "statusnet", "json", "body"),
    Position("statusnet-body-xml", "POST", "/1/direct_messages/destroy.xml", "statusnet", "xml", "body"),
    Position("statusnet-path-xml", "POST", "/1/direct_messages/destroy/{id}.xml", "statusnet", "xml", "path"),
    Position("statusnet-path-json", "DELETE", "/api/direct_messages/destroy/{id}.json", "statusnet", "json", "path"),
]

# Wire forms: each is sent exactly as written (already percent-encoded where it needs to be).
MALFORMED = {
    "letters": "abc",
    "hex": "0x27",
    "arabic-indic-digits": quote("٣٩"),
    "fullwidth-digits": quote("３９"),
    "superscript-digits": quote("³⁹"),
    "20-digits": "1" * 20,
    "2**63": "9223372036854775808",
    "leading-zero": "039",
    "zero": "0",
    "minus-one": "-1",
    "plus-one": "%2B1",
    "space-one": "%201",
    "trailing-newline": "39%0A",
    "exponent": "1e5",
    "decimal": "39.0",
    "dot-dot": "%2e%2e",
    "traversal": "..%2F39",
    "nul": "%00",
    "nul-suffix": "39%00",
    "10kB": "1" * 10_240,
}
LONG_LINE = ("10kB",)  # over aiohttp's request-line limit when in the URL: see the test below


def _malformed_cases() -> list[Any]:
    cases = []
    for position in POSITIONS:
        for name, raw in MALFORMED.items():
            if name in LONG_LINE and position.where != "body":
                continue
            cases.append(pytest.param(position, raw, id=f"{position.name}-{name}"))
    return cases


@pytest.mark.parametrize(("position", "raw"), _malformed_cases())
async def test_a_malformed_id_is_400_and_never_reaches_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, position: Position, raw: str
) -> None:
    client = await make_gateway()
    url, kwargs = position.request(raw)
    reply = await send(client, position.method, url, **kwargs)
    request_path = position.request_path(raw) if "%00" not in raw else None  # XML cannot carry a NUL
    assert_legacy_error(reply, position.style, position.fmt, "invalid_id", request_path)
    assert emulator.state.requests == []


@pytest.mark.parametrize("position", [pytest.param(p, id=p.name) for p in POSITIONS if p.where != "path"])
@pytest.mark.parametrize("raw", ["", "id-absent"])
async def test_an_empty_or_absent_id_is_the_missing_id_error(
    make_gateway: GatewayFactory, emulator: EmulatorServer, position: Position, raw: str
) -> None:
    client = await make_gateway()
    if raw == "id-absent":
        reply = await send(client, position.method, position.path)
    else:
        url, kwargs = position.request(raw)
        reply = await send(client, position.method, url, **kwargs)
    assert_legacy_error(reply, position.style, position.fmt, "missing_id", position.path)
    assert emulator.state.requests == []


@pytest.mark.parametrize("position", [pytest.param(p, id=p.name) for p in POSITIONS if p.where == "path"])
async def test_an_empty_path_id_is_no_destroy_route_at_all(
    make_gateway: GatewayFactory, emulator: EmulatorServer, position: Position
) -> None:
    """``destroy/.xml`` does not match ``destroy/{id}.xml``: StatusNet's unknown-method answer, in its format."""
    client = await make_gateway()
    url, kwargs = position.request("")
    reply = await send(client, position.method, url, **kwargs)
    assert_legacy_error(reply, position.style, position.fmt, "not_found", position.request_path(""))
    assert emulator.state.requests == []


@pytest.mark.parametrize("position", [pytest.param(p, id=p.name) for p in POSITIONS if p.where != "body"])
async def test_a_10kb_id_in_the_url_is_refused_before_the_app(
    make_gateway: GatewayFactory, emulator: EmulatorServer, position: Position
) -> None:
    """aiohttp's HTTP parser refuses request lines over 8190 bytes with its own plain-text 400, before any
    middleware runs; the dialect shape is out of reach there (see the report). Nothing goes upstream."""
    client = await make_gateway()
    url, kwargs = position.request(MALFORMED["10kB"])
    reply = await send(client, position.method, url, **kwargs)
    assert reply.status == 400
    assert emulator.state.requests == []


@pytest.mark.parametrize("position", [pytest.param(p, id=p.name) for p in POSITIONS])
@pytest.mark.parametrize("raw", ["9223372036854775807", MESSAGE_ID])
async def test_a_well_formed_id_in_the_same_positions_does_reach_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, position: Position, raw: str
) -> None:
    """The control for the tests above: the same requests with a good id are passed on."""
    client = await make_gateway()
    url, kwargs = position.request(raw)
    reply = await send(client, position.method, url, **kwargs)
    event_paths = {r.path for r in emulator.state.requests if r.path.startswith("/2/dm_events")}
    assert event_paths == {f"/2/dm_events/{raw}"}
    if raw == MESSAGE_ID:
        assert reply.status == (204 if "events" in position.name else 200), reply.body
        assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)
    else:  # the largest id there can be: valid, but unknown to v2
        assert reply.status == 404, reply.body


TWO_IDS = [
    pytest.param(
        "POST",
        f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}&id={OTHER_ID}",
        None,
        "v1",
        "json",
        id="v1.1-query-twice",
    ),
    pytest.param(
        "POST",
        f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}",
        f"id={OTHER_ID}",
        "v1",
        "json",
        id="v1.1-query-vs-body",
    ),
    pytest.param(
        "DELETE",
        f"/1.1/direct_messages/events/destroy.json?id={MESSAGE_ID}",
        f"id={OTHER_ID}",
        "v1",
        "json",
        id="events-query-vs-body",
    ),
    pytest.param(
        "POST",
        f"/api/direct_messages/destroy.xml?id={MESSAGE_ID}",
        f"id={OTHER_ID}",
        "statusnet",
        "xml",
        id="statusnet-query-vs-body",
    ),
    pytest.param(
        "POST",
        f"/1/direct_messages/destroy/{MESSAGE_ID}.json?id={OTHER_ID}",
        None,
        "statusnet",
        "json",
        id="statusnet-path-vs-query",
    ),
    pytest.param(
        "DELETE",
        f"/api/direct_messages/destroy/{MESSAGE_ID}.xml",
        f"id={OTHER_ID}",
        "statusnet",
        "xml",
        id="statusnet-path-vs-body",
    ),
]


@pytest.mark.parametrize(("method", "url", "body", "style", "fmt"), TWO_IDS)
async def test_two_different_ids_are_refused(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    method: str,
    url: str,
    body: str | None,
    style: str,
    fmt: str,
) -> None:
    client = await make_gateway()
    kwargs: dict[str, Any] = {"data": body.encode(), "headers": {"Content-Type": FORM}} if body else {}
    reply = await send(client, method, url, **kwargs)
    assert_legacy_error(reply, style, fmt, "invalid_id", url.partition("?")[0])
    assert emulator.state.requests == []
    assert not emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)
    assert not emulator.state.is_deleted_for(OTHER_ID, SEAN_ID)


async def test_the_same_id_twice_is_one_id(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    reply = await send(
        client,
        "POST",
        f"/1/direct_messages/destroy/{MESSAGE_ID}.json?id={MESSAGE_ID}",
        data=f"id={MESSAGE_ID}".encode(),
        headers={"Content-Type": FORM},
    )
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["id"] == int(MESSAGE_ID)


# --- unknown paths and wrong methods ------------------------------------------------------------------


UNKNOWN_PATHS = [
    ("/1.1/foo.json", "v1", "json"),
    ("/1.1/foo.xml", "v1", "xml"),
    ("/1.1/direct_messages/destroy.xml", "v1", "xml"),
    ("/1.1/direct_messages/destroy/39.xml", "v1", "xml"),  # the path form is JSON only in v1.1
    ("/api/foo.xml", "statusnet", "xml"),
    ("/api/foo.json", "statusnet", "json"),
    ("/1/foo.xml", "statusnet", "xml"),
    ("/1/direct_messages/destroy/39.html", "statusnet", "json"),
    ("/api/direct_messages/destroy/39/.xml", "statusnet", "xml"),
    ("/nope", "v1", "json"),
    ("/nope.xml", "v1", "xml"),
    ("/", "v1", "json"),
]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
@pytest.mark.parametrize(("path", "style", "fmt"), UNKNOWN_PATHS)
async def test_an_unknown_path_is_the_dialects_not_found(
    make_gateway: GatewayFactory, emulator: EmulatorServer, method: str, path: str, style: str, fmt: str
) -> None:
    client = await make_gateway()
    reply = await send(client, method, path)
    assert_legacy_error(reply, style, fmt, "not_found", path)
    assert b"404: Not Found" not in reply.body
    assert emulator.state.requests == []


WRONG_METHODS = [
    ("GET", "/1.1/direct_messages/destroy.json?id=39", "v1", "json", "not_found"),
    ("DELETE", "/1.1/direct_messages/destroy.json?id=39", "v1", "json", "not_found"),
    ("PUT", "/1.1/direct_messages/destroy.json?id=39", "v1", "json", "not_found"),
    ("GET", "/1.1/direct_messages/events/destroy.json?id=39", "v1", "json", "not_found"),
    ("POST", "/1.1/direct_messages/events/destroy.json?id=39", "v1", "json", "not_found"),
    ("GET", "/api/direct_messages/destroy.xml?id=39", "statusnet", "xml", "wrong_method"),
    ("GET", "/1/direct_messages/destroy.json?id=39", "statusnet", "json", "wrong_method"),
    ("GET", "/1/direct_messages/destroy/39.xml", "statusnet", "xml", "wrong_method"),
    ("PUT", "/api/direct_messages/destroy/39.json", "statusnet", "json", "wrong_method"),
    ("PATCH", "/api/direct_messages/destroy/39.xml", "statusnet", "xml", "wrong_method"),
]


@pytest.mark.parametrize(("method", "url", "style", "fmt", "what"), WRONG_METHODS)
async def test_a_wrong_method_is_refused_in_the_dialects_words(
    make_gateway: GatewayFactory, emulator: EmulatorServer, method: str, url: str, style: str, fmt: str, what: str
) -> None:
    client = await make_gateway()
    reply = await send(client, method, url)
    assert_legacy_error(reply, style, fmt, what, url.partition("?")[0])
    assert emulator.state.requests == []


# --- suppress_response_codes -------------------------------------------------------------------------------


SUPPRESS_CASES = [
    ("POST", "/1.1/direct_messages/destroy.json?id=abc", "v1", "json"),
    ("DELETE", "/1.1/direct_messages/events/destroy.json?id=abc", "v1", "json"),
    ("POST", "/api/direct_messages/destroy.xml?id=abc", "statusnet", "xml"),
    ("DELETE", "/1/direct_messages/destroy/abc.json", "statusnet", "json"),
]


@pytest.mark.parametrize(("method", "url", "style", "fmt"), SUPPRESS_CASES)
@pytest.mark.parametrize("where", ["query", "body"])
@pytest.mark.parametrize(
    ("value", "suppressed"), [("true", True), ("TRUE", True), ("t", True), ("1", True), ("false", False), ("0", False)]
)
async def test_suppress_response_codes_answers_200_with_the_same_error_body(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    method: str,
    url: str,
    style: str,
    fmt: str,
    where: str,
    value: str,
    suppressed: bool,
) -> None:
    client = await make_gateway()
    plain = await send(client, method, url)
    assert_legacy_error(plain, style, fmt, "invalid_id", url.partition("?")[0])
    if where == "query":
        flagged = await send(client, method, f"{url}{'&' if '?' in url else '?'}suppress_response_codes={value}")
    else:
        flagged = await send(
            client, method, url, data=f"suppress_response_codes={value}".encode(), headers={"Content-Type": FORM}
        )
    assert flagged.status == (200 if suppressed else plain.status)
    assert flagged.body == plain.body
    assert flagged.headers["Content-Type"] == plain.headers["Content-Type"]
    assert emulator.state.requests == []


@pytest.mark.parametrize(
    ("url", "style", "fmt"),
    [
        (f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}&suppress_response_codes=true", "v1", "json"),
        (f"/api/direct_messages/destroy/{SEED_002_ID}.xml?suppress_response_codes=true", "statusnet", "xml"),
    ],
)
async def test_suppress_response_codes_covers_upstream_refusals(
    make_gateway: GatewayFactory, emulator: EmulatorServer, url: str, style: str, fmt: str
) -> None:
    client = await make_gateway()
    reply = await send(client, "POST", url, headers={"Authorization": f"Bearer {MARCOS_TOKEN}"})
    assert reply.status == 200
    assert_legacy_error(Reply(403, reply.headers, reply.body), style, fmt, "forbidden", url.partition("?")[0])


@pytest.mark.parametrize(
    "url", ["/1.1/nope.json?suppress_response_codes=true", "/api/nope.xml?suppress_response_codes=1"]
)
async def test_suppress_response_codes_covers_unknown_paths(make_gateway: GatewayFactory, url: str) -> None:
    client = await make_gateway()
    reply = await send(client, "GET", url)
    assert reply.status == 200
    style, fmt = ("v1", "json") if url.startswith("/1.1") else ("statusnet", "xml")
    assert_legacy_error(Reply(404, reply.headers, reply.body), style, fmt, "not_found", url.partition("?")[0])


# --- bodies: too large, malformed multipart ----------------------------------------------------------------


BODY_ROUTES = [
    ("POST", "/1.1/direct_messages/destroy.json", "v1", "json"),
    ("DELETE", "/1.1/direct_messages/events/destroy.json", "v1", "json"),
    ("POST", "/api/direct_messages/destroy.xml", "statusnet", "xml"),
    ("DELETE", "/1/direct_messages/destroy.json", "statusnet", "json"),
]
MAX_BODY = 2048


def _multipart(fields: list[tuple[str, str]], boundary: str = "xx") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n' for name, value in fields
    ]
    return "".join(parts).encode() + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(("method", "path", "style", "fmt"), BODY_ROUTES)
@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
async def test_a_body_over_the_limit_is_413_in_the_dialects_shape(
    make_gateway: GatewayFactory, emulator: EmulatorServer, method: str, path: str, style: str, fmt: str, kind: str
) -> None:
    client = await make_gateway(server={"max_body_bytes": MAX_BODY})
    fields = [("id", MESSAGE_ID), ("pad", "x" * (2 * MAX_BODY))]
    if kind == "urlencoded":
        data, content_type = f"id={MESSAGE_ID}&pad={'x' * (2 * MAX_BODY)}".encode(), FORM
    else:
        data, content_type = _multipart(fields), "multipart/form-data; boundary=xx"
    reply = await send(client, method, path, data=data, headers={"Content-Type": content_type})
    assert_legacy_error(reply, style, fmt, "too_large", path)
    assert emulator.state.requests == []
    assert not emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


@pytest.mark.parametrize(("method", "path", "style", "fmt"), BODY_ROUTES)
@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
async def test_a_body_under_the_limit_is_read(
    make_gateway: GatewayFactory, emulator: EmulatorServer, method: str, path: str, style: str, fmt: str, kind: str
) -> None:
    client = await make_gateway(server={"max_body_bytes": MAX_BODY})
    pad = "x" * (MAX_BODY // 2)
    if kind == "urlencoded":
        data, content_type = f"id={MESSAGE_ID}&pad={pad}".encode(), FORM
    else:
        data, content_type = _multipart([("id", MESSAGE_ID), ("pad", pad)]), "multipart/form-data; boundary=xx"
    reply = await send(client, method, path, data=data, headers={"Content-Type": content_type})
    assert reply.status in (200, 204), reply.body
    assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


_PART = b'Content-Disposition: form-data; name="id"\r\n'
MALFORMED_BODIES = {
    "header-without-colon": ("multipart/form-data; boundary=xx", b"--xx\r\nbroken\r\n\r\n39\r\n--xx--\r\n"),
    "no-closing-boundary": ("multipart/form-data; boundary=xx", b"--xx\r\n" + _PART + b"\r\n39"),
    "wrong-boundary": ("multipart/form-data; boundary=xx", b"--yy\r\n" + _PART + b"\r\n39\r\n--yy--\r\n"),
    "no-boundary-parameter": ("multipart/form-data", _multipart([("id", "39")])),
    "binary-garbage": ("multipart/form-data; boundary=xx", b"\x00\xff\xfe\x80 garbage"),
    "unknown-transfer-encoding": (
        "multipart/form-data; boundary=xx",
        b"--xx\r\n" + _PART + b"Content-Transfer-Encoding: rot13\r\n\r\n39\r\n--xx--\r\n",
    ),
    "unknown-part-charset": (
        "multipart/form-data; boundary=xx",
        b"--xx\r\n" + _PART + b"Content-Type: text/plain; charset=klingon\r\n\r\n39\r\n--xx--\r\n",
    ),
    "too-many-part-headers": (
        "multipart/form-data; boundary=xx",
        b"--xx\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n39\r\n--xx--\r\n",
    ),
    "invalid-utf8-value": ("multipart/form-data; boundary=xx", b"--xx\r\n" + _PART + b"\r\n\xff\xfe\r\n--xx--\r\n"),
    "urlencoded-unknown-charset": (f"{FORM}; charset=klingon", b"id=39"),
}


@pytest.mark.parametrize(("method", "path", "style", "fmt"), BODY_ROUTES)
@pytest.mark.parametrize(("content_type", "body"), [pytest.param(*v, id=k) for k, v in MALFORMED_BODIES.items()])
async def test_a_malformed_body_is_400_not_500(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    method: str,
    path: str,
    style: str,
    fmt: str,
    content_type: str,
    body: bytes,
) -> None:
    client = await make_gateway()
    reply = await send(client, method, path, data=body, headers={"Content-Type": content_type})
    assert_legacy_error(reply, style, fmt, "bad_request", path)
    assert emulator.state.requests == []


async def test_a_well_formed_multipart_body_is_read(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    reply = await send(
        client,
        "POST",
        "/1.1/direct_messages/destroy.json",
        data=_multipart([("id", MESSAGE_ID), ("include_entities", "false")]),
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert reply.status == 200, reply.body
    document = json.loads(reply.body)
    assert document["id_str"] == MESSAGE_ID and "entities" not in document


# --- X-Request-Id -----------------------------------------------------------------------------------------


_GENERATED = re.compile(r"[0-9a-f]{32}")


def _upstream_request_ids(emulator: EmulatorServer) -> set[str | None]:
    return {
        next((v for k, v in r.headers.items() if k.lower() == "x-request-id"), None) for r in emulator.state.requests
    }


@pytest.mark.parametrize("incoming", ["abc-123", "req.42:retry_1", "A" * 128, "0"])
async def test_a_sane_request_id_is_echoed_and_sent_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, incoming: str
) -> None:
    client = await make_gateway()
    reply = await send(
        client, "POST", f"/api/direct_messages/destroy/{MESSAGE_ID}.xml", headers={"X-Request-Id": incoming}
    )
    assert reply.status == 200, reply.body
    assert reply.headers.getall("X-Request-Id") == [incoming]
    assert len(emulator.state.requests) >= 2
    assert _upstream_request_ids(emulator) == {incoming}


@pytest.mark.parametrize(
    "incoming",
    ["A" * 129, "two words", "<script>", "a/b", "semi;colon", 'quote"d', "caf\u00e9", ""],
)
async def test_a_hostile_request_id_is_replaced_everywhere(
    make_gateway: GatewayFactory, emulator: EmulatorServer, incoming: str
) -> None:
    client = await make_gateway()
    url = f"/1.1/direct_messages/events/destroy.json?id={MESSAGE_ID}"
    reply = await send(client, "DELETE", url, headers={"X-Request-Id": incoming})
    assert reply.status == 204, reply.body
    (answered,) = reply.headers.getall("X-Request-Id")
    assert _GENERATED.fullmatch(answered) and answered != incoming
    assert _upstream_request_ids(emulator) == {answered}


async def test_every_answer_has_a_request_id_and_each_is_fresh(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    replies = [
        await send(client, "POST", "/1.1/direct_messages/destroy.json?id=abc"),
        await send(client, "GET", "/api/nope.xml"),
        await send(client, "GET", "/1/direct_messages/destroy/39.json"),
        await send(client, "POST", "/1.1/direct_messages/destroy.json?id=abc", headers={"X-Request-Id": "a b"}),
    ]
    ids = [reply.headers.get("X-Request-Id", "") for reply in replies]
    assert all(_GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    echoed = await send(client, "GET", "/nope", headers={"X-Request-Id": "trace-7"})
    assert echoed.headers["X-Request-Id"] == "trace-7"


# --- text that fights the serializers --------------------------------------------------------------------------


async def test_hostile_text_is_escaped_in_statusnet_xml(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    v2_text = emulator.state.events[HOSTILE_TEXT_ID]["text"]
    assert "\x07" in v2_text and "<b>" in v2_text and "&amp;" in v2_text
    reply = await send(client, "POST", f"/api/direct_messages/destroy/{HOSTILE_TEXT_ID}.xml")
    assert reply.status == 200, reply.body
    root = ET.fromstring(reply.body)
    assert root.findtext("text") == v2_text.replace("\x07", "")
    assert b"&lt;b&gt;" in reply.body
    assert b"&amp;amp;" in reply.body
    assert b"\x07" not in reply.body
    assert b"<b>" not in reply.body


async def test_hostile_text_is_exact_in_json(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    v2_text = emulator.state.events[HOSTILE_TEXT_ID]["text"]
    # The other participant deletes it for themselves, so Sean's copy is untouched for the next call.
    v1 = await send(
        client,
        "POST",
        f"/1.1/direct_messages/destroy.json?id={HOSTILE_TEXT_ID}",
        headers={"Authorization": f"Bearer {XDEV_TOKEN}"},
    )
    assert v1.status == 200, v1.body
    assert json.loads(v1.body)["text"] == v2_text
    statusnet = await send(client, "DELETE", f"/api/direct_messages/destroy/{HOSTILE_TEXT_ID}.json")
    assert statusnet.status == 200, statusnet.body
    assert json.loads(statusnet.body)["text"] == v2_text


_NOT_XML_10 = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_readback(text: str) -> str:
    """What an XML 1.0 parser can give back for ``text``: characters XML cannot carry at all are gone.

    A CR survives only because the gateway writes it as ``&#13;``: a literal one would come back as LF
    through the parser's end-of-line handling. The property test checks that no literal CR is written."""
    return _NOT_XML_10.sub("", text)


@pytest.fixture
async def text_gateway(make_gateway: GatewayFactory) -> TestClient:
    return await make_gateway()


_FRESH_IDS = itertools.count(1_700_000_000_000_000_001)


def add_message(emulator: EmulatorServer, text: str) -> str:
    """A new message from theSeanCook to s0c1alm3dia, straight into the emulator's data."""
    event_id = str(next(_FRESH_IDS))
    emulator.state.events[event_id] = {
        "id": event_id,
        "event_type": "MessageCreate",
        "text": text,
        "created_at": "2023-01-02T03:04:05.000Z",
        "dm_conversation_id": f"{SEAN_ID}-{MICK_ID}",
        "sender_id": SEAN_ID,
    }
    return event_id


async def test_carriage_returns_survive_statusnet_xml(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    event_id = add_message(emulator, "one\r\ntwo\rthree\n")
    reply = await send(client, "POST", f"/api/direct_messages/destroy/{event_id}.xml")
    assert reply.status == 200, reply.body
    assert b"one&#13;\ntwo&#13;three\n</text>" in reply.body
    assert ET.fromstring(reply.body).findtext("text") == "one\r\ntwo\rthree\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
async def test_any_text_survives_every_serializer(
    text_gateway: TestClient, emulator: EmulatorServer, text: str
) -> None:
    # StatusNet XML
    xml_id = add_message(emulator, text)
    reply = await send(text_gateway, "POST", f"/1/direct_messages/destroy/{xml_id}.xml")
    assert reply.status == 200, reply.body
    assert b"\r" not in reply.body  # written as &#13;, or the parser would turn it into \n
    root = ET.fromstring(reply.body)
    assert root.findtext("id") == xml_id
    assert root.findtext("text") == xml_readback(text)

    # StatusNet JSON, slashes escaped PHP-style
    sn_id = add_message(emulator, text)
    reply = await send(text_gateway, "DELETE", f"/api/direct_messages/destroy.json?id={sn_id}")
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["text"] == text

    # v1.1 JSON
    v1_id = add_message(emulator, text)
    reply = await send(text_gateway, "POST", "/1.1/direct_messages/destroy.json", data={"id": v1_id})
    assert reply.status == 200, reply.body
    document = json.loads(reply.body)
    assert (document["id_str"], document["text"]) == (v1_id, text)
