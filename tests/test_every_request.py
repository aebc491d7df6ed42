"""What every request goes through, seen from outside: its id, its count in /metrics, the error boundary
and the order of the layers around the handler, the reading of its bearer header, and the retry budget its
v2 calls share."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import orjson
import pytest

from gateway.admin import create_admin_app
from gateway.auth.inbound import bearer_token
from gateway.emulator import EmulatorServer
from gateway.keys import SERVICE_KEY
from gateway.upstream.resilience import RetryPolicy, retry_budget
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, GatewayFactory
from tests.test_faults import header
from tests.test_observability import samples, value

HEX_ID = re.compile(r"[0-9a-f]{32}")
JSONP_TYPE = "application/javascript"
DESTROY = "/1.1/direct_messages/destroy.json"
MISSING_ID = "1583890000099999999"


# --- request ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("req-1", True), ("a.b:c_D-9", True), ("x" * 128, True)]
    + [(bad, False) for bad in ("", "x" * 129, "has space", "semi;colon", "ünïcode")],
)
async def test_a_well_formed_request_id_is_kept_and_any_other_replaced_by_a_new_one(
    make_gateway: GatewayFactory, emulator: EmulatorServer, sent: str, kept: bool
) -> None:
    gateway = await make_gateway()
    response = await gateway.post(f"{DESTROY}?id={PLAIN_IDS[0]}", headers={"X-Request-Id": sent})
    assert response.status == 200
    answered = response.headers["X-Request-Id"]
    assert answered == sent if kept else HEX_ID.fullmatch(answered)
    assert {header(r, "X-Request-Id") for r in emulator.state.requests} == {answered}  # the one sent upstream


async def test_every_answer_has_an_id_of_its_own(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    answers = [
        await gateway.get("/1.1/direct_messages.json"),  # served
        await gateway.get("/1.1/no/such/call.json"),  # aiohttp's 404, made the dialect's
        await gateway.put("/1.1/direct_messages.json"),  # aiohttp's 405, which v1.1 answered 404
        await gateway.get("/1.1/direct_messages.json", headers={"Authorization": "Bearer a b"}),  # refused
        await gateway.get("/api/direct_messages.json?callback=1nvalid"),  # JSONP's refusal
        await gateway.get("/2/users/me", headers={"Authorization": f"Bearer {SEAN_TOKEN}"}),  # pass-through
    ]
    assert [a.status for a in answers] == [200, 404, 404, 400, 400, 200]
    ids = [a.headers["X-Request-Id"] for a in answers]
    assert all(HEX_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


# --- the count of requests, by the status the client got -------------------------------------------------


async def test_requests_are_counted_by_dialect_route_and_the_status_the_client_got(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> None:
    gateway = await make_gateway()
    admin = await aiohttp_client(create_admin_app(gateway.app))
    for message_id in PLAIN_IDS:
        assert (await gateway.post(f"{DESTROY}?id={message_id}")).status == 200
    assert (await gateway.post(f"{DESTROY}?id={MISSING_ID}")).status == 404
    suppressed = await gateway.post(f"{DESTROY}?id={MISSING_ID}&suppress_response_codes=true")
    assert suppressed.status == 200  # an error answered 200 is counted as the 200 the client got
    assert (await gateway.get("/nowhere/at/all")).status == 404
    assert (await gateway.get("/2/users/me", headers={"Authorization": f"Bearer {SEAN_TOKEN}"})).status == 200
    found = await samples(admin)
    counted = {
        (s.labels["dialect"], s.labels["route"], s.labels["status"]): s.value
        for s in found
        if s.name == "dmgw_requests_total"
    }
    assert counted == {
        ("twitter_v1", DESTROY, "200"): 3,
        ("twitter_v1", DESTROY, "404"): 1,
        ("unknown", "unmatched", "404"): 1,
        ("v2", "/2/{tail}", "200"): 1,
    }
    # One upstream delete for each message: the missing one was looked up in v2, never deleted.
    deletes = value(found, "dmgw_upstream_request_duration_seconds_count", endpoint="DELETE /2/dm_events/:id")
    assert deletes == 2


# --- the error boundary and the layers around it ---------------------------------------------------------


async def test_an_unexpected_failure_is_the_dialects_500_with_its_id_wrapped_and_counted(
    make_gateway: GatewayFactory, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    gateway = await make_gateway()
    admin = await aiohttp_client(create_admin_app(gateway.app))

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.app[SERVICE_KEY], "list_messages", broken)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        plain = await gateway.get("/api/direct_messages.json", headers={"X-Request-Id": "bug-1"})
        wrapped = await gateway.get("/api/direct_messages.json?callback=cb", headers={"X-Request-Id": "bug-2"})
    assert (plain.status, plain.content_type, plain.headers["X-Request-Id"]) == (500, "application/json", "bug-1")
    body = await plain.read()
    assert b"a bug" not in body and b"Traceback" not in body
    assert (wrapped.status, wrapped.content_type, wrapped.headers["X-Request-Id"]) == (500, JSONP_TYPE, "bug-2")
    assert await wrapped.read() == b"cb(" + body + b")"
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert [r.getMessage() for r in logged] == [
        "unexpected error, request id bug-1",
        "unexpected error, request id bug-2",
    ]
    found = await samples(admin)
    assert value(found, "dmgw_requests_total", dialect="statusnet", status="500") == 2


async def test_a_body_that_never_arrives_is_the_dialects_408_and_the_connection_closes(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    gateway = await make_gateway(server={"client_timeout": 0.2})
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        writer.write(
            b"POST /1/direct_messages/new.json?callback=cb HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-Request-Id: slow-1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\ntext=hi"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # the whole answer, then the connection's end
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"\r\nX-Request-Id: slow-1\r\n" in head
    assert b"\r\nContent-Type: application/javascript" in head
    assert body.startswith(b"cb({") and body.endswith(b"})")
    assert emulator.state.requests == []


# --- the bearer header -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc\t", "abc"),
        (" Bearer\tabc ", None),  # the scheme ends at a space
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer abc def", None),
        ("Bearer abc\tdef", None),
        ("Bearer abc\x85def", None),
        ("Bearer abc\u3000def", None),
        ("Basic abc", None),
        ("", None),
        (None, None),
    ],
)
def test_the_token_of_a_bearer_header(authorization: str | None, token: str | None) -> None:
    assert bearer_token(authorization) == token


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer  ", f"Bearer {SEAN_TOKEN} extra", "bearer a\tb"])
async def test_a_malformed_bearer_header_is_refused_before_anything_goes_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, authorization: str
) -> None:
    gateway = await make_gateway()
    response = await gateway.post(f"{DESTROY}?id={PLAIN_IDS[0]}", headers={"Authorization": authorization})
    assert response.status == 400
    assert orjson.loads(await response.read())["errors"][0]["code"] == 215
    assert emulator.state.requests == []


async def test_a_bearer_header_with_any_case_and_padding_acts_with_its_token(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    gateway = await make_gateway()
    response = await gateway.post(f"{DESTROY}?id={PLAIN_IDS[0]}", headers={"Authorization": f"bEaReR  {SEAN_TOKEN}\t"})
    assert response.status == 200
    assert {header(r, "Authorization") for r in emulator.state.requests} == {f"Bearer {SEAN_TOKEN}"}


# --- the retry budget ------------------------------------------------------------------------------------


async def test_a_budget_ends_with_its_block_even_when_the_block_fails() -> None:
    policy = RetryPolicy(budget=100)
    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError), retry_budget(1.0):
        assert policy.deadline() <= loop.time() + 1.0
        raise RuntimeError("boom")
    assert policy.deadline() > loop.time() + 50  # no budget left behind: a call outside starts its own
    budget = retry_budget(2.0)
    for _ in range(2):  # the same budget object entered again starts afresh
        with budget:
            assert policy.deadline() <= loop.time() + 2.0
        assert policy.deadline() > loop.time() + 50
