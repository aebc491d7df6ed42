"""Slow clients, over raw sockets: heads bounded by server.keepalive_timeout, bodies by server.client_timeout.

The gateway here runs on the AppRunner options `dm-gateway serve` uses (`runner_options`), so what is
tested is the configuration as served, not aiohttp's defaults.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.emulator import EmulatorServer
from gateway.serving import runner_options
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, gateway_config

MESSAGE_ID = PLAIN_IDS[0]


async def served_gateway(aiohttp_server: Any, emulator: EmulatorServer, **server: Any) -> TestServer:
    config = gateway_config(emulator, server=server)
    return await aiohttp_server(create_app(config), **runner_options(config))


async def connect(server: TestServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port)


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> bool:
    """Send ``data`` a byte at a time; False once the server has closed the connection."""
    for byte in data:
        if writer.is_closing() or writer.transport.get_extra_info("socket") is None:
            return False
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return False
        await asyncio.sleep(pause)
    return True


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it keeps it open longer."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionResetError:
        return b""


async def post_body_slowly(server: TestServer, head: str, body: bytes) -> tuple[bytes, float]:
    """POST ``head`` and ``body``, sending all but the body's first 10 bytes a byte every 50 ms (about
    10 s for a few hundred bytes); what the server answered before closing, and how long that took."""
    reader, writer = await connect(server)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body[:10])
    await writer.drain()
    started = time.monotonic()
    sending = asyncio.create_task(trickle(writer, body[10:], 0.05))
    raw = await read_until_closed(reader, 5)
    elapsed = time.monotonic() - started
    sending.cancel()
    writer.close()
    return raw, elapsed


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def test_a_client_trickling_its_headers_is_disconnected(aiohttp_server: Any, emulator: EmulatorServer) -> None:
    client = await served_gateway(aiohttp_server, emulator, keepalive_timeout=0.5)
    reader, writer = await connect(client)
    head = (
        f"POST /1.1/direct_messages/destroy.json?id={MESSAGE_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "X-Pad: a\r\n" * 40
    )
    started = time.monotonic()
    sending = asyncio.create_task(trickle(writer, head.encode(), 0.02))  # about 10 s for the whole head
    closed = await read_until_closed(reader, 5)
    elapsed = time.monotonic() - started
    assert closed == b""  # cut off without an answer: there is no request to answer yet
    assert elapsed < 3, elapsed
    sending.cancel()
    writer.close()
    assert emulator.state.requests == []


async def test_an_idle_keep_alive_connection_is_closed(aiohttp_server: Any, emulator: EmulatorServer) -> None:
    client = await served_gateway(aiohttp_server, emulator, keepalive_timeout=0.5)
    reader, writer = await connect(client)
    writer.write(f"POST /1.1/direct_messages/destroy.json?id={MESSAGE_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    started = time.monotonic()
    await read_until_closed(reader, 5)  # the rest of the answer, then the close
    assert time.monotonic() - started < 3
    writer.close()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/1.1/direct_messages/destroy.json",
            b'{"errors":[{"code":214,"message":"Request body was not received in time."}]}',
        ),
        ("/api/direct_messages/destroy.xml", b"<error>Request body was not received in time.</error>"),
    ],
)
async def test_a_slow_form_body_gets_408_in_the_dialects_shape_and_the_connection_closes(
    aiohttp_server: Any, emulator: EmulatorServer, path: str, expected: bytes
) -> None:
    client = await served_gateway(aiohttp_server, emulator, client_timeout=0.5)
    body = f"id={MESSAGE_ID}&pad={'x' * 200}".encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    raw, elapsed = await post_body_slowly(client, head, body)
    assert elapsed < 3
    status, headers, answer = split_response(raw)
    assert status == 408, raw
    assert expected in answer
    assert headers.get("connection") == "close"
    assert emulator.state.requests == []
    assert not emulator.state.is_deleted_for(MESSAGE_ID, "38895958")


async def test_a_slow_json_body_of_an_events_send_gets_408_and_nothing_is_sent(
    aiohttp_server: Any, emulator: EmulatorServer
) -> None:
    client = await served_gateway(aiohttp_server, emulator, client_timeout=0.5)
    body = (
        b'{"event": {"type": "message_create", "message_create": {"target": {"recipient_id": "776627022"}, '
        b'"message_data": {"text": "slow"}}}}'
    )
    head = "POST /1.1/direct_messages/events/new.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    raw, _ = await post_body_slowly(client, head, body)
    status, headers, answer = split_response(raw)
    assert status == 408, raw
    assert b'"code":214' in answer and headers.get("connection") == "close"
    assert [r for r in emulator.state.requests if r.method == "POST"] == []


async def test_a_slow_pass_through_body_gets_408_problem_json(aiohttp_server: Any, emulator: EmulatorServer) -> None:
    client = await served_gateway(aiohttp_server, emulator, client_timeout=0.5)
    body = orjson.dumps({"text": "hello " * 50})
    head = (
        "POST /2/dm_conversations/with/776627022/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {SEAN_TOKEN}\r\nContent-Type: application/json\r\n"
    )
    events = len(emulator.state.events)
    raw, _ = await post_body_slowly(client, head, body)
    status, headers, answer = split_response(raw)
    assert status == 408, raw
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(answer)["status"] == 408
    assert headers.get("connection") == "close"
    await asyncio.sleep(0.2)  # the upstream side of the cut request has ended too
    assert len(emulator.state.events) == events  # no message was sent with half a body


async def test_a_body_in_pieces_within_the_limit_is_served(aiohttp_server: Any, emulator: EmulatorServer) -> None:
    client = await served_gateway(aiohttp_server, emulator, client_timeout=5.0)
    reader, writer = await connect(client)
    body = f"id={MESSAGE_ID}".encode()
    head = (
        "POST /1.1/direct_messages/destroy.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:3])
    await writer.drain()
    assert await trickle(writer, body[3:], 0.02)
    status, _, answer = split_response(await read_until_closed(reader, 5))
    writer.close()
    assert status == 200, answer
    assert orjson.loads(answer)["id_str"] == MESSAGE_ID
