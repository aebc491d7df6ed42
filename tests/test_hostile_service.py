"""A stored DM for someone who may not own it, and v2 answers the gateway cannot use, tried as an attacker would.

The store answers a destroy's body only to a participant of the message; a DELETE that v2 answers 404 after an
attempt whose outcome was lost counts as deleted only for one; every deleter keeps a deletion record of its own;
a Basic user's remembered id follows the grant they are given; and whatever a v2 answer holds, the caller gets
a 502 in its own dialect's shape (never a 500, never a traceback), with the store as it was.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password
from gateway.emulator import EmulatorServer, FaultRule
from gateway.keys import SERVICE_KEY
from tests.conftest import (
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEAN_TOKEN,
    VANISHED_SENDER_ID,
    GatewayFactory,
    opened_store,
    store_of,
)

SEAN_ID, MICK_ID = "38895958", "776627022"
MESSAGE_ID = PLAIN_IDS[0]  # theSeanCook -> s0c1alm3dia
TEXT = b"second message"  # its text
OTHER_ID = PLAIN_IDS[1]  # s0c1alm3dia -> theSeanCook
MARCOS = {"Authorization": f"Bearer {MARCOS_TOKEN}"}  # a participant of neither
MICK = {"Authorization": f"Bearer {MICK_TOKEN}"}
CLASSIC = "/1.1/direct_messages/destroy.json?id={id}"
SN_XML = "/api/direct_messages/destroy/{id}.xml"
SN_JSON = "/1/direct_messages/destroy/{id}.json"
EVENTS = "/1.1/direct_messages/events/destroy.json?id={id}"
SHOW = "/1.1/direct_messages/show.json?id={id}"
DELETE_PATH = "/2/dm_events/*"


def calls(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def deletes(emulator: EmulatorServer) -> list[str]:
    return [r.path for r in emulator.state.requests if r.method == "DELETE"]


async def learn(client: TestClient, *message_ids: str) -> None:
    """The store learns each message from a show by the sidecar (theSeanCook, a participant of both)."""
    for message_id in message_ids:
        response = await client.get(SHOW.format(id=message_id))
        assert response.status == 200, await response.text()
        assert await store_of(client).get_message(message_id) is not None


def lost_then_404() -> list[FaultRule]:
    """A delete whose first answer is lost (502), and v2's 404 to the retry."""
    return [
        FaultRule(method="DELETE", path=DELETE_PATH, status=502, times=1),
        FaultRule(method="DELETE", path=DELETE_PATH, status=404, times=1),
    ]


async def post(client: TestClient, path: str, **kwargs: Any) -> tuple[int, bytes]:
    async with client.post(path, **kwargs) as response:
        return response.status, await response.read()


# 1. A stored body is served only to a participant ------------------------------------------------------


@pytest.mark.parametrize("route", [CLASSIC, SN_XML, SN_JSON])
async def test_a_stored_body_is_not_served_to_a_non_participant(
    make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Any, route: str
) -> None:
    """Marcos destroys a message between Sean and Mick that the gateway has stored, while v2's answers are
    lost (a 502, then 404 to the retry). He gets exactly what he gets from a gateway that never saw it: v2's
    refusal of the lookup, nothing of the message, and no delete is sent for him."""
    fresh = await make_gateway()
    emulator.state.faults[:] = lost_then_404()
    expected = await post(fresh, route.format(id=MESSAGE_ID), headers=MARCOS)
    assert expected[0] == 403

    client = await make_gateway(store_url=f"sqlite:///{tmp_path}/g.sqlite3")
    await learn(client, MESSAGE_ID)
    before = await store_of(client).get_message(MESSAGE_ID)
    emulator.state.requests.clear()
    emulator.state.faults[:] = lost_then_404()
    status, body = await post(client, route.format(id=MESSAGE_ID), headers=MARCOS)
    assert (status, body) == expected
    assert TEXT not in body and SEAN_ID.encode() not in body
    if route.endswith(".xml"):
        assert ET.fromstring(body).findtext("error") == "You are not allowed to delete this direct message."
    else:
        document = json.loads(body)
        assert document.get("errors", [{}])[0].get("code", 93) == 93 and "text" not in document
    # v2 was asked who he is and for the message (which it refused), and nothing was deleted.
    assert calls(emulator) == [("GET", "/2/users/me"), ("GET", f"/2/dm_events/{MESSAGE_ID}")]
    assert await store_of(client).get_message(MESSAGE_ID) == before
    assert await store_of(client).get_deletions(MESSAGE_ID) == ()
    assert not emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID)


