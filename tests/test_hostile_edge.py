"""The HTTP edge under attack: the sidecar reached from a web browser, requests aiohttp's parser refuses,
clients that hang up mid-body, and bytes no client library would send.

The raw-socket tests run the gateway as ``dm-gateway serve`` does (``GatewayRunner`` with
``runner_options``, aiohttp's handler cancellation off), not on the test client's server, whose defaults
differ exactly where these attacks land.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.accesslog import AccessLogger
from gateway.app import create_app
from gateway.config import ConfigError
from gateway.edge import GatewayRunner
from gateway.emulator import EmulatorServer
from gateway.serving import runner_options
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, GatewayFactory, gateway_config, store_of
from tests.test_hostile import Reply, assert_legacy_error, send

FORM = "application/x-www-form-urlencoded"
MICK = "s0c1alm3dia"
MESSAGE_ID = PLAIN_IDS[0]  # theSeanCook -> s0c1alm3dia
# A credential no log line and no answer may ever show.
SECRET = "edge-secret-3f9c2a71d4"


# --- serving as `dm-gateway serve` does, and talking to it over a raw socket -----------------------------


@asynccontextmanager
async def served(emulator: EmulatorServer, **sections: Any) -> AsyncIterator[GatewayRunner]:
    config = gateway_config(emulator, **sections)
    app = create_app(config)
    runner = GatewayRunner(app, access_log_class=AccessLogger, handle_signals=False, **runner_options(config))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner
    finally:
        await runner.cleanup()


def port_of(runner: GatewayRunner) -> int:
    return runner.addresses[0][1]


async def exchange(runner: GatewayRunner, raw: bytes) -> Reply:
    """Send ``raw`` as it is and read the answer up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return parse_reply(answer)


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines[1:])
    headers = CIMultiDict((name.strip(), value.strip()) for name, _, value in fields)
    return Reply(int(lines[0].split()[1]), CIMultiDictProxy(headers), body)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) for ``condition``, which the server makes true once it is done with a connection."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every log record as it would be written, tracebacks included."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return [formatter.format(record) for record in caplog.records]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing logged at ERROR or above, no traceback, and no credential anywhere in the log."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert not [line for line in logged(caplog) if SECRET in line]


# --- the sidecar, reached from a web browser ------------------------------------------------------------

SEND_FORM = f"text=pwned&screen_name={MICK}"
# (method, path, form body, dialect style, format); style "v2" is the pass-through's problem+json.
SIDECAR_ROUTES = [
    pytest.param("GET", "/1.1/direct_messages.json", None, "v1", "json", id="v1.1-list"),
    pytest.param("POST", "/1.1/direct_messages/new.json", SEND_FORM, "v1", "json", id="v1.1-new"),
    pytest.param("POST", "/api/direct_messages/new.xml", SEND_FORM, "statusnet", "xml", id="statusnet-new"),
    pytest.param("POST", f"/1/direct_messages/destroy/{MESSAGE_ID}.json", None, "statusnet", "json", id="v1-destroy"),
    pytest.param("GET", "/2/users/me", None, "v2", "json", id="v2"),
]


async def sidecar_call(client: Any, method: str, path: str, form: str | None, headers: dict[str, str]) -> Reply:
    if form is not None:
        headers = {**headers, "Content-Type": FORM}
    return await send(client, method, path, data=form.encode() if form else None, headers=headers)


def assert_refused(reply: Reply, style: str, fmt: str, path: str) -> None:
    if style == "v2":
        assert reply.status == 403, reply.body
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(reply.body)["status"] == 403
        return
    assert_legacy_error(reply, style, fmt, "forbidden", path)


async def nothing_happened(client: Any, emulator: EmulatorServer, events_before: int) -> None:
    assert emulator.state.requests == []
    assert len(emulator.state.events) == events_before  # no DM was sent
    assert not emulator.state.is_deleted_for(MESSAGE_ID, "38895958")
    assert await store_of(client).get_message(MESSAGE_ID) is None  # nothing was learned either


# DNS rebinding: the attacker's own name, resolved to 127.0.0.1, is what the browser sends as Host.
REFUSED_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example",
    "localhost.evil.example:{port}",
    "localhost.",
    "10.0.0.1:{port}",
    "[::2]:{port}",
    "evil.example@127.0.0.1:{port}",
    "127.0.0.1:{port}/",
    "127.0.0.1:port",
    "caf\u00e9",
    "dm-gateway:{port}",  # not configured here
    "",
]


