"""Upstream failures, end to end: legacy client -> gateway -> emulator over HTTP, and back.

Every case checks three things: the legacy client gets its own dialect's error (status, code, message,
headers), nothing reached upstream that should not have, and the data promise holds: after a failed or
timed-out delete the message is still in the gateway store exactly as before, with no deletion recorded,
and still visible in the emulator, so that a retry once the fault is gone answers the full body.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from gateway.app import create_app
from gateway.config import with_overrides
from gateway.emulator import EmulatorServer, FaultRule, RecordedRequest
from gateway.model import DirectMessage
from tests.conftest import (
    ENTITIES_ID,
    JOIN_EVENT_ID,
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEAN_TOKEN,
    SEED_002_ID,
    VANISHED_SENDER_ID,
    XDEV_TOKEN,
    GatewayFactory,
    gateway_config,
    settled,
)

SEAN_ID, MICK_ID, VANISHED_ID = "38895958", "776627022", "999999999"
MESSAGE_ID = PLAIN_IDS[0]  # theSeanCook -> s0c1alm3dia, "second message"
MESSAGE_TEXT = "second message"
EVENT_PATH = "/2/dm_events/*"
SLOW_TIMEOUT = 0.5  # the gateway's upstream timeout in the timeout cases: half the stall, and far above a healthy
# loopback call even with the whole suite loading two cores (at 0.3 s a lookup once missed it)
SLOW_DELAY = 1.0  # how long the emulator stalls in them


# --- the legacy routes, and how each one answers ------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    template: str  # "{id}" marks the message id
    style: str  # "v1" (Twitter errors) or "statusnet"
    fmt: str  # "json" or "xml"
    looks_up: bool  # answers the deleted message, so it is looked up before the delete

    def url(self, message_id: str) -> str:
        return self.template.format(id=message_id)

    def path(self, message_id: str) -> str:
        return self.url(message_id).partition("?")[0]


CLASSIC = Route("v1.1", "POST", "/1.1/direct_messages/destroy.json?id={id}", "v1", "json", True)
EVENTS = Route("v1.1-events", "DELETE", "/1.1/direct_messages/events/destroy.json?id={id}", "v1", "json", False)
SN_XML = Route("statusnet-xml", "POST", "/api/direct_messages/destroy/{id}.xml", "statusnet", "xml", True)
SN_JSON = Route("statusnet-json", "DELETE", "/1/direct_messages/destroy.json?id={id}", "statusnet", "json", True)
SN_PATH_JSON = Route("statusnet-path-json", "POST", "/1/direct_messages/destroy/{id}.json", "statusnet", "json", True)
SN_QUERY_XML = Route(
    "statusnet-query-xml", "DELETE", "/api/direct_messages/destroy.xml?id={id}", "statusnet", "xml", True
)
ALL_ROUTES = [pytest.param(r, id=r.name) for r in (CLASSIC, EVENTS, SN_XML, SN_JSON)]
BODY_ROUTES = [pytest.param(r, id=r.name) for r in (CLASSIC, SN_XML, SN_JSON)]

# Neutral error kind -> (status, v1.1 code, message) per style, written out here rather than read from
# mappings/, so a mapping edit that changes what legacy clients see makes these tests fail.
ERRORS: dict[str, dict[str, tuple[int, int | None, str]]] = {
    "upstream_failure": {
        "v1": (502, 131, "Internal error"),
        "statusnet": (502, None, "Internal server error."),
    },
    "upstream_unavailable": {
        "v1": (503, 130, "Over capacity"),
        "statusnet": (503, None, "The service is over capacity. Please try again later."),
    },
    "invalid_token": {
        "v1": (401, 89, "Invalid or expired token."),
        "statusnet": (401, None, "Could not authenticate you."),
    },
    "not_authenticated": {
        "v1": (401, 32, "Could not authenticate you."),
        "statusnet": (401, None, "Could not authenticate you."),
    },
    "forbidden": {
        "v1": (403, 93, "This application is not allowed to access or delete your direct messages."),
        "statusnet": (403, None, "You are not allowed to delete this direct message."),
    },
    "rate_limited": {
        "v1": (429, 88, "Rate limit exceeded"),
        "statusnet": (400, None, "Rate limit exceeded."),
    },
    "message_not_found": {
        "v1": (404, 34, "Sorry, that page does not exist."),
        "statusnet": (404, None, "No direct message with that ID found."),
    },
}
RATE_HEADERS = {
    "v1": ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"),
    "statusnet": ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def send(client: TestClient, route: Route, message_id: str, headers: dict[str, str] | None = None) -> Reply:
    async with client.request(route.method, route.url(message_id), headers=headers) as response:
        return Reply(response.status, response.headers, await response.read())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(reply: Reply, route: Route, kind: str, message_id: str) -> None:
    """The reply is ``kind`` in the route's own error shape, and not a single field more."""
    status, code, message = ERRORS[kind][route.style]
    assert reply.status == status, reply.body
    if route.fmt == "xml":
        assert reply.headers["Content-Type"].startswith("application/xml"), reply.headers
        root = ET.fromstring(reply.body)
        assert root.tag == "hash"
        assert [(child.tag, child.text) for child in root] == [
            ("error", message),
            ("request", route.path(message_id)),
        ]
        return
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    document = json.loads(reply.body)
    if route.style == "v1":
        assert document == {"errors": [{"code": code, "message": message}]}
    else:
        assert document == {"error": message, "request": route.path(message_id)}
        assert b"\\/" in reply.body and b'"/' not in reply.body  # PHP-style escaped slashes