async def test_a_participant_is_known_once_per_caller(make_gateway: GatewayFactory, emulator: EmulatorServer) -> None:
    """The check costs a store-hit destroy no v2 call once the caller's id is known: one /2/users/me per
    caller, then only the deletes."""
    client = await make_gateway()
    await learn(client, MESSAGE_ID, OTHER_ID)
    emulator.state.requests.clear()
    for message_id in (MESSAGE_ID, OTHER_ID):
        status, body = await post(client, CLASSIC.format(id=message_id))
        assert status == 200 and json.loads(body)["id_str"] == message_id
    assert calls(emulator) == [
        ("GET", "/2/users/me"),
        ("DELETE", f"/2/dm_events/{MESSAGE_ID}"),
        ("DELETE", f"/2/dm_events/{OTHER_ID}"),
    ]


# 2. A 404 after a lost attempt counts as deleted only for a participant --------------------------------


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "unknown"])
async def test_a_404_after_a_lost_attempt_is_not_a_deletion_for_a_non_participant(
    make_gateway: GatewayFactory, emulator: EmulatorServer, stored: bool
) -> None:
    client = await make_gateway()
    if stored:
        await learn(client, MESSAGE_ID)
    emulator.state.requests.clear()
    emulator.state.faults[:] = lost_then_404()
    async with client.delete(EVENTS.format(id=MESSAGE_ID), headers=MARCOS) as response:
        assert response.status == 404
        assert await response.json() == {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}
    assert deletes(emulator) == [f"/2/dm_events/{MESSAGE_ID}"] * 2
    await client.server.app[SERVICE_KEY].drain()
    assert await store_of(client).get_deletions(MESSAGE_ID) == ()
    assert (await store_of(client).get_message(MESSAGE_ID) is not None) is stored


async def test_a_404_after_a_lost_attempt_is_the_deletion_for_a_participant(
    make_gateway: GatewayFactory, emulator: EmulatorServer
) -> None:
    """The lost attempt did delete it (v2 deleted it for Sean, and its answer was a 502): Sean's retry's 404
    is taken as that deletion, recorded as his."""
    client = await make_gateway()
    await learn(client, MESSAGE_ID)
    emulator.state.delete_for(MESSAGE_ID, SEAN_ID)
    emulator.state.faults[:] = [FaultRule(method="DELETE", path=DELETE_PATH, status=502, times=1)]
    async with client.delete(EVENTS.format(id=MESSAGE_ID)) as response:
        assert response.status == 204
    await client.server.app[SERVICE_KEY].drain()
    [deletion] = await store_of(client).get_deletions(MESSAGE_ID)
    assert deletion.by == "sidecar"


# 3. A deletion record per deleter ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_both_participants_retries_are_answered_as_their_first_calls(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    request: pytest.FixtureRequest,
    tmp_path: Any,
    backend: str,
) -> None:
    async with opened_store(backend, request, tmp_path) as store:
        client = await make_gateway(store=store)
        path = CLASSIC.format(id=MESSAGE_ID)
        sean_first = await post(client, path)
        mick_first = await post(client, path, headers=MICK)
        assert sean_first[0] == mick_first[0] == 200
        await client.server.app[SERVICE_KEY].drain()
        # Each one's answer was lost: both try again, and v2 now answers each of them 404.
        emulator.state.requests.clear()
        assert await post(client, path) == sean_first
        assert await post(client, path, headers=MICK) == mick_first
        assert deletes(emulator) == [f"/2/dm_events/{MESSAGE_ID}"] * 2
        deleters = [d.by for d in await store.get_deletions(MESSAGE_ID)]
        assert deleters[0] == "sidecar" and deleters[1].startswith("bearer:") and len(deleters) == 2  # type: ignore[union-attr]
        assert emulator.state.is_deleted_for(MESSAGE_ID, SEAN_ID) and emulator.state.is_deleted_for(MESSAGE_ID, MICK_ID)


# 4. A Basic user's id follows their grant -------------------------------------------------------------

PASSWORD = "alice's password"


@pytest.fixture
async def alice_store(request: pytest.FixtureRequest, tmp_path: Any):  # type: ignore[no-untyped-def]
    async with opened_store("sqlite", request, tmp_path) as store:
        await store.put_user(BasicUser("alice", hash_password(PASSWORD), OAuth2Grant(SEAN_TOKEN)))
        yield store


def alice() -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