@pytest.mark.parametrize(("method", "path", "form", "style", "fmt"), SIDECAR_ROUTES)
@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_dns_rebinding_to_the_sidecar_is_refused(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    host: str,
    method: str,
    path: str,
    form: str | None,
    style: str,
    fmt: str,
) -> None:
    client = await make_gateway()
    events = len(emulator.state.events)
    reply = await sidecar_call(client, method, path, form, {"Host": host.format(port=client.port)})
    assert_refused(reply, style, fmt, path)
    await nothing_happened(client, emulator, events)


CROSS_SITE = [
    pytest.param({"Origin": "http://evil.example"}, id="origin-evil"),
    pytest.param({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, id="origin-and-fetch-metadata"),
    pytest.param({"Origin": "null"}, id="origin-null"),
    pytest.param({"Origin": "http://127.0.0.1:1"}, id="origin-other-port"),
    pytest.param({"Origin": "https://127.0.0.1:{port}"}, id="origin-other-scheme"),
    pytest.param({"Origin": "http://localhost:{port}"}, id="origin-other-host-name"),
    pytest.param({"Origin": "http://127.0.0.1:{port}/page"}, id="origin-not-an-origin"),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="fetch-cross-site"),
    pytest.param({"Sec-Fetch-Site": "same-site"}, id="fetch-same-site"),
]


@pytest.mark.parametrize(("method", "path", "form", "style", "fmt"), SIDECAR_ROUTES)
@pytest.mark.parametrize("headers", CROSS_SITE)
async def test_a_cross_site_browser_request_to_the_sidecar_is_refused(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    headers: dict[str, str],
    method: str,
    path: str,
    form: str | None,
    style: str,
    fmt: str,
) -> None:
    """A form on evil.example posting to http://127.0.0.1:PORT/1.1/direct_messages/new.json sends no DM."""
    client = await make_gateway()
    events = len(emulator.state.events)
    headers = {name: value.format(port=client.port) for name, value in headers.items()}
    reply = await sidecar_call(client, method, path, form, headers)
    assert_refused(reply, style, fmt, path)
    await nothing_happened(client, emulator, events)


ALLOWED = [
    pytest.param({}, id="test-client-default"),
    pytest.param({"Host": "127.0.0.1"}, id="ipv4-no-port"),
    pytest.param({"Host": "127.9.8.7:{port}"}, id="ipv4-loopback-net"),
    pytest.param({"Host": "localhost"}, id="localhost"),
    pytest.param({"Host": "LocalHost:{port}"}, id="localhost-any-case"),
    pytest.param({"Host": "[::1]"}, id="ipv6"),
    pytest.param({"Host": "[::1]:{port}"}, id="ipv6-port"),
    pytest.param({"Origin": "http://127.0.0.1:{port}"}, id="same-origin"),
    pytest.param({"Host": "localhost", "Origin": "http://localhost:80"}, id="same-origin-default-port"),
    pytest.param({"Sec-Fetch-Site": "same-origin"}, id="fetch-same-origin"),
    pytest.param({"Sec-Fetch-Site": "none"}, id="fetch-none"),
]


@pytest.mark.parametrize("headers", ALLOWED)
async def test_the_sidecars_own_application_is_served(
    make_gateway: GatewayFactory, emulator: EmulatorServer, headers: dict[str, str]
) -> None:
    client = await make_gateway()
    headers = {name: value.format(port=client.port) for name, value in headers.items()}
    reply = await send(client, "GET", "/1.1/direct_messages.json", headers=headers)
    assert reply.status == 200, reply.body
    assert "/2/dm_events" in {r.path for r in emulator.state.requests}


@pytest.mark.parametrize("host", ["dm-gateway", "dm-gateway:{port}", "DM-Gateway:{port}", "gw.pod.local"])
async def test_a_name_in_sidecar_hosts_is_served(
    make_gateway: GatewayFactory, emulator: EmulatorServer, host: str
) -> None:
    client = await make_gateway(auth={"sidecar_hosts": ["dm-gateway", "gw.pod.local"]})
    host = host.format(port=client.port)
    reply = await send(client, "GET", "/1.1/direct_messages.json", headers={"Host": host, "Origin": f"http://{host}"})
    assert reply.status == 200, reply.body
    refused = await send(client, "GET", "/1.1/direct_messages.json", headers={"Host": "evil.example"})
    assert_legacy_error(refused, "v1", "json", "forbidden")


