"""Upstream resilience, end to end against the emulator over HTTP: retries within a budget, the rate-limit
reset honoured, sends never retried, the circuit breaker opening, failing fast and closing again, and what
/readyz and /metrics say about all of it.

Timeouts are tens of milliseconds and backoffs a few (tests/conftest.py sets upstream.retry_backoff), so
each test stays fast.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.admin import create_admin_app
from gateway.auth.upstream import BearerCredential
from gateway.config import ConfigError
from gateway.emulator import EmulatorServer, FaultRule
from gateway.errors import UpstreamUnavailable
from gateway.model import Principal
from gateway.upstream.client import UpstreamClient
from gateway.upstream.resilience import (
    BreakerOpen,
    Breakers,
    BreakerState,
    CircuitBreaker,
    RetryPolicy,
    retry_budget,
)
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, GatewayFactory, gateway_config, store_of
from tests.test_faults import (
    CLASSIC,
    EVENTS,
    SEAN_ID,
    SN_XML,
    assert_error,
    assert_message,
    header,
    send,
    upstream_calls,
)

MESSAGE_ID = PLAIN_IDS[0]
MICK_ID = "776627022"
OTHER_ID = PLAIN_IDS[1]
EVENT = f"/2/dm_events/{MESSAGE_ID}"
DELETE_ENDPOINT = "DELETE /2/dm_events/:id"
GET_ENDPOINT = "GET /2/dm_events/:id"
FAST = {"timeout": 0.05, "connect_timeout": 0.05}


def delete_rule(**fields: Any) -> FaultRule:
    return FaultRule(method="DELETE", path="/2/dm_events/*", **fields)


def get_rule(**fields: Any) -> FaultRule:
    return FaultRule(method="GET", path="/2/dm_events/*", **fields)


async def with_admin(aiohttp_client: Any, gateway: TestClient) -> TestClient:
    return await aiohttp_client(create_admin_app(gateway.server.app, ping_timeout=1.0))


async def metric(admin: TestClient, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when absent), read with prometheus-client's own parser."""
    response = await admin.get("/metrics")
    assert response.status == 200
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def deletes(emulator: EmulatorServer) -> int:
    return sum(1 for method, _ in upstream_calls(emulator) if method == "DELETE")


# --- retries -------------------------------------------------------------------------------------------


async def test_a_slow_lookup_times_out_and_its_retry_succeeds(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    gateway = await make_gateway(upstream=FAST)
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(get_rule(action="delay", delay=0.5, times=1))
    reply = await send(gateway, CLASSIC, MESSAGE_ID)
    assert_message(reply, CLASSIC, MESSAGE_ID, "second message", "theSeanCook", "s0c1alm3dia")
    assert upstream_calls(emulator) == [("GET", EVENT), ("GET", EVENT), ("GET", "/2/users"), ("DELETE", EVENT)]
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=GET_ENDPOINT, reason="timeout") == 1
    count = "dmgw_upstream_request_duration_seconds_count"
    assert await metric(admin, count, endpoint=GET_ENDPOINT, outcome="timeout") == 1
    assert await metric(admin, count, endpoint=GET_ENDPOINT, outcome="ok") == 1
    assert await metric(admin, count, endpoint=DELETE_ENDPOINT, outcome="ok") == 1
    # The histogram's sum saw the timed-out attempt's wait.
    assert (
        await metric(admin, "dmgw_upstream_request_duration_seconds_sum", endpoint=GET_ENDPOINT, outcome="timeout")
        >= 0.04
    )


