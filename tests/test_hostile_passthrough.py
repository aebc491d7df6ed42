"""The v2 pass-through and the shared circuit breaker under attack, end to end through raw sockets.

A request target is the client's to write: the absolute form (``GET http://evil.example/2/users/me``) and
the authority form (``CONNECT evil.example:443``) name a host. The gateway only ever talks to the host of
``upstream.base_url``, so nothing a host of the caller's choosing answers can be learned into the store.

The breaker that guards that host is shared by every caller, so only upstream trouble counts toward it (not
a client's own slow or abandoned body, not a 4xx), and no one caller can open it for the others: it takes at
most ``upstream.breaker_failures_per_caller`` failures from any one identity.

To have a base URL without a port (as ``https://api.x.com`` is) in front of an emulator on a free port, the
tests resolve names of their own (``*.test``) through the event loop's ``getaddrinfo``, which aiohttp's
default resolver asks, and record every name asked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import Config
from gateway.emulator import EmulatorServer, FaultRule
from gateway.keys import BREAKERS_KEY, CONFIG_KEY, METRICS_KEY
from gateway.serving import runner_options
from gateway.upstream.client import DM_EVENT_FIELDS, USER_FIELDS
from gateway.upstream.resilience import BreakerState, CircuitBreaker
from tests.conftest import (
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEAN_TOKEN,
    XDEV_TOKEN,
    GatewayFactory,
    gateway_config,
    store_of,
)

SEAN_ID, MICK_ID = "38895958", "776627022"
MESSAGE_ID = PLAIN_IDS[0]  # theSeanCook -> s0c1alm3dia, "second message"
MESSAGE_TEXT = "second message"
# Everything a legacy view needs: an answer to a pass-through request asking for this much is learned from.
FULL_QUERY = f"dm_event.fields={DM_EVENT_FIELDS}&expansions=sender_id,participant_ids&user.fields={USER_FIELDS}"
PLANTED_TEXT = "planted by a host the caller chose"
UPSTREAM_NAME = "upstream.test"  # the gateway's upstream, as a name without a port
PROBLEM = "application/problem+json"
SEND_PATH = f"/2/dm_conversations/with/{MICK_ID}/messages"
VICTIM_DESTROY = f"/1.1/direct_messages/events/destroy.json?id={MESSAGE_ID}"
ATTACKER_DESTROY = f"DELETE /1.1/direct_messages/events/destroy.json?id={PLAIN_IDS[1]} HTTP/1.1"


# --- plumbing ------------------------------------------------------------------------------------------


class Names:
    """Test names for the event loop's resolver: ``name -> (address, port)``; ``asked`` records every
    name looked up, in order."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[str, int]] = {}
        self.asked: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        if name not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address, real_port = self.table[name]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, real_port))]


@pytest.fixture
async def names(monkeypatch: pytest.MonkeyPatch) -> Names:
    resolver = Names()
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver.getaddrinfo)
    return resolver


@pytest.fixture
async def evil() -> AsyncIterator[EmulatorServer]:
    """A second v2 server: the host an attacker would like the gateway to talk to."""
    async with EmulatorServer() as server:
        yield server