async def test_a_basic_users_new_grant_is_asked_about_again(
    make_gateway: GatewayFactory, emulator: EmulatorServer, alice_store: Any
) -> None:
    """Alice deletes a message as theSeanCook, whose grant she holds; the operator then gives her Marcos's
    grant. Her retry, which v2 answers 404 (Marcos does not see the message), is not taken for her deletion
    as Sean, and the stored body is not hers to read: she is asked about again, and v2 answers Marcos."""
    client = await make_gateway(store=alice_store)
    await learn(client, MESSAGE_ID)
    path = SN_JSON.format(id=MESSAGE_ID)
    status, first = await post(client, path, headers=alice())
    assert status == 200 and TEXT in first
    await client.server.app[SERVICE_KEY].drain()
    [deletion] = await alice_store.get_deletions(MESSAGE_ID)
    assert deletion.by == "basic:alice"

    user = await alice_store.get_user("alice")
    await alice_store.put_user(BasicUser("alice", user.password_hash, OAuth2Grant(MARCOS_TOKEN)))
    emulator.state.requests.clear()
    emulator.state.faults[:] = [FaultRule(method="DELETE", path=DELETE_PATH, status=404)]
    status, body = await post(client, path, headers=alice())
    assert status == 403 and TEXT not in body
    assert json.loads(body)["error"] == "You are not allowed to delete this direct message."
    me = [r for r in emulator.state.requests if r.path == "/2/users/me"]
    assert [r.headers["Authorization"] for r in me] == [f"Bearer {MARCOS_TOKEN}"]
    assert deletes(emulator) == []
    async with client.delete(EVENTS.format(id=MESSAGE_ID), headers=alice()) as response:
        assert response.status == 404  # nor does the events destroy take Sean's deletion for hers
    assert await alice_store.get_deletions(MESSAGE_ID) == (deletion,)


# 5. v2 answers the gateway cannot use: 502, one log line, the store as it was ---------------------------

V1_502 = {"errors": [{"code": 131, "message": "Internal error"}]}


