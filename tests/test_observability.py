"""What the gateway tells its operator: the JSON access log, store hits and misses, and metric labels that
never carry an id."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.accesslog import AccessLogger, BareLines
from gateway.admin import create_admin_app
from gateway.app import create_app
from gateway.emulator import EmulatorServer, FaultRule
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, gateway_config
from tests.test_faults import header

MESSAGE_ID = PLAIN_IDS[0]
MESSAGE_TEXT = "second message"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_log() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger(f"test.access.{uuid.uuid4().hex}")
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, lines
    logger.removeHandler(lines)


async def logged_gateway(aiohttp_client: Any, emulator: EmulatorServer, logger: logging.Logger) -> TestClient:
    server = TestServer(create_app(gateway_config(emulator)))
    await server.start_server(access_log_class=AccessLogger, access_log=logger)
    return await aiohttp_client(server)


async def entries(lines: Lines, count: int) -> list[dict[str, Any]]:
    """Every line must be one JSON object, and nothing else. The server logs a request after sending its
    response, so the client may be a moment ahead: wait for ``count`` lines."""
    for _ in range(100):
        if len(lines.lines) >= count:
            break
        await asyncio.sleep(0.01)
    return [orjson.loads(line) for line in lines.lines]


async def test_one_json_line_per_request_with_no_secret_query_or_text(
    aiohttp_client: Any, emulator: EmulatorServer, access_log: tuple[logging.Logger, Lines]
) -> None:
    logger, lines = access_log
    gateway = await logged_gateway(aiohttp_client, emulator, logger)
    response = await gateway.post(
        f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}&oauth_signature=SIGNATURE-IN-QUERY",
        headers={"Authorization": f"Bearer {SEAN_TOKEN}", "X-Request-Id": "req-1", "Cookie": "session=COOKIE"},
        data={"text": "private words in the form"},
    )
    assert response.status == 200
    assert MESSAGE_TEXT in await response.text()

    [entry] = await entries(lines, 1)
    assert list(entry) == ["time", "method", "path", "status", "duration_ms", "request_id", "dialect", "remote", "pid"]
    assert entry["method"] == "POST"
    assert entry["path"] == "/1.1/direct_messages/destroy.json"
    assert entry["status"] == 200
    assert entry["request_id"] == "req-1"
    assert entry["dialect"] == "twitter_v1"
    assert entry["remote"] == "127.0.0.1"
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] > 0
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    # The request id in the log is the one every upstream request carried.
    assert {header(r, "X-Request-Id") for r in emulator.state.requests} == {"req-1"}
    line = lines.lines[0]
    for secret in (SEAN_TOKEN, "SIGNATURE-IN-QUERY", "COOKIE", "private words", MESSAGE_TEXT, "?", MESSAGE_ID):
        assert secret not in line


async def test_each_dialect_and_the_pass_through_are_named(
    aiohttp_client: Any, emulator: EmulatorServer, access_log: tuple[logging.Logger, Lines]
) -> None:
    logger, lines = access_log
    gateway = await logged_gateway(aiohttp_client, emulator, logger)
    await gateway.delete(f"/1.1/direct_messages/events/destroy.json?id={MESSAGE_ID}")
    await gateway.post(f"/api/direct_messages/destroy/{PLAIN_IDS[1]}.xml")
    await gateway.get(f"/2/dm_events/{MESSAGE_ID}", headers={"Authorization": f"Bearer {SEAN_TOKEN}"})
    await gateway.get("/nowhere?token=abc")
    logged = await entries(lines, 4)
    assert [(e["path"], e.get("dialect")) for e in logged] == [
        ("/1.1/direct_messages/events/destroy.json", "twitter_events"),
        (f"/api/direct_messages/destroy/{PLAIN_IDS[1]}.xml", "statusnet"),
        (f"/2/dm_events/{MESSAGE_ID}", "v2"),
        ("/nowhere", None),
    ]
    generated = logged[0]["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)  # none sent: the gateway's own, sent upstream too
    assert header(emulator.state.requests[0], "X-Request-Id") == generated


def test_a_logger_without_handlers_writes_bare_json_lines() -> None:
    logger = logging.getLogger(f"test.bare.{uuid.uuid4().hex}")
    try:
        assert AccessLogger(logger, "").enabled
        [handler] = logger.handlers
        assert handler.formatter is not None and handler.formatter._fmt == "%(message)s"
        assert logger.propagate is False
        AccessLogger(logger, "")  # a second one (another runner) adds nothing
        assert len(logger.handlers) == 1
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


class Writes:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def bare_logger() -> Iterator[tuple[logging.Logger, Writes]]:
    """A logger as ``serve`` leaves aiohttp's access logger: its own ``BareLines`` handler, here on a stream
    that keeps each write."""
    logger = logging.getLogger(f"test.lines.{uuid.uuid4().hex}")
    AccessLogger(logger, "")
    handler = bare_lines(logger)
    stream = Writes()
    handler.setStream(stream)  # type: ignore[arg-type]
    yield logger, stream
    logger.removeHandler(handler)


def bare_lines(logger: logging.Logger) -> BareLines:
    """The logger's ``BareLines`` handler, alone on it as in ``serve``: pytest's own log capture adds a
    handler to every logger that does not propagate, which is taken away again here."""
    for handler in list(logger.handlers):
        if not isinstance(handler, BareLines):
            logger.removeHandler(handler)
    [handler] = logger.handlers
    assert isinstance(handler, BareLines)
    return handler


async def test_a_bare_logger_writes_each_request_as_a_whole_line(
    aiohttp_client: Any, emulator: EmulatorServer, bare_logger: tuple[logging.Logger, Writes]
) -> None:
    logger, stream = bare_logger
    bare_lines(logger)
    gateway = await logged_gateway(aiohttp_client, emulator, logger)
    paths = [f"/nowhere/{n}" for n in range(6)]
    answers = await asyncio.gather(*(gateway.get(path) for path in paths))
    assert {answer.status for answer in answers} == {404}
    for _ in range(100):
        if sum(write.count("\n") for write in stream.writes) >= len(paths):
            break
        await asyncio.sleep(0.01)
    text = "".join(stream.writes)
    assert text.endswith("\n")
    assert sorted(orjson.loads(line)["path"] for line in text.splitlines()) == paths
    assert all(write.endswith("\n") for write in stream.writes)


async def test_the_lines_of_one_loop_turn_go_out_in_one_write(bare_logger: tuple[logging.Logger, Writes]) -> None:
    logger, stream = bare_logger
    handler = bare_lines(logger)
    for n in range(3):
        handler.add(f'{{"n":{n}}}')
    assert stream.writes == []
    await asyncio.sleep(0)
    assert stream.writes == ['{"n":0}\n{"n":1}\n{"n":2}\n']
    handler.add('{"n":3}')
    await asyncio.sleep(0)
    assert stream.writes[1:] == ['{"n":3}\n']


async def test_waiting_lines_go_before_any_other_line_and_at_a_flush(
    bare_logger: tuple[logging.Logger, Writes],
) -> None:
    logger, stream = bare_logger
    handler = bare_lines(logger)
    handler.add('{"n":1}')
    handler.add('{"n":2}')
    assert stream.writes == []  # until the next loop turn
    logger.warning("a plain line")
    assert stream.writes == ['{"n":1}\n{"n":2}\n', "a plain line\n"]
    handler.add('{"n":3}')
    handler.flush()  # as logging does at exit
    assert stream.writes[-1] == '{"n":3}\n'
    await asyncio.sleep(0)  # the turn's own flush finds nothing left
    assert len(stream.writes) == 3


def test_outside_a_loop_a_line_is_written_at_once(bare_logger: tuple[logging.Logger, Writes]) -> None:
    logger, stream = bare_logger
    handler = bare_lines(logger)
    handler.add('{"n":1}')
    assert stream.writes == ['{"n":1}\n']


async def samples(admin: TestClient) -> list[Any]:
    response = await admin.get("/metrics")
    return [s for family in text_string_to_metric_families(await response.text()) for s in family.samples]


def value(all_samples: list[Any], name: str, **labels: str) -> float:
    for sample in all_samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


async def test_store_lookups_count_hits_and_misses(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    app = create_app(gateway_config(emulator, upstream={"retries": 0}))
    gateway = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app))
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", status=503, times=1))
    assert (await gateway.post(f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}")).status == 503  # a miss
    assert (await gateway.post(f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}")).status == 200  # a hit
    assert (await gateway.delete(f"/1.1/direct_messages/events/destroy.json?id={PLAIN_IDS[1]}")).status == 204
    found = await samples(admin)
    assert value(found, "dmgw_store_lookups_total", result="miss") == 1
    assert value(found, "dmgw_store_lookups_total", result="hit") == 1  # the events dialect looks nothing up


async def test_upstream_metric_labels_are_templates_never_ids(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    app = create_app(gateway_config(emulator))
    gateway = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app))
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", status=503, times=1))
    assert (await gateway.post(f"/1.1/direct_messages/destroy.json?id={MESSAGE_ID}")).status == 200
    found = [s for s in await samples(admin) if s.name.startswith("dmgw_upstream")]
    endpoints = {s.labels["endpoint"] for s in found}
    assert endpoints == {"GET /2/dm_events/:id", "GET /2/users", "DELETE /2/dm_events/:id"}
    assert not any(MESSAGE_ID in str(s.labels) for s in found)
    assert value(found, "dmgw_upstream_retries_total", endpoint="DELETE /2/dm_events/:id", reason="503") == 1