async def test_a_request_without_host_is_served(emulator: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    """HTTP/1.0 needs no Host, and a browser always sends one: an old client of the sidecar is served."""
    async with served(emulator) as runner:
        reply = await exchange(runner, b"GET /1.1/direct_messages.json HTTP/1.0\r\n\r\n")
    assert reply.status == 200, reply.body
    assert "/2/dm_events" in {r.path for r in emulator.state.requests}


async def test_a_gateway_that_is_no_sidecar_serves_any_host(make_gateway: GatewayFactory) -> None:
    """Without the sidecar every call carries its own credentials, and clients whose DNS points at the gateway
    send the host name they think they reach (auth.public_base_urls)."""
    client = await make_gateway(upstream={"bearer_token": None}, auth={"sidecar": False})
    headers = {"Host": "api.twitter.com", "Origin": "https://evil.example", "Authorization": f"Bearer {SEAN_TOKEN}"}
    reply = await send(client, "GET", "/1.1/direct_messages.json", headers=headers)
    assert reply.status == 200, reply.body


# --- requests aiohttp's parser refuses: no credential in the log, none echoed ---------------------------

_BODY = f"text=hi&screen_name={MICK}".encode()
_AUTH = f"Authorization: Bearer {SECRET}".encode()


def _post(*lines: bytes, body: bytes = _BODY, eol: bytes = b"\r\n") -> bytes:
    head = [b"POST /1.1/direct_messages/new.json HTTP/1.1", b"Host: 127.0.0.1", *lines]
    return eol.join(head) + eol * 2 + body


# name: (raw request, the answer's shape: dialect style and format, "v2", or "plain" when no path is known)
UNPARSABLE = {
    "bare-lf": (
        _post(_AUTH, b"Content-Type: " + FORM.encode(), b"Content-Length: %d" % len(_BODY), eol=b"\n"),
        "v1",
        "json",
    ),
    "bare-lf-after-authorization": (_post(_AUTH + b"\nContent-Length: %d" % len(_BODY)), "v1", "json"),
    "over-long-authorization": (_post(_AUTH + b"x" * 9000, b"Content-Length: %d" % len(_BODY)), "v1", "json"),
    "over-long-header-after-authorization": (
        _post(_AUTH, b"X-Pad: " + b"a" * 9000, b"Content-Length: %d" % len(_BODY)),
        "v1",
        "json",
    ),
    "duplicate-content-length": (_post(_AUTH, b"Content-Length: %d" % len(_BODY), b"Content-Length: 1"), "v1", "json"),
    "content-length-and-chunked": (_post(_AUTH, b"Content-Length: 3", b"Transfer-Encoding: chunked"), "v1", "json"),
    "bad-chunk-size": (
        _post(
            _AUTH,
            b"Content-Type: " + FORM.encode(),
            b"Transfer-Encoding: chunked",
            body=b"zz\r\n" + _BODY + b"\r\n0\r\n\r\n",
        ),
        "v1",
        "json",
    ),
    "nul-in-a-header": (_post(_AUTH, b"X-Thing: a\x00b", b"Content-Length: %d" % len(_BODY)), "v1", "json"),
    "header-without-colon": (_post(_AUTH, b"Content-Length", body=b""), "v1", "json"),
    "statusnet-bare-lf": (
        b"POST /api/direct_messages/new.xml HTTP/1.1\nHost: 127.0.0.1\n" + _AUTH + b"\n\n",
        "statusnet",
        "xml",
    ),
    "v2-bare-lf": (b"GET /2/users/me HTTP/1.1\nHost: 127.0.0.1\n" + _AUTH + b"\n\n", "v2", ""),
    "raw-utf8-in-the-query": (
        b"GET /1.1/direct_messages.json?x=\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _AUTH + b"\r\n\r\n",
        "v1",
        "json",
    ),
    "raw-utf8-in-the-path": (
        b"GET /api/direct_messages/\xff.xml HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _AUTH + b"\r\n\r\n",
        "plain",
        "",
    ),
    "nul-in-the-query": (
        b"GET /1.1/direct_messages.json?x=\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _AUTH + b"\r\n\r\n",
        "v1",
        "json",
    ),
    "nul-in-the-path": (
        b"GET /1.1/direct_messages\x00.json HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _AUTH + b"\r\n\r\n",
        "plain",
        "",
    ),
    "over-long-request-line": (
        b"GET /1.1/direct_messages.json?" + b"a=b&" * 3000 + b" HTTP/1.1\r\n" + _AUTH + b"\r\n\r\n",
        "v1",
        "json",
    ),
    "over-long-request-path": (
        b"GET /1.1/" + b"a" * 9000 + b".json HTTP/1.1\r\n" + _AUTH + b"\r\n\r\n",
        "plain",
        "",
    ),
    "absolute-form-target": (b"GET http://evil.example/1.1/x.json HTTP/1.1\n" + _AUTH + b"\n\n", "plain", ""),
}


def assert_unreadable(reply: Reply, style: str, fmt: str, path: str) -> None:
    assert reply.status == 400, reply.body
    if style == "plain":
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert reply.body == b"400 Bad Request: the request could not be read.\n"
    elif style == "v2":
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(reply.body) == {
            "title": "Bad Request",
            "detail": "The request could not be read.",
            "type": "about:blank",
            "status": 400,
        }
    else:
        assert_legacy_error(reply, style, fmt, "bad_request", path)
    assert SECRET.encode() not in reply.body


@pytest.mark.parametrize(("raw", "style", "fmt"), [pytest.param(*v, id=k) for k, v in UNPARSABLE.items()])
async def test_an_unparsable_request_is_a_400_that_names_no_credential(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, raw: bytes, style: str, fmt: str
) -> None:
    """In the dialect of the path when the connection opened with that request and its request line reads;
    a short plain 400 otherwise. Either way the connection is closed after it."""
    caplog.set_level(logging.DEBUG)
    path = raw.split(b" ", 2)[1].partition(b"?")[0].decode("latin-1")
    async with served(emulator) as runner:
        reply = await exchange(runner, raw)
    assert_unreadable(reply, style, fmt, path)
    assert_quiet(caplog)
    [line] = [line for line in logged(caplog) if "unreadable request" in line]
    assert line.startswith("INFO gateway unreadable request from 127.0.0.1: ")
    assert emulator.state.requests == []


async def test_an_unparsable_request_after_the_first_on_a_connection_is_a_plain_400(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a connection's opening bytes are kept: a later request that does not parse has no known path."""
    caplog.set_level(logging.DEBUG)
    async with served(emulator) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(b"GET /1.1/direct_messages.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        length = int(parse_reply(first).headers["Content-Length"])
        await reader.readexactly(length)
        writer.write(_post(_AUTH, eol=b"\n"))
        reply = parse_reply(await asyncio.wait_for(reader.read(), 10))
        writer.close()
    assert_unreadable(reply, "plain", "", "")
    assert_quiet(caplog)


# --- a client that hangs up mid-body --------------------------------------------------------------------


def _multipart_id() -> bytes:
    return f'--xx\r\nContent-Disposition: form-data; name="id"\r\n\r\n{MESSAGE_ID}'.encode()


# (path, Content-Type, the first bytes of a 1000-byte body)
CUT_SHORT = {
    "v1.1-form": ("/1.1/direct_messages/destroy.json", FORM, f"id={MESSAGE_ID}".encode()),
    "statusnet-form": ("/api/direct_messages/new.xml", FORM, f"screen_name={MICK}&text=hi".encode()),
    "v1-multipart": ("/1/direct_messages/destroy.json", "multipart/form-data; boundary=xx", _multipart_id()),
    "events-json": ("/1.1/direct_messages/events/new.json", "application/json", b'{"event": {"type"'),
}


@pytest.mark.parametrize(("path", "content_type", "start"), [pytest.param(*v, id=k) for k, v in CUT_SHORT.items()])
async def test_a_client_closing_mid_body_is_no_error(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, path: str, content_type: str, start: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(emulator) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: 1000\r\n"
            # The server says "100 Continue" when the request reaches the application, so the body is
            # being waited for when the connection goes.
            "Expect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
        writer.write(start[:10])
        await writer.drain()
        writer.close()
        await until(lambda: not runner.server.connections)
    assert_quiet(caplog)
    assert emulator.state.requests == []


# (path, Content-Type, dialect style, format)
CHUNKED_ROUTES = [
    pytest.param("/1.1/direct_messages/new.json", FORM, "v1", "json", id="v1.1-form"),
    pytest.param("/api/direct_messages/destroy.xml", FORM, "statusnet", "xml", id="statusnet-form"),
    pytest.param(
        "/1/direct_messages/destroy.json", "multipart/form-data; boundary=xx", "statusnet", "json", id="v1-multipart"
    ),
    pytest.param("/1.1/direct_messages/events/new.json", "application/json", "v1", "json", id="events-json"),
]


@pytest.mark.parametrize(("path", "content_type", "style", "fmt"), CHUNKED_ROUTES)
@pytest.mark.parametrize("chunk", [b"zz\r\nid=1\r\n", b"4\r\nid=123456\r\n", b"-1\r\n", b"4;\x00\r\nid=1\r\n"])
async def test_a_bad_chunk_after_the_head_is_a_400_at_once(
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    style: str,
    fmt: str,
    chunk: bytes,
) -> None:
    """aiohttp queues a broken chunk as one more request and leaves the handler waiting for the body (here
    for a minute, server.client_timeout); the gateway answers the request at once and closes."""
    caplog.set_level(logging.DEBUG)
    async with served(emulator, server={"client_timeout": 60}) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{_AUTH.decode()}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(chunk)
        reply = parse_reply(await asyncio.wait_for(reader.read(), 10))  # the answer, then the close
        writer.close()
    assert_legacy_error(reply, style, fmt, "bad_request", path)
    assert_quiet(caplog)
    assert emulator.state.requests == []


# --- bytes that do parse as HTTP but mean nothing good: the dialect's 4xx, never a 500 -----------------


def _raw(method: str, target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_FORM_TYPE = b"Content-Type: " + FORM.encode()
_JSON_TYPE = b"Content-Type: application/json"
# name: (raw request, dialect style, format, what)
HOSTILE = {
    "bad-percent-escape-in-path": (_raw("GET", b"/1.1/direct_messages/show/%zz.json"), "v1", "json", "invalid_id"),
    "bad-percent-escape-in-statusnet-path": (
        _raw("POST", b"/api/direct_messages/destroy/%zz.xml"),
        "statusnet",
        "xml",
        "invalid_id",
    ),
    "invalid-utf8-in-path": (
        _raw("POST", b"/api/direct_messages/destroy/%E9%FF.xml"),
        "statusnet",
        "xml",
        "invalid_id",
    ),
    "nul-in-path": (_raw("DELETE", b"/1/direct_messages/destroy/%00.xml"), "statusnet", "xml", "invalid_id"),
    "bad-percent-escape-in-query": (_raw("GET", b"/1.1/direct_messages/show.json?id=%zz%"), "v1", "json", "invalid_id"),
    "invalid-utf8-in-query": (_raw("POST", b"/1.1/direct_messages/destroy.json?id=%FF%FE"), "v1", "json", "invalid_id"),
    "nul-in-query": (_raw("POST", b"/api/direct_messages/destroy.json?id=1%00"), "statusnet", "json", "invalid_id"),
    "invalid-utf8-in-form": (
        _raw("POST", b"/1.1/direct_messages/new.json", _FORM_TYPE, body=b"text=\xff\xfe&screen_name=" + MICK.encode()),
        "v1",
        "json",
        "bad_request",
    ),
    "nul-in-form-id": (
        _raw("POST", b"/1/direct_messages/destroy.xml", _FORM_TYPE, body=b"id=1%00"),
        "statusnet",
        "xml",
        "invalid_id",
    ),
    "invalid-utf8-in-json": (
        _raw("POST", b"/1.1/direct_messages/events/new.json", _JSON_TYPE, body=b'{"event": "\xff"}'),
        "v1",
        "json",
        "bad_request",
    ),
    "gzip-that-is-not-in-a-form": (
        _raw("POST", b"/1.1/direct_messages/destroy.json", _FORM_TYPE, b"Content-Encoding: gzip", body=b"id=1"),
        "v1",
        "json",
        "bad_request",
    ),
    "gzip-that-is-not-in-json": (
        _raw("POST", b"/1.1/direct_messages/events/new.json", _JSON_TYPE, b"Content-Encoding: gzip", body=b"{}"),
        "v1",
        "json",
        "bad_request",
    ),
    "deflate-that-is-not-in-a-statusnet-form": (
        _raw("POST", b"/api/direct_messages/destroy.xml", _FORM_TYPE, b"Content-Encoding: deflate", body=b"id=1"),
        "statusnet",
        "xml",
        "bad_request",
    ),
    "non-ascii-charset": (
        _raw("POST", b"/1.1/direct_messages/destroy.json", _FORM_TYPE + b"; charset=caf\xc3\xa9", body=b"id=1"),
        "v1",
        "json",
        "bad_request",
    ),
    "non-ascii-boundary": (
        _raw(
            "POST",
            b"/api/direct_messages/destroy.xml",
            b"Content-Type: multipart/form-data; boundary=\xc3\xa9",
            body=b"id=1",
        ),
        "statusnet",
        "xml",
        "bad_request",
    ),
}


@pytest.mark.parametrize(("raw", "style", "fmt", "what"), [pytest.param(*v, id=k) for k, v in HOSTILE.items()])
async def test_hostile_bytes_get_the_dialects_4xx(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, raw: bytes, style: str, fmt: str, what: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(emulator) as runner:
        reply = await exchange(runner, raw)
    assert_legacy_error(reply, style, fmt, what)
    assert_quiet(caplog)
    assert emulator.state.requests == []


SERVED_ANYWAY = {
    "utf8-header-value": b"X-Thing: caf\xc3\xa9",
    "latin1-header-value": b"X-Thing: caf\xe9",
    "non-ascii-request-id": b"X-Request-Id: caf\xc3\xa9",
    "non-ascii-accept-encoding": b"Accept-Encoding: caf\xc3\xa9",
    "only-the-query": b"X-Pad: 1",
}


@pytest.mark.parametrize("header", [pytest.param(v, id=k) for k, v in SERVED_ANYWAY.items()])
async def test_odd_but_harmless_bytes_are_served(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    """Headers the gateway does not read, whatever their bytes, and a long query (4000 parameters) within
    aiohttp's line limit, with a suppress_response_codes that is not UTF-8."""
    caplog.set_level(logging.DEBUG)
    target = b"/api/direct_messages.xml?suppress_response_codes=%FF&" + b"a&" * 4000
    async with served(emulator) as runner:
        reply = await exchange(runner, _raw("GET", target, header))
    assert reply.status == 200, reply.body
    assert reply.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<direct-messages type="array">')
    assert_quiet(caplog)


async def test_an_unread_body_that_does_not_decode_is_no_error(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A body the route does not read is drained by aiohttp after the answer; that it is not gzip at all is
    no error of the gateway's."""
    caplog.set_level(logging.DEBUG)
    raw = _raw(
        "GET", b"/1.1/direct_messages.json", b"Content-Type: text/plain", b"Content-Encoding: gzip", body=b"x" * 100
    )
    async with served(emulator) as runner:
        reply = await exchange(runner, raw)
    assert reply.status == 200, reply.body
    assert_quiet(caplog)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"sidecar_hosts": ["dm-gateway:8080"]}, "auth.sidecar_hosts: 'dm-gateway:8080' is not a host name"),
        ({"sidecar_hosts": ["http://dm-gateway"]}, "auth.sidecar_hosts: 'http://dm-gateway' is not a host name"),
        ({"sidecar_hosts": ["*.pod.local"]}, "auth.sidecar_hosts: '*.pod.local' is not a host name"),
        ({"sidecar_hosts": [""]}, "auth.sidecar_hosts: '' is not a host name"),
        ({"sidecar": False, "sidecar_hosts": ["dm-gateway"]}, "auth.sidecar_hosts is set but auth.sidecar is false"),
    ],
)
def test_sidecar_hosts_are_host_names_for_the_sidecar_only(
    emulator: EmulatorServer, auth: dict[str, Any], message: str
) -> None:
    upstream = {"bearer_token": None} if auth.get("sidecar") is False else {}
    with pytest.raises(ConfigError) as refused:
        gateway_config(emulator, upstream=upstream, auth=auth)
    assert str(refused.value).startswith(message)