async def plant(evil: EmulatorServer, emulator: EmulatorServer) -> None:
    """Have ``evil`` answer every v2 request with the real event of MESSAGE_ID, its text replaced."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{emulator.url}/2/dm_events/{MESSAGE_ID}?{FULL_QUERY}", headers={"Authorization": f"Bearer {SEAN_TOKEN}"}
        ) as response,
    ):
        assert response.status == 200
        body = await response.json()
    emulator.state.requests.clear()
    body["data"]["text"] = PLANTED_TEXT
    evil.state.faults.append(FaultRule(status=200, body=body))


@dataclass
class Served:
    """A gateway served as ``dm-gateway serve`` serves it (aiohttp's test server cancels the handler of a
    client that goes away; the gateway's own runner lets it finish)."""

    app: web.Application
    host: str
    port: int


@asynccontextmanager
async def served(config: Config) -> AsyncIterator[Served]:
    app = create_app(config)
    runner = web.AppRunner(app, **runner_options(config))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Served(app, "127.0.0.1", runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def raw(
    client: TestClient | Served, request_line: str, *headers: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send one request exactly as written over a socket of its own; the status, headers and body."""
    server = client.server if isinstance(client, TestClient) else client
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = "\r\n".join([request_line, "Host: 127.0.0.1", "Connection: close", *headers]) + "\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, content


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


def problem_of(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == PROBLEM, (status, body)
    document = orjson.loads(body)
    assert document["status"] == status and document["type"] == "about:blank"
    return document


def calls(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def breaker_of(client: TestClient | Served) -> Any:
    app = client.server.app if isinstance(client, TestClient) else client.app
    return app[BREAKERS_KEY].for_url(app[CONFIG_KEY].upstream.base_url)


def answered(app: web.Application, route: str) -> float:
    """How many requests the gateway has answered on ``route`` (a route template), any status."""
    total = 0.0
    for family in app[METRICS_KEY].requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("route") == route:
                total += sample.value
    return total


async def eventually(condition: Any, within: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail if it does not within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def victim_destroys(client: TestClient | Served, emulator: EmulatorServer) -> None:
    """Another caller's legacy destroy goes through: answered, and sent upstream."""
    emulator.state.requests.clear()
    status, _, body = await raw(client, f"DELETE {VICTIM_DESTROY} HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 204, body
    assert calls(emulator) == [("DELETE", f"/2/dm_events/{MESSAGE_ID}")]


# --- 1. the request target never chooses the host ------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["x://h/2/users/me", "pany://evil/2/users/me", "HTTP://EVIL.example:8080/2/users/me"]
)
async def test_an_absolute_form_target_is_reduced_to_its_path_with_a_base_url_port(
    make_gateway: GatewayFactory, emulator: EmulatorServer, target: str
) -> None:
    """The emulator's URL has a port: gluing the target onto it was a 500 and a traceback."""
    client = await make_gateway()
    status, _headers, body = await raw(client, f"GET {target}?user.fields=id HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 200, body
    assert orjson.loads(body)["data"]["id"] == SEAN_ID
    assert calls(emulator) == [("GET", "/2/users/me")]
    assert emulator.state.requests[0].query == {"user.fields": "id"}


async def test_an_absolute_form_target_cannot_reach_a_host_extending_the_base_url(
    make_gateway: GatewayFactory, emulator: EmulatorServer, evil: EmulatorServer, names: Names
) -> None:
    """Base ``http://upstream.test`` and target ``pany://evil/...`` once made ``http://upstream.testpany:...``:
    a host the attacker names (as ``https://api.x.com`` became ``api.x.company``)."""
    names.table[UPSTREAM_NAME] = ("127.0.0.1", emulator.port)
    names.table[UPSTREAM_NAME + "pany"] = ("127.0.0.1", evil.port)
    await plant(evil, emulator)
    client = await make_gateway(upstream={"base_url": f"http://{UPSTREAM_NAME}"})
    target = f"pany://evil/2/dm_events/{MESSAGE_ID}?{FULL_QUERY}"
    status, _, body = await raw(client, f"GET {target} HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 200, body
    assert orjson.loads(body)["data"]["text"] == MESSAGE_TEXT
    assert set(names.asked) == {UPSTREAM_NAME}
    assert evil.state.requests == []
    assert calls(emulator) == [("GET", f"/2/dm_events/{MESSAGE_ID}")]
    # What is learned is the real upstream's answer, never the other host's.
    learned = await store_of(client).get_message(MESSAGE_ID)
    assert learned is not None and learned.text == MESSAGE_TEXT


@pytest.mark.parametrize("scheme", ["http", "https", "x"])
async def test_an_absolute_form_target_naming_a_listening_host_never_reaches_it(
    make_gateway: GatewayFactory, emulator: EmulatorServer, evil: EmulatorServer, names: Names, scheme: str
) -> None:
    names.table[UPSTREAM_NAME] = ("127.0.0.1", emulator.port)
    names.table["evil.test"] = ("127.0.0.1", evil.port)
    await plant(evil, emulator)
    client = await make_gateway(upstream={"base_url": f"http://{UPSTREAM_NAME}"})
    store = store_of(client)
    for authority in (f"127.0.0.1:{evil.port}", f"evil.test:{evil.port}", "evil.test"):
        target = f"{scheme}://{authority}/2/dm_events/{PLAIN_IDS[1]}?{FULL_QUERY}"
        status, _, body = await raw(client, f"GET {target} HTTP/1.1", bearer(SEAN_TOKEN))
        assert status == 200, body
        assert orjson.loads(body)["data"]["id"] == PLAIN_IDS[1]
    assert evil.state.requests == []
    assert set(names.asked) == {UPSTREAM_NAME}
    assert calls(emulator) == [("GET", f"/2/dm_events/{PLAIN_IDS[1]}")] * 3
    # Nothing of the planted event is in the store: it holds what the real upstream said.
    assert await store.get_message(MESSAGE_ID) is None
    learned = await store.get_message(PLAIN_IDS[1])
    assert learned is not None and learned.text != PLANTED_TEXT


async def test_the_default_base_url_is_the_only_host_asked_for(make_gateway: GatewayFactory, names: Names) -> None:
    """``https://api.x.com`` plus ``pany://evil/...`` was a request to ``api.x.company``. No name resolves
    here, so the pass-through answers 502; what matters is the one name it asked for."""
    client = await make_gateway(upstream={"base_url": "https://api.x.com"})
    status, headers, body = await raw(client, "GET pany://evil/2/users/me HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 502
    problem_of(status, headers, body)
    assert names.asked == ["api.x.com"]


async def test_an_origin_form_target_starting_with_two_slashes_stays_a_path(
    make_gateway: GatewayFactory, emulator: EmulatorServer, evil: EmulatorServer, names: Names
) -> None:
    names.table[UPSTREAM_NAME] = ("127.0.0.1", emulator.port)
    names.table["evil.test"] = ("127.0.0.1", evil.port)
    client = await make_gateway(upstream={"base_url": f"http://{UPSTREAM_NAME}"})
    status, _, _ = await raw(client, f"GET //evil.test:{evil.port}/2/users/me HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 404  # no such route here; not a host
    assert evil.state.requests == [] and set(names.asked) <= {UPSTREAM_NAME}


@pytest.mark.parametrize(
    "path", ["/2/../_emulator/state", "/2/a/../../x", "/2/%2e%2e/x", "/2/.%2E/x", "/2/./users/me", "/2/users/%2E"]
)
async def test_a_path_with_dot_segments_is_refused(
    make_gateway: GatewayFactory, emulator: EmulatorServer, path: str
) -> None:
    """Dot segments could take a /2/ path elsewhere on the upstream host, once resolved there."""
    client = await make_gateway()
    status, headers, body = await raw(client, f"GET {path} HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 400
    assert "segments" in problem_of(status, headers, body)["detail"]
    assert emulator.state.requests == []


@pytest.mark.parametrize(
    ("target", "status"), [("evil.test:443", 404), ("/2/users/me", 404), ("http://evil.test/2/users/me", 400)]
)
async def test_connect_reaches_nothing(
    make_gateway: GatewayFactory, emulator: EmulatorServer, evil: EmulatorServer, names: Names, target: str, status: int
) -> None:
    """CONNECT asks for a tunnel to the host its authority-form target names. aiohttp routes no CONNECT (it
    reads every CONNECT target as an authority, so there is no path): the fallback dialect's unknown-route
    answer, or aiohttp's own 400 for a target that is no authority at all. No host is even looked up."""
    names.table[UPSTREAM_NAME] = ("127.0.0.1", emulator.port)
    names.table["evil.test"] = ("127.0.0.1", evil.port)
    client = await make_gateway(upstream={"base_url": f"http://{UPSTREAM_NAME}"})
    answer, _headers, body = await raw(client, f"CONNECT {target} HTTP/1.1", bearer(SEAN_TOKEN))
    assert answer == status, body
    if status == 404:
        assert orjson.loads(body) == {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}
    assert emulator.state.requests == [] and evil.state.requests == []
    assert names.asked == []


async def test_a_legacy_absolute_form_target_reaches_only_the_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, evil: EmulatorServer, names: Names
) -> None:
    names.table[UPSTREAM_NAME] = ("127.0.0.1", emulator.port)
    names.table["evil.test"] = ("127.0.0.1", evil.port)
    await plant(evil, emulator)
    client = await make_gateway(upstream={"base_url": f"http://{UPSTREAM_NAME}"})
    target = f"http://evil.test:{evil.port}/1.1/direct_messages/destroy.json?id={MESSAGE_ID}"
    status, _, body = await raw(client, f"POST {target} HTTP/1.1", bearer(SEAN_TOKEN), "Content-Length: 0")
    assert status == 200, body
    assert orjson.loads(body)["text"] == MESSAGE_TEXT  # the real message, not the planted one
    assert evil.state.requests == []
    assert set(names.asked) == {UPSTREAM_NAME}
    assert calls(emulator)[0] == ("GET", f"/2/dm_events/{MESSAGE_ID}")
    assert calls(emulator)[-1] == ("DELETE", f"/2/dm_events/{MESSAGE_ID}")


# --- 2. only upstream trouble counts toward the breaker --------------------------------------------------

SLOW = {"timeout": 0.3, "retries": 0}


async def test_slow_pass_through_bodies_do_not_open_the_breaker(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """Six sends whose bodies stop after 9 of 1000 bytes: upstream times out waiting for them. That is the
    client's doing: 408 to the client, and the breaker is untouched."""
    client = await make_gateway(upstream=SLOW, server={"client_timeout": 30.0})

    async def stalled_send() -> tuple[int, dict[str, str], bytes]:
        return await raw(
            client,
            f"POST {SEND_PATH} HTTP/1.1",
            bearer(MICK_TOKEN),
            "Content-Type: application/json",
            "Content-Length: 1000",
            body=b'{"text":"',
        )

    events = len(emulator.state.events)
    for status, headers, body in await asyncio.gather(*(stalled_send() for _ in range(6))):
        assert status == 408
        assert headers["connection"] == "close"
        problem_of(status, headers, body)
    assert calls(emulator) == [("POST", SEND_PATH)] * 6
    assert len(emulator.state.events) == events  # nothing was sent
    assert breaker_of(client).state is BreakerState.CLOSED
    await victim_destroys(client, emulator)


async def test_pass_through_bodies_the_client_abandons_do_not_open_the_breaker(emulator: EmulatorServer) -> None:
    config = gateway_config(emulator, upstream={"retries": 0}, server={"client_timeout": 30.0})
    async with served(config) as gateway:
        for _ in range(6):
            _, writer = await asyncio.open_connection(gateway.host, gateway.port)
            writer.write(
                (
                    f"POST {SEND_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{bearer(MICK_TOKEN)}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                ).encode()
                + b'{"text":"'
            )
            await writer.drain()
            await eventually(lambda: len(emulator.state.requests) == 1)
            writer.transport.abort()  # gone, with 991 bytes of the body never sent
            emulator.state.requests.clear()
        await eventually(lambda: answered(gateway.app, "/2/{tail}") == 6)  # every handler has run to its end
        assert breaker_of(gateway).state is BreakerState.CLOSED
        await victim_destroys(gateway, emulator)


async def test_upstream_4xx_answers_never_open_the_breaker(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(FaultRule(method="GET", path="/2/users/me", status=429))
    for token in ("nobody", MICK_TOKEN):
        for _ in range(6):
            status, _, _ = await raw(client, "GET /2/users/me HTTP/1.1", bearer(token))
            assert status == 429
    emulator.state.faults.clear()
    for _ in range(6):
        status, _, _ = await raw(client, f"GET /2/dm_events/{MESSAGE_ID}x HTTP/1.1", bearer("nobody"))
        assert status in (400, 401, 404)
    assert breaker_of(client).state is BreakerState.CLOSED
    await victim_destroys(client, emulator)


async def test_a_slow_upstream_after_the_whole_body_still_counts(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """The other side of the slow-body rule: a body sent whole, then no answer, is upstream trouble."""
    client = await make_gateway(upstream={**SLOW, "breaker_failures_per_caller": 0})
    emulator.state.faults.append(FaultRule(method="POST", path=SEND_PATH, action="delay", delay=2.0))
    for _ in range(5):
        status, headers, body = await raw(
            client,
            f"POST {SEND_PATH} HTTP/1.1",
            bearer(MICK_TOKEN),
            "Content-Type: application/json",
            "Content-Length: 10",
            body=b'{"text":1}',
        )
        assert status == 504
        problem_of(status, headers, body)
    assert breaker_of(client).state is BreakerState.OPEN


# --- 3. one caller cannot open the breaker for the others ------------------------------------------------


async def test_one_legacy_caller_cannot_open_the_breaker_for_another(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", status=503, times=6))
    for _ in range(6):
        status, _, body = await raw(client, ATTACKER_DESTROY, bearer(MICK_TOKEN))
        assert status == 503, body
    assert calls(emulator) == [("DELETE", f"/2/dm_events/{PLAIN_IDS[1]}")] * 6
    assert breaker_of(client).state is BreakerState.CLOSED
    await victim_destroys(client, emulator)


@pytest.mark.parametrize("authorization", [bearer(MICK_TOKEN), None])
async def test_one_pass_through_caller_cannot_open_the_breaker_for_another(
    make_gateway: GatewayFactory, emulator: EmulatorServer, authorization: str | None
) -> None:
    """With a credential, or without one (then the client's address is the caller)."""
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(FaultRule(method="GET", path="/2/users/me", status=503, times=6))
    for _ in range(6):
        credentials = [authorization] if authorization else []
        status, _headers, body = await raw(client, "GET /2/users/me HTTP/1.1", *credentials)
        assert status == 503, body
    assert calls(emulator) == [("GET", "/2/users/me")] * 6
    assert breaker_of(client).state is BreakerState.CLOSED
    await victim_destroys(client, emulator)


async def test_failures_from_several_callers_still_open_the_breaker(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """Two failures from each of three callers (legacy and pass-through alike): upstream is in trouble."""
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(FaultRule(path="/2/*", status=503))
    for token in (MICK_TOKEN, MARCOS_TOKEN):
        for _ in range(2):
            status, _, _ = await raw(client, ATTACKER_DESTROY, bearer(token))
            assert status == 503
    status, _, _ = await raw(client, "GET /2/users/me HTTP/1.1", bearer(XDEV_TOKEN))
    assert status == 503
    assert breaker_of(client).state is BreakerState.OPEN  # the fifth failure, from a third caller
    emulator.state.faults.clear()
    emulator.state.requests.clear()
    status, _, body = await raw(client, f"DELETE {VICTIM_DESTROY} HTTP/1.1", bearer(SEAN_TOKEN))
    assert status == 503, body
    assert orjson.loads(body)["errors"][0]["code"] == 130  # over capacity
    assert emulator.state.requests == []


async def test_a_pass_through_bearer_and_the_same_legacy_bearer_share_one_budget(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """Three failures on each side from one bearer token are one caller's: two count, short of three."""
    client = await make_gateway(upstream={"retries": 0, "breaker_failures": 3})
    emulator.state.faults.append(FaultRule(path="/2/*", status=503))
    for _ in range(3):
        await raw(client, "GET /2/users/me HTTP/1.1", bearer(MICK_TOKEN))
        await raw(client, ATTACKER_DESTROY, bearer(MICK_TOKEN))
    assert breaker_of(client).state is BreakerState.CLOSED
    emulator.state.faults.clear()
    await victim_destroys(client, emulator)


async def test_the_sidecars_failures_open_the_breaker_with_the_default_budget(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """The sidecar's calls all come from the one application behind it: its failures are upstream's."""
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", status=503))
    for _ in range(5):
        status, _, body = await raw(client, ATTACKER_DESTROY)  # no credentials: the sidecar's token
        assert status == 503, body
    assert breaker_of(client).state is BreakerState.OPEN


async def test_a_budget_of_zero_counts_every_failure(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway(upstream={"retries": 0, "breaker_failures_per_caller": 0})
    emulator.state.faults.append(FaultRule(method="GET", path="/2/users/me", status=503))
    for _ in range(5):
        await raw(client, "GET /2/users/me HTTP/1.1", bearer(MICK_TOKEN))
    assert breaker_of(client).state is BreakerState.OPEN


# --- the per-caller limit on its own ---------------------------------------------------------------------


def test_a_callers_share_is_forgotten_with_the_run_of_failures() -> None:
    breaker = CircuitBreaker("h:1", failures=3, reset=10, per_caller=2, clock=lambda: 0.0)
    for _ in range(5):
        breaker.record(False, probe=False, caller="a")
    assert breaker.state is BreakerState.CLOSED  # two of a's five counted
    breaker.record(True, probe=False, caller="b")  # a success ends the run...
    breaker.record(False, probe=False, caller="a")
    breaker.record(False, probe=False, caller="a")  # ...so a's next two count afresh
    assert breaker.state is BreakerState.CLOSED
    breaker.record(False, probe=False, caller="c")
    assert breaker.state is BreakerState.OPEN


def test_failures_without_a_caller_always_count() -> None:
    breaker = CircuitBreaker("h:1", failures=3, reset=10, per_caller=1, clock=lambda: 0.0)
    for _ in range(3):
        breaker.record(False, probe=False)
    assert breaker.state is BreakerState.OPEN