def assert_one_line_502(status: int, body: bytes, caplog: pytest.LogCaptureFixture, xml: bool = False) -> None:
    assert status == 502, body
    if xml:
        assert ET.fromstring(body).findtext("error") == "Internal server error."
    elif body.startswith(b'{"errors"'):
        assert json.loads(body) == V1_502
    else:
        assert json.loads(body)["error"] == "Internal server error."
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING and "upstream_failure" in r.getMessage()]
    assert len(failures) == 1 and "\n" not in failures[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text


DELETE_ANSWERS = {
    "data-null": {"body": {"data": None}},
    "data-array": {"body": {"data": []}},
    "data-string": {"body": {"data": "deleted"}},
    "not-deleted": {"body": {"data": {"deleted": False}}},
    "deleted-string": {"body": {"data": {"deleted": "true"}}},
    "not-json": {"text": "<html>deleted</html>"},
    "json-array": {"text": "[true]"},
}


@pytest.mark.parametrize("route", [CLASSIC, SN_XML, EVENTS])
@pytest.mark.parametrize("answer", [pytest.param(v, id=k) for k, v in DELETE_ANSWERS.items()])
async def test_a_delete_answer_that_cannot_be_used_is_a_502_and_changes_nothing(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    route: str,
    answer: dict[str, Any],
) -> None:
    client = await make_gateway()
    await learn(client, MESSAGE_ID)
    before = await store_of(client).get_message(MESSAGE_ID)
    emulator.state.faults[:] = [FaultRule(method="DELETE", path=DELETE_PATH, status=200, **answer)]
    caplog.clear()
    method = client.delete if route == EVENTS else client.post
    async with method(route.format(id=MESSAGE_ID)) as response:
        assert_one_line_502(response.status, await response.read(), caplog, xml=route == SN_XML)
    await client.server.app[SERVICE_KEY].drain()
    assert await store_of(client).get_message(MESSAGE_ID) == before
    assert await store_of(client).get_deletions(MESSAGE_ID) == ()


EVENT = {
    "id": MESSAGE_ID, "event_type": "MessageCreate", "text": "second message", "sender_id": SEAN_ID,
    "dm_conversation_id": f"{SEAN_ID}-{MICK_ID}", "created_at": "2022-10-22T19:00:00.000Z",
}  # fmt: skip
USER = {"id": MICK_ID, "username": "s0c1alm3dia", "name": "Mick"}
SEND = "/1.1/direct_messages/new.json"

# (what v2 is asked, the body it answers, the legacy call that reads it)
OTHER_ANSWERS = {
    "show-data-array": ("GET", f"/2/dm_events/{MESSAGE_ID}", {"body": {"data": []}}, "show"),
    "show-id-not-an-id": ("GET", f"/2/dm_events/{MESSAGE_ID}", {"body": {"data": {**EVENT, "id": "../../2"}}}, "show"),
    "show-sender-object": ("GET", f"/2/dm_events/{MESSAGE_ID}", {"body": {"data": {**EVENT, "sender_id": {}}}}, "show"),
    "show-entities-list": (
        "GET",
        f"/2/dm_events/{MESSAGE_ID}",
        {"body": {"data": {**EVENT, "entities": {"hashtags": ["#x"]}}}},
        "show",
    ),
    "show-hashtag-tag": (
        "GET",
        f"/2/dm_events/{MESSAGE_ID}",
        {"body": {"data": {**EVENT, "entities": {"hashtags": [{"tag": 5, "start": 0, "end": 1}]}}}},
        "show",
    ),
    "show-user-id-object": (
        "GET",
        f"/2/dm_events/{MESSAGE_ID}",
        {"body": {"data": EVENT, "includes": {"users": [{"id": {"a": 1}}]}}},
        "show",
    ),
    "show-time-past-the-calendar": (
        "GET",
        f"/2/dm_events/{MESSAGE_ID}",
        {"body": {"data": {**EVENT, "created_at": "0001-01-01T00:00:00+14:00"}}},
        "show",
    ),
    "show-not-json": ("GET", f"/2/dm_events/{MESSAGE_ID}", {"text": '{"data": '}, "show"),
    "list-data-object": ("GET", "/2/dm_events", {"body": {"data": {"id": MESSAGE_ID}}}, "list"),
    "list-sender-array": ("GET", "/2/dm_events", {"body": {"data": [{**EVENT, "sender_id": [SEAN_ID]}]}}, "list"),
    "me-data-null": ("GET", "/2/users/me", {"body": {"data": None}}, "sent"),
    "me-id-number": ("GET", "/2/users/me", {"body": {"data": {"id": 5.5}}}, "sent"),
    "me-id-path": ("GET", "/2/users/me", {"body": {"data": {"id": "../2/users"}}}, "sent"),
    "me-metrics-list": ("GET", "/2/users/me", {"body": {"data": {"id": "1", "public_metrics": ["x"]}}}, "sent-ok"),
    "recipient-id-path": ("GET", f"/2/users/{MICK_ID}", {"body": {"data": {**USER, "id": "1/../2"}}}, "send"),
    "send-data-null": ("POST", "/2/dm_conversations/with/*/messages", {"body": {"data": None}}, "send"),
    "send-event-id-superscript": (
        "POST",
        "/2/dm_conversations/with/*/messages",
        {"body": {"data": {"dm_event_id": "\u00b2"}}},
        "send",
    ),
    "send-event-id-number": (
        "POST",
        "/2/dm_conversations/with/*/messages",
        {"body": {"data": {"dm_event_id": 7}}},
        "send",
    ),
    "users-data-number": ("GET", "/2/users", {"body": {"data": 5}}, "show-vanished"),
}


@pytest.mark.parametrize(
    ("method", "path", "answer", "call"), [pytest.param(*v, id=k) for k, v in OTHER_ANSWERS.items()]
)
async def test_every_v2_answer_that_cannot_be_used_is_a_502(
    make_gateway: GatewayFactory,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    answer: dict[str, Any],
    call: str,
) -> None:
    client = await make_gateway()
    emulator.state.faults[:] = [FaultRule(method=method, path=path, status=200, **answer)]
    caplog.clear()
    if call == "show":
        response = await client.get(SHOW.format(id=MESSAGE_ID))
    elif call == "show-vanished":
        response = await client.get(SHOW.format(id=VANISHED_SENDER_ID))
    elif call == "list":
        response = await client.get("/1.1/direct_messages.json")
    elif call in ("sent", "sent-ok"):
        response = await client.get("/1.1/direct_messages/sent.json")
    else:
        response = await client.post(SEND, data={"user_id": MICK_ID, "text": "hello"})
    body = await response.read()
    if call == "sent-ok":  # metrics of the wrong type are only left out
        assert response.status == 200, body
        assert not [r for r in caplog.records if r.exc_info]
    else:
        assert_one_line_502(response.status, body, caplog)
    if call.startswith("show") or call == "list":
        assert await store_of(client).get_message(MESSAGE_ID) is None  # nothing of it was learned


async def test_a_pass_through_body_with_an_unusable_user_is_learned_without_it(
    make_gateway: GatewayFactory, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The pass-through hands v2's bytes on as they came; learning from them leaves out what it cannot read
    (here the users, one of whose ids is no id), keeps the message, and logs no traceback."""
    from gateway.upstream.client import DM_EVENT_FIELDS, USER_FIELDS

    client = await make_gateway()
    body = {"data": EVENT, "includes": {"users": [{**USER, "id": "../me"}, {**USER, "id": SEAN_ID}]}}
    emulator.state.faults[:] = [FaultRule(method="GET", path=f"/2/dm_events/{MESSAGE_ID}", status=200, body=body)]
    query = f"dm_event.fields={DM_EVENT_FIELDS}&expansions=sender_id,participant_ids&user.fields={USER_FIELDS}"
    caplog.clear()
    async with client.get(f"/2/dm_events/{MESSAGE_ID}?{query}", headers={"Authorization": f"Bearer {SEAN_TOKEN}"}) as r:
        assert r.status == 200 and json.loads(await r.read()) == body
    assert await store_of(client).get_message(MESSAGE_ID) is not None
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text