async def test_every_attempt_carries_the_same_request_id(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    gateway = await make_gateway()
    emulator.state.faults.append(delete_rule(status=503, times=2))
    async with gateway.delete(
        f"/1.1/direct_messages/events/destroy.json?id={MESSAGE_ID}", headers={"X-Request-Id": "rid-42"}
    ) as response:
        assert response.status == 204
        assert response.headers["X-Request-Id"] == "rid-42"
    ids = [header(r, "X-Request-Id") for r in emulator.state.requests]
    assert ids == ["rid-42"] * 3


async def test_when_the_budget_runs_out_the_client_gets_over_capacity(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    """A delete that is slow and then fails, every time: attempts stop once the legacy call's budget is spent."""
    gateway = await make_gateway(upstream={**FAST, "retries": 10, "retry_budget": 0.15})
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(delete_rule(status=503, delay=1.0))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert_error(reply, EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert json.loads(reply.body) == {"errors": [{"code": 130, "message": "Over capacity"}]}
    # A 0.05 s first attempt, then retries capped by what is left of 0.15 s: never the 11 allowed.
    assert 2 <= deletes(emulator) <= 5
    assert (
        await metric(admin, "dmgw_upstream_retries_total", endpoint=DELETE_ENDPOINT, reason="timeout")
        == deletes(emulator) - 1
    )
    assert not emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)
    assert await store_of(gateway).get_deletion(MESSAGE_ID) is None


async def test_a_retry_only_gets_what_is_left_of_the_budget(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    """The first attempt has the full timeout (0.3 s); the retry is cut off when the 0.4 s budget ends."""
    gateway = await make_gateway(upstream={"timeout": 0.3, "retries": 10, "retry_budget": 0.4})
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(delete_rule(status=503, delay=2.0))
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert deletes(emulator) == 2
    waited = await metric(
        admin, "dmgw_upstream_request_duration_seconds_sum", endpoint=DELETE_ENDPOINT, outcome="timeout"
    )
    assert 0.3 <= waited < 0.55  # two full timeouts would be 0.6 s


async def test_the_lookups_and_the_delete_of_one_legacy_call_share_the_budget(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """The lookup spends most of the budget on a slow attempt; the slow delete that follows gets its first
    attempt, in full, but no retry: the budget is the legacy call's, not each v2 call's."""
    gateway = await make_gateway(upstream={"timeout": 0.2, "retries": 10, "retry_budget": 0.3})
    emulator.state.faults[:] = [get_rule(action="delay", delay=1.0, times=1), delete_rule(status=503, delay=1.0)]
    reply = await send(gateway, CLASSIC, MESSAGE_ID)
    assert_error(reply, CLASSIC, "upstream_unavailable", MESSAGE_ID)
    calls = upstream_calls(emulator)
    assert calls.count(("GET", EVENT)) == 2  # one slow, the retry answered
    assert calls.count(("DELETE", EVENT)) == 1


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_failing_delete_is_retried_and_succeeds(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any, status: int
) -> None:
    gateway = await make_gateway()
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(delete_rule(status=status, times=2))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert deletes(emulator) == 3
    assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=DELETE_ENDPOINT, reason=str(status)) == 2
    count = "dmgw_upstream_request_duration_seconds_count"
    assert await metric(admin, count, endpoint=DELETE_ENDPOINT, outcome="server_error") == 2


async def test_retries_stop_at_the_configured_count(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream={"retries": 1, "breaker_failures": 0})
    emulator.state.faults.append(delete_rule(status=503))
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert deletes(emulator) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_answers_that_would_not_change_are_not_retried(
    make_gateway: GatewayFactory, emulator: EmulatorServer, status: int
) -> None:
    gateway = await make_gateway()
    emulator.state.faults.append(delete_rule(status=status))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status >= 400
    assert deletes(emulator) == 1


async def test_resets_are_retried(make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any) -> None:
    """aiohttp sends an idempotent request a second time after a dropped connection by itself; two drops make
    one attempt fail, and the gateway's retry gets through."""
    gateway = await make_gateway()
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(delete_rule(action="reset", times=2))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert deletes(emulator) == 3
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=DELETE_ENDPOINT, reason="connection_error") == 1


async def test_a_connection_refused_is_retried_and_reported(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    port = _closed_port()
    config = gateway_config(emulator, upstream={"base_url": f"http://127.0.0.1:{port}", "retries": 2, **FAST})
    from gateway.app import create_app

    gateway = await aiohttp_client(create_app(config))
    admin = await with_admin(aiohttp_client, gateway)
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert_error(reply, EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=DELETE_ENDPOINT, reason="connection_error") == 2
    count = "dmgw_upstream_request_duration_seconds_count"
    assert await metric(admin, count, endpoint=DELETE_ENDPOINT, outcome="connection_error") == 3


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 429 and x-rate-limit-reset ------------------------------------------------------------------------


def rate_limited(reset: int, times: int | None = 1) -> FaultRule:
    headers = {"x-rate-limit-limit": "50", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    return delete_rule(status=429, headers=headers, times=times)


async def test_a_429_whose_reset_has_passed_is_retried_at_once(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    gateway = await make_gateway()
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(rate_limited(int(time.time()) - 1))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert deletes(emulator) == 2
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=DELETE_ENDPOINT, reason="429") == 1


async def test_a_429_is_retried_when_its_reset_comes_within_the_budget(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    gateway = await make_gateway(upstream={"retry_budget": 3.0})
    reset = int(time.time()) + 1
    emulator.state.faults.append(rate_limited(reset))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert deletes(emulator) == 2
    # The retry waited for the window to reset (the sleep may end a clock tick early).
    assert time.time() >= reset - 0.02


@pytest.mark.parametrize("route", [EVENTS, SN_XML], ids=["v1.1-events", "statusnet-xml"])
async def test_a_429_whose_reset_is_past_the_budget_gives_up_at_once(
    make_gateway: GatewayFactory, emulator: EmulatorServer, route: Any
) -> None:
    gateway = await make_gateway(upstream={"retry_budget": 2.0})
    reset = int(time.time()) + 600
    emulator.state.faults.append(rate_limited(reset, times=None))
    started = time.monotonic()
    reply = await send(gateway, route, MESSAGE_ID)
    assert time.monotonic() - started < 2.0  # it did not wait for the budget to run out
    assert_error(reply, route, "rate_limited", MESSAGE_ID)
    assert deletes(emulator) == 1
    names = ("x-rate-limit-reset",) if route.style == "v1" else ("X-RateLimit-Reset",)
    assert [reply.headers.get(name) for name in names] == [str(reset)]


# --- a retried delete that v2 no longer knows --------------------------------------------------------


async def test_a_404_after_an_attempt_whose_answer_was_lost_counts_as_deleted(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """The first attempt reached v2 and deleted the event, but a 502 came back instead of its answer (here:
    the event is deleted for the caller, and the delete answered 502). The retry's 404 means it is gone."""
    gateway = await make_gateway()
    await learn_through_a_failed_delete(gateway, emulator)
    emulator.state.delete_for(MESSAGE_ID, SEAN_ID)
    emulator.state.faults.append(delete_rule(status=502, times=1))
    reply = await send(gateway, SN_XML, MESSAGE_ID)
    assert_message(reply, SN_XML, MESSAGE_ID, "second message", "theSeanCook", "s0c1alm3dia")
    # The body came from the store, for a participant (the caller's id asked once), and v2's 404 after the
    # lost attempt is taken as that attempt's deletion.
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", EVENT), ("DELETE", EVENT)]
    assert await store_of(gateway).get_deletion(MESSAGE_ID) is not None  # a tombstone, as for any delete


async def learn_through_a_failed_delete(gateway: TestClient, emulator: EmulatorServer) -> None:
    """The store learns the message from a lookup whose delete then fails every attempt."""
    emulator.state.faults.append(delete_rule(status=500, times=1))
    assert (await send(gateway, CLASSIC, MESSAGE_ID)).status == 502
    assert await store_of(gateway).get_message(MESSAGE_ID) is not None
    emulator.state.faults.clear()
    emulator.state.requests.clear()


async def test_a_404_after_a_429_is_still_not_found(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    """A 429 means v2 did nothing: a 404 after it is v2's real answer."""
    gateway = await make_gateway()
    emulator.state.delete_for(MESSAGE_ID, SEAN_ID)
    emulator.state.faults.append(rate_limited(int(time.time()) - 1))
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert_error(reply, EVENTS, "message_not_found", MESSAGE_ID)
    assert deletes(emulator) == 2
    assert await store_of(gateway).get_deletion(MESSAGE_ID) is None


async def test_a_404_to_a_lookup_after_a_lost_answer_is_still_not_found(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """Only a delete can have been done by a lost attempt; a lookup's 404 is v2's answer."""
    gateway = await make_gateway()
    emulator.state.faults[:] = [get_rule(status=503, times=1), get_rule(status=404, times=1)]
    reply = await send(gateway, CLASSIC, MESSAGE_ID)
    assert_error(reply, CLASSIC, "message_not_found", MESSAGE_ID)
    assert deletes(emulator) == 0


# --- sends are never retried ---------------------------------------------------------------------------


async def test_the_client_never_retries_a_post(emulator: EmulatorServer) -> None:
    emulator.state.faults.append(FaultRule(method="POST", path="/2/dm_conversations/*", status=503))
    principal = Principal(source="bearer", identity="sean", credential=BearerCredential(SEAN_TOKEN))
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(session, emulator.url, retry=RetryPolicy(retries=5, budget=5.0, backoff=0.001))
        with pytest.raises(UpstreamUnavailable):
            await client.send_dm(MICK_ID, "hello", principal)
    assert [r.method for r in emulator.state.requests] == ["POST"]


@pytest.mark.parametrize("fault", [{"status": 503}, {"action": "reset"}], ids=["503", "reset"])
async def test_a_legacy_send_is_never_retried(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any, fault: dict[str, Any]
) -> None:
    gateway = await make_gateway()
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(FaultRule(method="POST", path="/2/dm_conversations/*", **fault))
    response = await gateway.post("/1.1/direct_messages/new.json", data={"user_id": MICK_ID, "text": "only once"})
    assert response.status == 503
    assert await response.json() == {"errors": [{"code": 130, "message": "Over capacity"}]}
    assert [r.method for r in emulator.state.requests].count("POST") == 1
    send = "POST /2/dm_conversations/with/:id/messages"
    assert await metric(admin, "dmgw_upstream_retries_total", endpoint=send) == 0


async def test_the_pass_through_never_retries_a_send(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway()
    emulator.state.faults.append(FaultRule(method="POST", path="/2/dm_conversations/*", status=503))
    response = await gateway.post(
        "/2/dm_conversations/with/776627022/messages",
        json={"text": "hi"},
        headers={"Authorization": f"Bearer {SEAN_TOKEN}"},
    )
    assert response.status == 503
    assert [r.method for r in emulator.state.requests] == ["POST"]


# --- the circuit breaker, end to end -------------------------------------------------------------------

# One caller makes every call here: the per-caller limit (tests/test_hostile_passthrough.py) is off.
BREAKER = {"breaker_failures": 3, "breaker_reset": 0.2, "retries": 0, "breaker_failures_per_caller": 0}
# For tests that make several calls while the breaker is open: long enough that a loaded machine does not see it
# half-open before they are done.
SLOW_RESET = {**BREAKER, "breaker_reset": 1.0}


async def test_the_breaker_opens_fails_fast_and_a_probe_closes_it(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    gateway = await make_gateway(upstream=SLOW_RESET)
    admin = await with_admin(aiohttp_client, gateway)
    upstream = f"127.0.0.1:{emulator.port}"
    assert await metric(admin, "dmgw_breaker_state", upstream=upstream) == 0
    emulator.state.faults.append(delete_rule(status=503))
    for _ in range(3):
        assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert deletes(emulator) == 3
    assert await metric(admin, "dmgw_breaker_state", upstream=upstream) == 2
    assert await metric(admin, "dmgw_breaker_transitions_total", upstream=upstream, state="open") == 1

    # Open: the legacy client gets its over-capacity error at once, and nothing reaches v2.
    emulator.state.requests.clear()
    for route in (EVENTS, CLASSIC, SN_XML):
        assert_error(await send(gateway, route, MESSAGE_ID), route, "upstream_unavailable", MESSAGE_ID)
    assert emulator.state.requests == []
    count = "dmgw_upstream_request_duration_seconds_count"
    assert await metric(admin, count, endpoint=DELETE_ENDPOINT, outcome="breaker_open") == 1
    assert await metric(admin, count, endpoint=GET_ENDPOINT, outcome="breaker_open") == 2

    # /readyz says so.
    ready = await admin.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert (body["status"], body["store"], body["breaker"]) == ("unavailable", "up", "open")
    assert "circuit breaker open" in body["detail"]

    # After the reset time one probe goes through; upstream has recovered, so the breaker closes.
    emulator.state.faults.clear()
    await asyncio.sleep(1.05)
    ready = await admin.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["breaker"] == "half-open"
    reply = await send(gateway, EVENTS, MESSAGE_ID)
    assert reply.status == 204, reply.body
    assert deletes(emulator) == 1
    assert await metric(admin, "dmgw_breaker_state", upstream=upstream) == 0
    assert await metric(admin, "dmgw_breaker_transitions_total", upstream=upstream, state="half-open") == 1
    assert await metric(admin, "dmgw_breaker_transitions_total", upstream=upstream, state="closed") == 1
    assert (await (await admin.get("/readyz")).json()) == {"status": "ready", "store": "up", "breaker": "closed"}


async def test_a_failed_probe_opens_the_breaker_again(
    make_gateway: GatewayFactory, emulator: EmulatorServer, aiohttp_client: Any
) -> None:
    gateway = await make_gateway(upstream=SLOW_RESET)
    admin = await with_admin(aiohttp_client, gateway)
    emulator.state.faults.append(delete_rule(action="reset"))
    for _ in range(3):
        await send(gateway, EVENTS, MESSAGE_ID)
    await asyncio.sleep(1.05)
    emulator.state.requests.clear()
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)  # the probe
    assert deletes(emulator) == 2  # one attempt, sent twice by aiohttp after the drop
    emulator.state.requests.clear()
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert emulator.state.requests == []  # open again, for another reset period
    assert await metric(admin, "dmgw_breaker_state", upstream=f"127.0.0.1:{emulator.port}") == 2
    assert (await admin.get("/readyz")).status == 503


async def test_client_errors_never_open_the_breaker(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream=BREAKER)
    emulator.state.faults.append(delete_rule(status=404))
    for _ in range(5):
        assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "message_not_found", MESSAGE_ID)
    assert deletes(emulator) == 5


async def test_a_success_resets_the_count_of_failures(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream=BREAKER)
    emulator.state.faults.append(delete_rule(status=503, times=2))
    for _ in range(2):
        await send(gateway, EVENTS, MESSAGE_ID)
    assert (await send(gateway, EVENTS, MESSAGE_ID)).status == 204
    emulator.state.faults.append(delete_rule(status=503, times=2))
    for _ in range(2):
        await send(gateway, EVENTS, OTHER_ID)
    emulator.state.requests.clear()
    assert (await send(gateway, EVENTS, OTHER_ID)).status == 204  # 4 failures in all, never 3 in a row
    assert deletes(emulator) == 1


async def test_timeouts_count_as_failures(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream={**BREAKER, **FAST})
    emulator.state.faults.append(delete_rule(status=503, delay=1.0))
    for _ in range(3):
        await send(gateway, EVENTS, MESSAGE_ID)
    emulator.state.requests.clear()
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert emulator.state.requests == []


async def test_the_pass_through_shares_the_breaker(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream=BREAKER)
    emulator.state.faults.append(get_rule(status=503))
    auth = {"Authorization": f"Bearer {SEAN_TOKEN}"}
    for _ in range(3):  # the pass-through's own 5xx count too
        assert (await gateway.get(f"/2/dm_events/{MESSAGE_ID}", headers=auth)).status == 503
    emulator.state.requests.clear()
    response = await gateway.get(f"/2/dm_events/{MESSAGE_ID}", headers=auth)
    assert response.status == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert 1 <= int(response.headers["Retry-After"]) <= 1
    assert (await response.json(content_type=None))["status"] == 503
    # ...and legacy calls fail fast as well.
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert emulator.state.requests == []
    await asyncio.sleep(0.25)
    emulator.state.faults.clear()
    assert (await gateway.get(f"/2/dm_events/{MESSAGE_ID}", headers=auth)).status == 200  # the probe closes it
    assert (await send(gateway, EVENTS, MESSAGE_ID)).status == 204


async def test_breaker_failures_zero_turns_it_off(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream={**BREAKER, "breaker_failures": 0})
    emulator.state.faults.append(delete_rule(status=503))
    for _ in range(6):
        await send(gateway, EVENTS, MESSAGE_ID)
    assert deletes(emulator) == 6


# --- the breaker and the retry policy on their own -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_one_probe_goes_through_while_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker("h:1", failures=2, reset=10, clock=clock)
    for _ in range(2):
        assert breaker.allow() is False
        breaker.record(False, probe=False)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is True  # the probe
    with pytest.raises(BreakerOpen):
        breaker.allow()  # everyone else still fails fast
    breaker.record(None, probe=True)  # the probe's caller went away: no verdict, the next call probes
    assert breaker.allow() is True
    breaker.record(True, probe=True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() is False


def test_results_of_calls_admitted_before_the_breaker_opened_do_not_decide() -> None:
    clock = Clock()
    breaker = CircuitBreaker("h:1", failures=1, reset=10, clock=clock)
    breaker.allow()
    breaker.allow()
    breaker.record(False, probe=False)
    assert breaker.state is BreakerState.OPEN
    breaker.record(True, probe=False)  # a slow call that started before: not a probe
    assert breaker.state is BreakerState.OPEN
    assert math.isclose(breaker.retry_after(), 10)


def test_breakers_are_per_host() -> None:
    breakers = Breakers(1, 10)
    one = breakers.for_url("http://127.0.0.1:1/x")
    assert breakers.for_url("http://127.0.0.1:1") is one
    assert breakers.for_url("http://127.0.0.1:2") is not one
    assert one.name == "127.0.0.1:1"
    assert breakers.for_url("https://api.x.com").name == "api.x.com:443"


def test_the_backoff_is_jittered_and_doubles() -> None:
    policy = RetryPolicy(retries=3, budget=5, backoff=0.1)
    assert policy.backoff_delay(0, rand=lambda: 1.0) == pytest.approx(0.1)
    assert policy.backoff_delay(2, rand=lambda: 1.0) == pytest.approx(0.4)
    assert policy.backoff_delay(2, rand=lambda: 0.25) == pytest.approx(0.1)
    assert policy.may_retry("GET", 2) and not policy.may_retry("GET", 3)
    assert policy.may_retry("DELETE", 0) and not policy.may_retry("POST", 0)


async def test_a_nested_budget_keeps_the_outer_deadline() -> None:
    policy = RetryPolicy(budget=100)
    with retry_budget(1.0):
        outer = policy.deadline()
        await asyncio.sleep(0.01)
        with retry_budget(1.0):
            assert policy.deadline() == outer
    assert policy.deadline() > outer + 50  # outside a legacy call, a budget starts with each call


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("retries", -1, "upstream.retries must be between 0 and 10"),
        ("retries", 11, "upstream.retries must be between 0 and 10"),
        ("retries", 1.5, "upstream.retries must be an integer"),
        ("retry_budget", -1, "upstream.retry_budget must be between 0 and 300"),
        ("retry_budget", float("nan"), "upstream.retry_budget must be between 0 and 300"),
        ("retry_budget", 1000, "upstream.retry_budget must be between 0 and 300"),
        ("retry_backoff", -0.1, "upstream.retry_backoff must be between 0 and 60"),
        ("retry_backoff", 61, "upstream.retry_backoff must be between 0 and 60"),
        ("retry_backoff", float("nan"), "upstream.retry_backoff must be between 0 and 60"),
        ("breaker_failures", -1, "upstream.breaker_failures must be 0 (off) or more"),
        ("breaker_reset", 0, "upstream.breaker_reset must be more than 0"),
        ("breaker_reset", float("inf"), "upstream.breaker_reset must be more than 0"),
        ("breaker_failures_per_caller", -1, "upstream.breaker_failures_per_caller must be 0 (no limit) or more"),
        ("breaker_failures_per_caller", 1.5, "upstream.breaker_failures_per_caller must be an integer"),
    ],
)
def test_bad_resilience_settings_are_refused(emulator: EmulatorServer, key: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        gateway_config(emulator, upstream={key: value})


def test_a_zero_budget_turns_retries_off_whatever_the_backoff(emulator: EmulatorServer) -> None:
    config = gateway_config(emulator, upstream={"retry_budget": 0, "retry_backoff": 0.5})
    assert (config.upstream.retry_budget, config.upstream.retry_backoff) == (0.0, 0.5)


async def test_with_a_zero_budget_nothing_is_retried(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    gateway = await make_gateway(upstream={"retry_budget": 0})
    emulator.state.faults.append(delete_rule(status=503, times=1))
    assert_error(await send(gateway, EVENTS, MESSAGE_ID), EVENTS, "upstream_unavailable", MESSAGE_ID)
    assert deletes(emulator) == 1


def test_resilience_defaults() -> None:
    from gateway.config import UpstreamConfig

    upstream = UpstreamConfig()
    assert (upstream.retries, upstream.retry_budget, upstream.retry_backoff) == (2, 10.0, 0.1)
    assert (upstream.breaker_failures, upstream.breaker_reset, upstream.breaker_failures_per_caller) == (5, 30.0, 2)