def assert_message(reply: Reply, route: Route, message_id: str, text: str, sender: str, recipient: str) -> None:
    """A successful destroy: the full legacy body (or the events dialect's empty 204)."""
    if not route.looks_up:
        assert reply.status == 204, reply.body
        assert reply.body == b""
        return
    assert reply.status == 200, reply.body
    if route.fmt == "xml":
        root = ET.fromstring(reply.body)
        assert root.tag == "direct_message"
        assert root.findtext("id") == message_id
        assert root.findtext("text") == text
        assert root.findtext("sender_screen_name") == sender
        assert root.findtext("recipient_screen_name") == recipient
        assert root.findtext("sender/screen_name") == sender
        return
    document = json.loads(reply.body)
    assert document["id"] == int(message_id)
    assert document["text"] == text
    assert document["sender_screen_name"] == sender
    assert document["recipient_screen_name"] == recipient
    assert document["sender"]["screen_name"] == sender
    assert document["recipient"]["screen_name"] == recipient
    if route.style == "v1":
        assert document["id_str"] == message_id


def header(recorded: RecordedRequest, name: str) -> str | None:
    matches = [value for key, value in recorded.headers.items() if key.lower() == name.lower()]
    assert len(matches) <= 1
    return matches[0] if matches else None


def upstream_calls(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


async def assert_untouched(
    client: TestClient, emulator: EmulatorServer, message_id: str, before: DirectMessage | None
) -> None:
    """The data promise: the store holds exactly what it held, no deletion, and v2 still has the event."""
    store = await settled(client)
    assert await store.get_message(message_id) == before
    assert await store.get_deletion(message_id) is None
    assert not emulator.state.is_deleted_for(message_id, SEAN_ID)


async def assert_deleted(client: TestClient, emulator: EmulatorServer, message_id: str) -> None:
    store_now = await settled(client)
    assert await store_now.get_deletion(message_id) is not None
    assert emulator.state.is_deleted_for(message_id, SEAN_ID)


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return "memory" if request.param == "memory" else f"sqlite:///{tmp_path}/gateway.sqlite3"


# --- the delete fails: every dialect, every kind of failure, both stores -------------------------------


@dataclass(frozen=True)
class DeleteFault:
    rule: FaultRule
    kind: str
    upstream: dict[str, Any] | None = None  # [upstream] overrides for the gateway


def _delete(**fields: Any) -> FaultRule:
    return FaultRule(method="DELETE", path=EVENT_PATH, **fields)


RATE_LIMIT_VALUES = {"x-rate-limit-limit": "50", "x-rate-limit-remaining": "0", "x-rate-limit-reset": "1700000900"}

DELETE_FAULTS = {
    "500": DeleteFault(_delete(status=500), "upstream_failure"),
    "502": DeleteFault(_delete(status=502), "upstream_unavailable"),
    "503": DeleteFault(_delete(status=503), "upstream_unavailable"),
    "504": DeleteFault(_delete(status=504), "upstream_unavailable"),
    "520": DeleteFault(_delete(status=520), "upstream_failure"),
    # Retried timeouts have tests of their own (test_resilience.py); one attempt keeps these fast.
    "timeout": DeleteFault(
        _delete(action="delay", delay=SLOW_DELAY), "upstream_unavailable", {"timeout": SLOW_TIMEOUT, "retries": 0}
    ),
    "slow-500": DeleteFault(
        _delete(status=500, delay=SLOW_DELAY), "upstream_unavailable", {"timeout": SLOW_TIMEOUT, "retries": 0}
    ),
    "reset": DeleteFault(_delete(action="reset", times=None), "upstream_unavailable"),
    "401": DeleteFault(_delete(status=401), "invalid_token"),
    "403": DeleteFault(_delete(status=403), "forbidden"),
    "404": DeleteFault(_delete(status=404), "message_not_found"),
    "429": DeleteFault(_delete(status=429, headers=RATE_LIMIT_VALUES), "rate_limited"),
    "200-not-deleted": DeleteFault(_delete(status=200, body={"data": {"deleted": False}}), "upstream_failure"),
    "200-no-data": DeleteFault(_delete(status=200, body={"errors": [{"detail": "odd"}]}), "upstream_failure"),
    "200-empty": DeleteFault(_delete(status=200), "upstream_failure"),
}


def _fault_and_store() -> list[Any]:
    """Every fault on both stores, except the slow ones: those run once, on the default SQLite store."""
    return [
        pytest.param(fault, store, id=f"{name}-{store}")
        for name, fault in DELETE_FAULTS.items()
        for store in (("sqlite",) if fault.upstream else ("memory", "sqlite"))
    ]


@pytest.mark.parametrize("route", ALL_ROUTES)
@pytest.mark.parametrize(("fault", "store"), _fault_and_store())
async def test_failed_delete_changes_nothing_and_a_retry_succeeds(
    make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Any, route: Route, fault: DeleteFault, store: str
) -> None:
    store_url = "memory" if store == "memory" else f"sqlite:///{tmp_path}/gateway.sqlite3"
    # The breaker would open after a few of these failures; it has tests of its own (test_resilience.py).
    client = await make_gateway(store_url=store_url, upstream={"breaker_failures": 0, **(fault.upstream or {})})
    state = emulator.state
    slow = fault.upstream is not None
    # A slow fault is seeded by a quick one instead, to keep the suite fast.
    seed_kind = "upstream_unavailable" if slow else fault.kind
    state.faults[:] = [_delete(status=503, times=1), fault.rule] if slow else [fault.rule]

    # Seed the store: a first attempt through a route that looks the message up learns it, then fails.
    seed_route = route if route.looks_up else CLASSIC
    seeded = await send(client, seed_route, MESSAGE_ID)
    assert_error(seeded, seed_route, seed_kind, MESSAGE_ID)
    assert ("GET", f"/2/dm_events/{MESSAGE_ID}") in upstream_calls(emulator)
    store_now = await settled(client)
    before = await store_now.get_message(MESSAGE_ID)
    assert before is not None and before.text == MESSAGE_TEXT
    await assert_untouched(client, emulator, MESSAGE_ID, before)

    # The attempt under test: answered from the store, so only the delete goes upstream, and fails. (The
    # store answers only a participant: whom the caller acts for is asked once, before the first body.)
    state.requests.clear()
    reply = await send(client, route, MESSAGE_ID)
    assert_error(reply, route, fault.kind, MESSAGE_ID)
    calls = upstream_calls(emulator)
    expected = {("DELETE", f"/2/dm_events/{MESSAGE_ID}")} | ({("GET", "/2/users/me")} if route.looks_up else set())
    assert calls and set(calls) == expected
    await assert_untouched(client, emulator, MESSAGE_ID, before)

    # The fault clears; the same call now deletes and answers in full.
    state.faults.clear()
    retry = await send(client, route, MESSAGE_ID)
    assert_message(retry, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    await assert_deleted(client, emulator, MESSAGE_ID)
    store_now = await settled(client)
    assert await store_now.get_message(MESSAGE_ID) == before


async def test_a_reset_delete_is_tried_twice_by_aiohttp_and_then_reported(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """aiohttp re-sends an idempotent request once after a disconnect; with retries off the gateway adds none
    of its own (its retries are tested in test_resilience.py)."""
    client = await make_gateway(upstream={"retries": 0})
    emulator.state.faults.append(_delete(action="reset"))
    reply = await send(client, EVENTS, MESSAGE_ID)
    assert_error(reply, EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert upstream_calls(emulator) == [("DELETE", f"/2/dm_events/{MESSAGE_ID}")] * 2


async def test_a_single_reset_is_absorbed_by_the_client_retry(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    client = await make_gateway()
    emulator.state.faults.append(_delete(action="reset", times=1))
    reply = await send(client, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_401_carries_the_dialects_www_authenticate(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    """A token v2 does not know: 89 (v1.1) or 401 (StatusNet), with that API's authentication challenge."""
    client = await make_gateway()
    reply = await send(client, route, MESSAGE_ID, bearer("revoked-token"))
    assert_error(reply, route, "invalid_token", MESSAGE_ID)
    challenge = reply.headers.getall("WWW-Authenticate")
    if route.style == "v1":
        assert challenge == ['OAuth realm="https://api.twitter.com"']
    else:
        assert challenge == ['Basic realm="StatusNet API"']
    expected = ("GET" if route.looks_up else "DELETE", f"/2/dm_events/{MESSAGE_ID}")
    assert upstream_calls(emulator) == [expected]
    await assert_untouched(client, emulator, MESSAGE_ID, None)


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_a_caller_outside_the_conversation_gets_403(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, SEED_002_ID, bearer(MARCOS_TOKEN))  # s0c1alm3dia -> theSeanCook
    assert_error(reply, route, "forbidden", SEED_002_ID)
    assert "WWW-Authenticate" not in reply.headers
    expected = ("GET" if route.looks_up else "DELETE", f"/2/dm_events/{SEED_002_ID}")
    assert upstream_calls(emulator) == [expected]
    assert not emulator.state.is_deleted_for(SEED_002_ID, "1")
    await assert_untouched(client, emulator, SEED_002_ID, None)


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_an_exhausted_quota_is_the_dialects_rate_limit_error_with_its_headers(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    seed_route = route if route.looks_up else CLASSIC
    emulator.state.set_rate_limit("DELETE /2/dm_events/:id", 0)

    seeded = await send(client, seed_route, MESSAGE_ID)
    assert_error(seeded, seed_route, "rate_limited", MESSAGE_ID)
    store_now = await settled(client)
    before = await store_now.get_message(MESSAGE_ID)
    assert before is not None

    reply = await send(client, route, MESSAGE_ID)
    assert_error(reply, route, "rate_limited", MESSAGE_ID)
    names = RATE_HEADERS[route.style]
    others = RATE_HEADERS["statusnet" if route.style == "v1" else "v1"]
    limit, remaining, reset = (reply.headers.get(name) for name in names)
    assert (limit, remaining) == ("0", "0")
    assert reset is not None and int(reset) > 1_600_000_000
    assert not any(name in reply.headers for name in others)
    await assert_untouched(client, emulator, MESSAGE_ID, before)

    emulator.state.set_rate_limit("DELETE /2/dm_events/:id", 5)
    retry = await send(client, route, MESSAGE_ID)
    assert_message(retry, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    # The quota of the successful delete travels too, in the dialect's header names.
    assert [retry.headers.get(name) for name in names[:2]] == ["5", "4"]
    await assert_deleted(client, emulator, MESSAGE_ID)


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_a_429_rule_passes_its_rate_limit_values_through(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    emulator.state.faults.append(FaultRule(path=EVENT_PATH, status=429, headers=RATE_LIMIT_VALUES))
    reply = await send(client, route, MESSAGE_ID)
    assert_error(reply, route, "rate_limited", MESSAGE_ID)
    assert [reply.headers.get(name) for name in RATE_HEADERS[route.style]] == ["50", "0", "1700000900"]


# --- the lookup fails: nothing is deleted, nothing is learned -----------------------------------------


def _lookup(**fields: Any) -> FaultRule:
    return FaultRule(method="GET", path=EVENT_PATH, **fields)


LOOKUP_FAULTS = {
    "500": DeleteFault(_lookup(status=500), "upstream_failure"),
    "503": DeleteFault(_lookup(status=503), "upstream_unavailable"),
    "reset": DeleteFault(_lookup(action="reset"), "upstream_unavailable"),
    "timeout": DeleteFault(
        _lookup(action="delay", delay=SLOW_DELAY), "upstream_unavailable", {"timeout": SLOW_TIMEOUT}
    ),
    "401": DeleteFault(_lookup(status=401), "invalid_token"),
    "403": DeleteFault(_lookup(status=403), "forbidden"),
    "404": DeleteFault(_lookup(status=404), "message_not_found"),
    "429": DeleteFault(_lookup(status=429), "rate_limited"),
    "200-no-data": DeleteFault(_lookup(status=200, body={"meta": {}}), "message_not_found"),
    "200-empty": DeleteFault(_lookup(status=200), "message_not_found"),
    "200-malformed-event": DeleteFault(
        _lookup(status=200, body={"data": {"id": MESSAGE_ID, "event_type": "MessageCreate", "text": "x"}}),
        "upstream_failure",
    ),
}


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("fault", [pytest.param(f, id=name) for name, f in LOOKUP_FAULTS.items()])
async def test_when_the_lookup_fails_no_delete_is_sent(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route, fault: DeleteFault
) -> None:
    client = await make_gateway(upstream=fault.upstream or {})
    emulator.state.faults.append(fault.rule)
    reply = await send(client, route, MESSAGE_ID)
    assert_error(reply, route, fault.kind, MESSAGE_ID)
    calls = upstream_calls(emulator)
    assert calls and set(calls) == {("GET", f"/2/dm_events/{MESSAGE_ID}")}
    await assert_untouched(client, emulator, MESSAGE_ID, None)

    emulator.state.faults.clear()
    retry = await send(client, route, MESSAGE_ID)
    assert_message(retry, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    await assert_deleted(client, emulator, MESSAGE_ID)


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_when_the_users_lookup_fails_no_delete_is_sent(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    """The vanished sender is looked up in /2/users; a message that cannot be described is not deleted."""
    client = await make_gateway()
    emulator.state.faults.append(FaultRule(method="GET", path="/2/users", status=503))
    reply = await send(client, route, VANISHED_SENDER_ID)
    assert_error(reply, route, "upstream_unavailable", VANISHED_SENDER_ID)
    # The event, then the users: a GET, so tried again twice (the default upstream.retries) before giving up.
    assert upstream_calls(emulator) == [("GET", f"/2/dm_events/{VANISHED_SENDER_ID}")] + [("GET", "/2/users")] * 3
    assert not emulator.state.is_deleted_for(VANISHED_SENDER_ID, SEAN_ID)
    store_now = await settled(client)
    assert await store_now.get_deletion(VANISHED_SENDER_ID) is None


async def test_the_events_dialect_sends_only_the_delete(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    client = await make_gateway()
    reply = await send(client, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert upstream_calls(emulator) == [("DELETE", f"/2/dm_events/{MESSAGE_ID}")]
    assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)
    # Nothing was looked up, so there was nothing to learn.
    store_now = await settled(client)
    assert await store_now.get_message(MESSAGE_ID) is None


# --- successful deletes --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_a_delete_is_recorded_and_hides_the_event_for_the_caller_only(
    make_gateway: GatewayFactory, emulator: EmulatorServer, store_url: str, route: Route
) -> None:
    client = await make_gateway(store_url=store_url)
    reply = await send(client, route, MESSAGE_ID)
    assert_message(reply, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    assert upstream_calls(emulator)[-1] == ("DELETE", f"/2/dm_events/{MESSAGE_ID}")
    await assert_deleted(client, emulator, MESSAGE_ID)
    assert not emulator.state.is_deleted_for(MESSAGE_ID, MICK_ID)

    # Gone for Sean: v2 answers 404, but Sean's retry is answered as the first call was (a tombstone).
    again = await send(client, route, MESSAGE_ID)
    assert (again.status, again.body) == (reply.status, reply.body)

    # Still there for the other participant, who can delete it for themselves.
    mick = await send(client, route, MESSAGE_ID, bearer(MICK_TOKEN))
    assert_message(mick, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    assert emulator.state.is_deleted_for(MESSAGE_ID, MICK_ID)

    # A tombstone never speaks for anyone else: a non-participant still gets v2's refusal.
    xdev = await send(client, route, MESSAGE_ID, bearer(XDEV_TOKEN))
    assert_error(xdev, route, "forbidden", MESSAGE_ID)


async def test_the_events_dialect_records_a_deletion_of_a_known_message(
    make_gateway: GatewayFactory, emulator: EmulatorServer, store_url: str
) -> None:
    client = await make_gateway(store_url=store_url)
    emulator.state.faults.append(_delete(status=503))
    assert (await send(client, CLASSIC, MESSAGE_ID)).status == 503  # learns the message
    emulator.state.faults.clear()
    reply = await send(client, EVENTS, MESSAGE_ID)
    assert reply.status == 204
    await assert_deleted(client, emulator, MESSAGE_ID)
    assert not emulator.state.is_deleted_for(MESSAGE_ID, MICK_ID)


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_a_vanished_sender_becomes_an_id_only_placeholder(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, VANISHED_SENDER_ID)
    assert reply.status == 200, reply.body
    if route.fmt == "xml":
        root = ET.fromstring(reply.body)
        assert root.findtext("text") == "from a vanished account"
        assert root.findtext("sender_id") == VANISHED_ID
        assert root.findtext("sender/id") == VANISHED_ID
        assert root.findtext("sender/screen_name") == ""  # an empty element
        assert root.findtext("sender/name") == ""
        assert root.findtext("recipient/screen_name") == "theSeanCook"
    else:
        document = json.loads(reply.body)
        sender = document["sender"]
        assert document["text"] == "from a vanished account"
        assert sender["id"] == int(VANISHED_ID)
        assert document["recipient"]["screen_name"] == "theSeanCook"
        if route.style == "v1":
            assert sender["id_str"] == VANISHED_ID
            assert (sender["screen_name"], sender["name"], document["sender_screen_name"]) == ("", "", "")
            assert document["sender_id_str"] == VANISHED_ID
        else:  # StatusNet JSON: empty names, never null, as StatusNet wrote them; ids also as strings
            assert document["sender_id"] == document["sender_id_str"] == sender["id_str"] == VANISHED_ID
            assert (sender["screen_name"], sender["name"], document["sender_screen_name"]) == ("", "", "")
    await assert_deleted(client, emulator, VANISHED_SENDER_ID)


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_a_non_message_event_is_not_found_and_never_deleted(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, JOIN_EVENT_ID)
    assert_error(reply, route, "message_not_found", JOIN_EVENT_ID)
    assert upstream_calls(emulator) == [("GET", f"/2/dm_events/{JOIN_EVENT_ID}")]
    assert not emulator.state.is_deleted_for(JOIN_EVENT_ID, SEAN_ID)
    store_now = await settled(client)
    assert await store_now.get_message(JOIN_EVENT_ID) is None


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_entities_survive_the_round_trip(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, ENTITIES_ID)
    assert_message(
        reply, route, ENTITIES_ID, "Ship it #v2 https://t.co/abc123 @theSeanCook", "XDevelopers", "theSeanCook"
    )
    if route.style == "v1":
        entities = json.loads(reply.body)["entities"]
        assert entities["hashtags"] == [{"text": "v2", "indices": [8, 11]}]
        assert [u["expanded_url"] for u in entities["urls"]] == ["https://developer.x.com/en/docs/x-api"]
        assert [m["id_str"] for m in entities["user_mentions"]] == [SEAN_ID]


# --- non-JSON from v2 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_a_delete_answered_with_html_is_an_internal_error(
    aiohttp_client: Any, aiohttp_server: Any, emulator: EmulatorServer, route: Route
) -> None:
    """The emulator's fault rules always send JSON, so a stand-in upstream answers the delete with HTML."""
    seen: list[str] = []
    event = dict(emulator.state.events[MESSAGE_ID])
    users = [emulator.state.users[SEAN_ID], emulator.state.users[MICK_ID]]

    async def get_event(request: web.Request) -> web.Response:
        seen.append("GET")
        return web.json_response({"data": event, "includes": {"users": users}})

    async def delete_event(request: web.Request) -> web.Response:
        seen.append("DELETE")
        return web.Response(text="<html><body>200 OK, probably</body></html>", content_type="text/html")

    stub = web.Application()
    stub.router.add_get("/2/dm_events/{id}", get_event)
    stub.router.add_delete("/2/dm_events/{id}", delete_event)
    server = await aiohttp_server(stub)
    config = with_overrides(gateway_config(emulator), upstream={"base_url": f"http://{server.host}:{server.port}"})
    client = await aiohttp_client(create_app(config))

    reply = await send(client, route, MESSAGE_ID)
    assert_error(reply, route, "upstream_failure", MESSAGE_ID)
    assert seen == (["GET", "DELETE"] if route.looks_up else ["DELETE"])
    store = await settled(client)
    assert await store.get_deletion(MESSAGE_ID) is None
    if route.looks_up:
        learned = await store.get_message(MESSAGE_ID)
        assert learned is not None and learned.text == MESSAGE_TEXT


# --- credentials -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_a_clients_bearer_token_is_what_reaches_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, MESSAGE_ID, {"Authorization": f"bearer   {MICK_TOKEN} "})
    assert_message(reply, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    assert emulator.state.requests
    assert {header(r, "Authorization") for r in emulator.state.requests} == {f"Bearer {MICK_TOKEN}"}
    assert emulator.state.is_deleted_for(MESSAGE_ID, MICK_ID)
    assert not emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_without_an_authorization_header_the_sidecar_token_is_used(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Route
) -> None:
    client = await make_gateway()
    reply = await send(client, route, MESSAGE_ID)
    assert_message(reply, route, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    assert emulator.state.requests
    assert {header(r, "Authorization") for r in emulator.state.requests} == {f"Bearer {SEAN_TOKEN}"}
    assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


@pytest.fixture
async def no_sidecar(aiohttp_client: Any, emulator: EmulatorServer) -> TestClient:
    """A gateway with no sidecar credential (load_config skips None overrides, so replace it after)."""
    config = with_overrides(gateway_config(emulator), upstream={"bearer_token": None}, auth={"sidecar": False})
    assert config.upstream.bearer_token is None
    return await aiohttp_client(create_app(config))


@pytest.mark.parametrize("route", [*ALL_ROUTES, *(pytest.param(r, id=r.name) for r in (SN_PATH_JSON, SN_QUERY_XML))])
async def test_no_credential_at_all_is_401_and_nothing_goes_upstream(
    no_sidecar: TestClient, emulator: EmulatorServer, route: Route
) -> None:
    reply = await send(no_sidecar, route, MESSAGE_ID)
    assert_error(reply, route, "not_authenticated", MESSAGE_ID)
    expected = 'OAuth realm="https://api.twitter.com"' if route.style == "v1" else 'Basic realm="StatusNet API"'
    assert reply.headers.getall("WWW-Authenticate") == [expected]
    assert emulator.state.requests == []
    await assert_untouched(no_sidecar, emulator, MESSAGE_ID, None)


async def test_without_a_sidecar_a_clients_bearer_still_works(no_sidecar: TestClient, emulator: EmulatorServer) -> None:
    reply = await send(no_sidecar, SN_XML, MESSAGE_ID, bearer(SEAN_TOKEN))
    assert_message(reply, SN_XML, MESSAGE_ID, MESSAGE_TEXT, "theSeanCook", "s0c1alm3dia")
    await assert_deleted(no_sidecar, emulator, MESSAGE_ID)
