"""The v2 pass-through when the client's own request body breaks, end to end through raw sockets.

The pass-through streams the client's body upstream as it arrives, so upstream has the request head (and
perhaps the start of the body) before the gateway learns that the body is broken: a chunk size that is no
number, a ``Content-Encoding`` whose bytes do not decode, a client that hangs up halfway. Each is the
client's doing: the client, if it is still there, gets v2's problem+json 400 (or 408), never a 5xx; nothing
is logged at ERROR; the circuit breaker shared by every caller does not hear of it; and upstream never gets
a complete request it could act on, so nothing is sent and nothing is learned.

A body that does decode is forwarded decoded (aiohttp's server has already decompressed it), without the
``Content-Encoding`` it no longer has and without the client's ``Content-Length`` of the compressed bytes.

The gateway is served as ``dm-gateway serve`` serves it (``GatewayRunner`` with ``runner_options``), with
the sidecar on, so every attack carries a bearer token of its own.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import logging
import zlib
from typing import Any

import orjson
import pytest

from gateway.edge import GatewayRunner
from gateway.emulator import EmulatorServer
from gateway.keys import BREAKERS_KEY, CONFIG_KEY, METRICS_KEY, STORE_KEY
from gateway.upstream.resilience import BreakerState
from tests.conftest import MICK_TOKEN, SEAN_TOKEN
from tests.test_hostile_edge import assert_quiet, parse_reply, port_of, served, until

SEAN_ID, MICK_ID = "38895958", "776627022"
SEND_PATH = f"/2/dm_conversations/with/{SEAN_ID}/messages"  # Mick writes to Sean
PROBLEM = "application/problem+json"
ROUTE = "/2/{tail}"
ATTEMPTS = 6  # one more than the breaker's default run of failures
# The default per-caller budget, and none at all (every failure counts), so the budget cannot hide a count.
BUDGETS = [pytest.param({}, id="default-budget"), pytest.param({"breaker_failures_per_caller": 0}, id="no-budget")]


# --- plumbing ------------------------------------------------------------------------------------------


def head(*lines: str) -> bytes:
    fields = [
        f"POST {SEND_PATH} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {MICK_TOKEN}",
        "Content-Type: application/json",
        *lines,
    ]
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def breaker_state(runner: GatewayRunner) -> BreakerState:
    app = runner.app
    return app[BREAKERS_KEY].for_url(app[CONFIG_KEY].upstream.base_url).state


def statuses(runner: GatewayRunner) -> list[str]:
    """The status of every pass-through request the gateway has answered, as its metrics count them."""
    found: list[str] = []
    for family in runner.app[METRICS_KEY].requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("route") == ROUTE:
                found += [sample.labels["status"]] * int(sample.value)
    return sorted(found)


def assert_problem(raw: bytes, status: int) -> dict[str, Any]:
    """v2's problem document in ``raw``, an answer read up to the end of the connection (which the gateway
    closed: the client never does before it has read)."""
    reply = parse_reply(raw)
    assert reply.status == status, raw
    assert reply.headers["Content-Type"] == PROBLEM
    document = orjson.loads(reply.body)
    assert document["status"] == status and document["type"] == "about:blank"
    return document


async def upstream_has_the_head(emulator: EmulatorServer, count: int) -> None:
    """Wait until the gateway has sent upstream the head of the ``count``-th request: its body is being
    streamed there."""
    await until(lambda: len(emulator.state.requests) >= count)


async def nothing_was_sent(runner: GatewayRunner, emulator: EmulatorServer, events: int) -> None:
    """Upstream got heads only, no message was created, none was looked up or learned, and the breaker
    is closed; a legacy caller is still served."""
    assert {(r.method, r.path) for r in emulator.state.requests} <= {("POST", SEND_PATH)}
    assert len(emulator.state.events) == events
    assert await runner.app[STORE_KEY].get_users([SEAN_ID, MICK_ID]) == {}  # nothing learned
    assert breaker_state(runner) is BreakerState.CLOSED
    emulator.state.requests.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
    writer.write(
        f"GET /1.1/direct_messages.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {SEAN_TOKEN}\r\n\r\n".encode()
    )
    reply = parse_reply(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    assert reply.status == 200, reply.body


# --- 1. bodies that break: 400 or 408, no ERROR, the breaker untold ------------------------------------

BAD_CHUNKS = [
    pytest.param(b"zz\r\n", id="not-hex"),
    pytest.param(b"-1\r\n", id="negative"),
    pytest.param(b"4;\x00\r\nabcd\r\n", id="nul-in-extension"),
    pytest.param(b"2\r\nabcd\r\n", id="longer-than-said"),
]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("chunk", BAD_CHUNKS)
async def test_a_bad_chunk_after_the_head_is_a_400(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, budget: dict[str, Any], chunk: bytes
) -> None:
    """The first chunk is good and reaches upstream with the head; the next one is no chunk at all."""
    caplog.set_level(logging.DEBUG)
    events = len(emulator.state.events)
    async with served(emulator, server={"client_timeout": 60}, upstream={"retries": 0, **budget}) as runner:
        for attempt in range(1, ATTEMPTS + 1):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
            writer.write(head("Transfer-Encoding: chunked") + b'9\r\n{"text":"\r\n')
            await writer.drain()
            await upstream_has_the_head(emulator, attempt)
            writer.write(chunk)
            document = assert_problem(await asyncio.wait_for(reader.read(), 10), 400)
            assert document["detail"] == "The request body could not be read."
            writer.close()
        await until(lambda: len(statuses(runner)) == ATTEMPTS)
        assert statuses(runner) == ["400"] * ATTEMPTS
        await nothing_was_sent(runner, emulator, events)
    assert_quiet(caplog)


def _not(coding: str) -> bytes:
    """Bytes that claim to be ``coding`` and are not."""
    return b'{"text":"plain, not ' + coding.encode() + b'"}'


def _truncated(coding: str) -> bytes:
    whole = gzip.compress(b'{"text":"' + b"x" * 5000 + b'"}') if coding == "gzip" else zlib.compress(b"y" * 5000)
    return whole[: len(whole) // 2] + b"\x00" * 50


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("make", [_not, _truncated], ids=["not-compressed", "corrupt"])
async def test_a_body_whose_content_coding_does_not_decode_is_a_400(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, budget: dict[str, Any], coding: str, make: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    body = make(coding)
    events = len(emulator.state.events)
    async with served(emulator, server={"client_timeout": 60}, upstream={"retries": 0, **budget}) as runner:
        for _ in range(ATTEMPTS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
            writer.write(head(f"Content-Encoding: {coding}", f"Content-Length: {len(body)}") + body)
            await writer.drain()
            document = assert_problem(await asyncio.wait_for(reader.read(), 10), 400)
            assert document["detail"] == "The request body could not be read."
            writer.close()
        await until(lambda: len(statuses(runner)) == ATTEMPTS)
        assert statuses(runner) == ["400"] * ATTEMPTS
        await nothing_was_sent(runner, emulator, events)
    assert_quiet(caplog)


# (extra head lines, the bytes sent before the client closes)
CUT_SHORT = [
    pytest.param(("Content-Length: 1000",), b'{"text":"h', id="content-length"),
    pytest.param(("Transfer-Encoding: chunked",), b'9\r\n{"text":"\r\n5\r\nhel', id="chunked"),
    # Stored (level 0) deflate blocks: the start of the body decodes to the start of the JSON at once.
    pytest.param(
        ("Content-Length: 1000", "Content-Encoding: gzip"),
        gzip.compress(b'{"text":"' + b"x" * 2000, compresslevel=0)[:60],
        id="gzip",
    ),
]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("lines", "start"), CUT_SHORT)
@pytest.mark.parametrize("close", ["close", "abort"])
async def test_a_client_closing_mid_body_is_no_upstream_failure(
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    budget: dict[str, Any],
    lines: tuple[str, ...],
    start: bytes,
    close: str,
) -> None:
    """The client sends the head and the start of the body, upstream gets them, and the client goes."""
    caplog.set_level(logging.DEBUG)
    events = len(emulator.state.events)
    async with served(emulator, server={"client_timeout": 60}, upstream={"retries": 0, **budget}) as runner:
        for attempt in range(1, ATTEMPTS + 1):
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
            writer.write(head(*lines) + start)
            await writer.drain()
            await upstream_has_the_head(emulator, attempt)
            if close == "close":
                writer.close()  # a FIN: the client is done sending
            else:
                writer.transport.abort()  # a RST
        await until(lambda: len(statuses(runner)) == ATTEMPTS)  # every handler has run to its end
        await until(lambda: not runner.server.connections)
        assert statuses(runner) == ["408"] * ATTEMPTS
        await nothing_was_sent(runner, emulator, events)
    assert_quiet(caplog)


# --- 2. a compressed body goes upstream decoded, and says so --------------------------------------------


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZip", gzip.compress)],
    ids=["gzip", "deflate", "gzip-any-case"],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_compressed_body_goes_upstream_decoded(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, coding: str, compress: Any, framing: str
) -> None:
    """The gateway's server decompresses the body; upstream gets those bytes, and no header that says they
    are compressed or gives the compressed length. The send goes through and names the text sent."""
    caplog.set_level(logging.DEBUG)
    text = "zipped hello " * 20
    plain = orjson.dumps({"text": text})
    body = compress(plain)
    assert len(body) < len(plain)
    if framing == "chunked":
        raw = head(f"Content-Encoding: {coding}", "Transfer-Encoding: chunked", "Connection: close") + _chunked(body)
    else:
        raw = head(f"Content-Encoding: {coding}", f"Content-Length: {len(body)}", "Connection: close") + body
    events = set(emulator.state.events)
    async with served(emulator) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(raw)
        await writer.drain()
        reply = parse_reply(await asyncio.wait_for(reader.read(), 10))
        writer.close()
    assert reply.status == 201, reply.body
    sent = orjson.loads(reply.body)["data"]["dm_event_id"]
    assert set(emulator.state.events) - events == {sent}
    assert emulator.state.events[sent]["text"] == text
    [request] = [r for r in emulator.state.requests if r.method == "POST"]
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert "content-encoding" not in headers
    assert headers.get("content-length", str(len(plain))) == str(len(plain))
    assert_quiet(caplog)


async def test_a_content_coding_the_server_does_not_decode_goes_upstream_as_it_came(
    emulator: EmulatorServer,
) -> None:
    """Only the codings aiohttp's server decodes are taken off; any other stays with its bytes, for v2 to
    judge (the emulator, like v2, takes no compressed bodies)."""
    body = b'{"text":"as it came"}'
    raw = head("Content-Encoding: x-custom", f"Content-Length: {len(body)}", "Connection: close") + body
    async with served(emulator) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(raw)
        reply = parse_reply(await asyncio.wait_for(reader.read(), 10))
        writer.close()
    [request] = [r for r in emulator.state.requests if r.method == "POST"]
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["content-encoding"] == "x-custom"
    assert headers["content-length"] == str(len(body))
    assert reply.status < 500


@pytest.mark.parametrize(("coding", "library"), [("br", "brotli"), ("zstd", "backports.zstd")])
async def test_a_content_coding_the_server_cannot_decode_here_is_a_400(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, coding: str, library: str
) -> None:
    """aiohttp's server knows br and zstd but decodes them only with an optional library; without it the
    request does not parse: v2's 400, and nothing goes upstream."""
    if importlib.util.find_spec(library.partition(".")[0]) is not None:
        pytest.skip(f"{library} is installed: {coding} bodies decode here")
    caplog.set_level(logging.DEBUG)
    body = b'{"text":"hi"}'
    async with served(emulator) as runner:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runner))
        writer.write(head(f"Content-Encoding: {coding}", f"Content-Length: {len(body)}") + body)
        document = assert_problem(await asyncio.wait_for(reader.read(), 10), 400)
        writer.close()
        assert document["detail"] == "The request could not be read."
        assert breaker_state(runner) is BreakerState.CLOSED
    assert emulator.state.requests == []
    assert_quiet(caplog)
