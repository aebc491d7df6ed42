"""Round trips against the X API v2 emulator over real HTTP.

The gateway's own tests trust the emulator to behave like X, so these pin that behaviour down: per-caller
deletion, v2's sparse field selection, pagination, quotas, and every kind of injected fault.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from gateway.emulator import (
    STATE_KEY,
    EmulatorServer,
    EmulatorState,
    FaultRule,
    RecordedRequest,
    create_app,
    default_seed,
    load_seed,
    serve,
)

SEAN = "emulator-token-theSeanCook"
MICK = "emulator-token-s0c1alm3dia"
MARCOS = "emulator-token-marcosgdf"
DEV = "emulator-token-XDevelopers"

SEAN_ID, MICK_ID, MARCOS_ID, DEV_ID = "38895958", "776627022", "1", "2244994945"
HELLO = "240251665733795841"  # Mick -> Sean, the v1.1 documentation example
SECOND = "1583890000000000003"  # Sean -> Mick
FROM_VANISHED = "1583890000000000007"  # sender account no longer exists
PROBLEMS = "https://api.twitter.com/2/problems/"
RATE_HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands still, for the shared ``state`` and ``client`` fixtures (tests/emulator_app.py)."""
    return FakeClock()


async def get_json(
    client: Any, path: str, params: Mapping[str, str] | None = None, *, token: str = SEAN, status: int = 200
) -> Any:
    response = await client.get(path, headers=bearer(token), params=params)
    assert response.status == status, await response.text()
    return await response.json(content_type=None)


# --- the seed ---------------------------------------------------------------------------------------


def test_seed_entity_offsets_point_at_their_text() -> None:
    seed = default_seed()
    checked = 0
    for event in seed["events"]:
        entities = event.get("entities", {})
        text = event.get("text", "")
        for hashtag in entities.get("hashtags", []):
            assert text[hashtag["start"] : hashtag["end"]] == "#" + hashtag["tag"]
            checked += 1
        for url in entities.get("urls", []):
            assert text[url["start"] : url["end"]] == url["url"]
            checked += 1
        for mention in entities.get("mentions", []):
            assert text[mention["start"] : mention["end"]] == "@" + mention["username"]
            checked += 1
    for user in seed["users"]:
        for mention in user.get("entities", {}).get("description", {}).get("mentions", []):
            assert user["description"][mention["start"] : mention["end"]] == "@" + mention["username"]
            checked += 1
        for url in user.get("entities", {}).get("url", {}).get("urls", []):
            assert user["url"][url["start"] : url["end"]] == url["url"]
            checked += 1
    assert checked == 6


def test_seed_keeps_awkward_text_exactly() -> None:
    seed = default_seed()
    sean = next(user for user in seed["users"] if user["id"] == SEAN_ID)
    assert sean["description"] == "I taught your phone that thing you like.  The Mobile Partner Engineer @Twitter. "
    tricky = next(event for event in seed["events"] if event["id"] == "1583890000000000002")
    assert tricky["text"] == "Tags <b>&amp; \"quotes\" 'apostrophes' & a bell \x07 and café ✓"


def test_load_seed_reads_a_file_and_refuses_incomplete_events(tmp_path: Any) -> None:
    path = tmp_path / "seed.json"
    path.write_text('{"users": [], "events": [{"id": "5", "text": "no sender"}], "tokens": {}}')
    seed = load_seed(path)
    assert seed["events"][0]["id"] == "5"
    with pytest.raises(ValueError, match="lacks"):
        EmulatorState.from_seed(seed)


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, bearer("not-a-token"), {"Authorization": f"Basic {SEAN}"}])
async def test_missing_or_unknown_credentials_get_401(client: Any, headers: dict[str, str]) -> None:
    response = await client.get("/2/users/me", headers=headers)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await response.json(content_type=None) == {
        "title": "Unauthorized",
        "type": "about:blank",
        "status": 401,
        "detail": "Unauthorized",
    }


async def test_token_of_a_vanished_account_gets_401(client: Any, state: EmulatorState) -> None:
    state.tokens["orphaned-token"] = "999999999"
    assert (await client.get("/2/users/me", headers=bearer("orphaned-token"))).status == 401


# --- deleting ---------------------------------------------------------------------------------------


async def test_delete_hides_the_event_from_the_caller_only(client: Any, state: EmulatorState) -> None:
    response = await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"data": {"deleted": True}}

    assert state.is_deleted_for(SECOND, SEAN_ID)
    assert not state.is_deleted_for(SECOND, MICK_ID)
    await get_json(client, f"/2/dm_events/{SECOND}", status=404)
    assert (await get_json(client, f"/2/dm_events/{SECOND}", token=MICK))["data"]["text"] == "second message"
    listed = await get_json(client, "/2/dm_events")
    assert SECOND not in [event["id"] for event in listed["data"]]


async def test_deleting_twice_is_404(client: Any) -> None:
    assert (await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))).status == 200
    response = await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))
    assert response.status == 404
    body = await response.json(content_type=None)
    assert body["type"] == f"{PROBLEMS}resource-not-found"
    assert body["resource_id"] == SECOND


async def test_unknown_event_is_404(client: Any) -> None:
    response = await client.delete("/2/dm_events/12345", headers=bearer(SEAN))
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_non_participant_gets_403_and_nothing_is_deleted(client: Any, state: EmulatorState) -> None:
    response = await client.delete(f"/2/dm_events/{HELLO}", headers=bearer(MARCOS))
    assert response.status == 403
    assert (await response.json(content_type=None))["title"] == "Forbidden"
    assert not state.is_deleted_for(HELLO, MARCOS_ID)
    await get_json(client, f"/2/dm_events/{HELLO}", token=MARCOS, status=403)


@pytest.mark.parametrize("bad_id", ["abc", "12345678901234567890", "%D9%A1", "-5", "1.0"])
async def test_malformed_event_id_is_400(client: Any, bad_id: str) -> None:
    response = await client.delete(f"/2/dm_events/{bad_id}", headers=bearer(SEAN))
    assert response.status == 400
    body = await response.json(content_type=None)
    assert body["type"] == f"{PROBLEMS}invalid-request"
    assert list(body["errors"][0]["parameters"]) == ["id"]


# --- reading one event ------------------------------------------------------------------------------


async def test_default_fields_are_id_type_and_text(client: Any) -> None:
    body = await get_json(client, f"/2/dm_events/{HELLO}")
    assert body == {"data": {"id": HELLO, "event_type": "MessageCreate", "text": "hello, tworld."}}


async def test_requested_fields_come_on_top_of_the_defaults(client: Any) -> None:
    body = await get_json(
        client, "/2/dm_events/1583890000000000001", {"dm_event.fields": "created_at,entities,participant_ids"}
    )
    event = body["data"]
    # participant_ids was asked for, but a one-to-one message has none to give.
    assert set(event) == {"id", "event_type", "text", "created_at", "entities"}
    assert event["entities"]["mentions"][0]["username"] == "theSeanCook"


async def test_control_characters_travel_as_json_escapes(client: Any) -> None:
    response = await client.get("/2/dm_events/1583890000000000002", headers=bearer(SEAN))
    raw = await response.read()
    assert b"\\u0007" in raw
    assert "café ✓".encode() in raw
    assert (await response.json())["data"]["text"].endswith("bell \x07 and café ✓")


async def test_participants_join_event_has_no_text(client: Any) -> None:
    body = await get_json(
        client, "/2/dm_events/1583890000000000006", {"dm_event.fields": "participant_ids"}, token=MICK
    )
    assert body["data"] == {
        "id": "1583890000000000006",
        "event_type": "ParticipantsJoin",
        "participant_ids": [DEV_ID],
    }


async def test_unknown_field_is_a_400_naming_the_parameter(client: Any) -> None:
    params = {"dm_event.fields": "text,bogus", "user.fields": "shoe_size"}
    body = await get_json(client, f"/2/dm_events/{HELLO}", params, status=400)
    assert body["title"] == "Invalid Request"
    assert body["type"] == f"{PROBLEMS}invalid-request"
    assert [error["parameters"] for error in body["errors"]] == [
        {"dm_event.fields": ["bogus"]},
        {"user.fields": ["shoe_size"]},
    ]
    assert "[bogus]" in body["errors"][0]["message"]


async def test_unknown_query_parameter_is_400(client: Any) -> None:
    body = await get_json(client, f"/2/dm_events/{HELLO}", {"count": "5"}, status=400)
    assert body["errors"][0]["parameters"] == {"count": ["5"]}


async def test_sender_expansion_includes_the_user_with_requested_fields(client: Any) -> None:
    body = await get_json(client, f"/2/dm_events/{HELLO}", {"expansions": "sender_id", "user.fields": "created_at"})
    assert body["includes"] == {
        "users": [
            {
                "id": MICK_ID,
                "name": "Mick Jagger",
                "username": "s0c1alm3dia",
                "created_at": "2012-08-23T19:45:07.000Z",
            }
        ]
    }
    assert "sender_id" not in body["data"]
    assert "errors" not in body


async def test_expanding_a_vanished_sender_gives_an_error_and_no_includes(client: Any) -> None:
    body = await get_json(client, f"/2/dm_events/{FROM_VANISHED}", {"expansions": "sender_id"})
    assert body["data"]["text"] == "from a vanished account"
    assert "includes" not in body
    assert body["errors"] == [
        {
            "value": "999999999",
            "detail": "Could not find user with sender_id: [999999999].",
            "title": "Not Found Error",
            "resource_type": "user",
            "parameter": "sender_id",
            "resource_id": "999999999",
            "type": f"{PROBLEMS}resource-not-found",
        }
    ]


# --- listing ----------------------------------------------------------------------------------------


async def test_listing_is_newest_first_and_limited_to_the_callers_conversations(client: Any) -> None:
    body = await get_json(client, "/2/dm_events", {"dm_event.fields": "created_at"}, token=MICK)
    ids = [event["id"] for event in body["data"]]
    assert ids == ["1583890000000000005", "1583890000000000006", "1583890000000000004", SECOND, HELLO]
    assert body["meta"] == {"result_count": 5}


async def test_pagination_walks_every_page_and_back(client: Any) -> None:
    everything = [event["id"] for event in (await get_json(client, "/2/dm_events", token=MICK))["data"]]
    pages: list[list[str]] = []
    metas: list[dict[str, Any]] = []
    params = {"max_results": "2"}
    for _ in range(len(everything)):
        body = await get_json(client, "/2/dm_events", params, token=MICK)
        pages.append([event["id"] for event in body["data"]])
        metas.append(body["meta"])
        if "next_token" not in body["meta"]:
            break
        params["pagination_token"] = body["meta"]["next_token"]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [event_id for page in pages for event_id in page] == everything
    assert [meta["result_count"] for meta in metas] == [2, 2, 1]
    assert ["previous_token" in meta for meta in metas] == [False, True, True]

    params["pagination_token"] = metas[2]["previous_token"]
    back = await get_json(client, "/2/dm_events", params, token=MICK)
    assert [event["id"] for event in back["data"]] == pages[1]


async def test_a_deletion_while_paging_skips_nothing(client: Any) -> None:
    first = await get_json(client, "/2/dm_events", {"max_results": "1"}, token=MICK)
    assert first["data"][0]["id"] == "1583890000000000005"
    await client.delete("/2/dm_events/1583890000000000005", headers=bearer(MICK))
    params = {"max_results": "1", "pagination_token": first["meta"]["next_token"]}
    second = await get_json(client, "/2/dm_events", params, token=MICK)
    assert second["data"][0]["id"] == "1583890000000000006"
    assert "previous_token" not in second["meta"]  # nothing newer is left to go back to


async def test_event_types_filter(client: Any) -> None:
    body = await get_json(client, "/2/dm_events", {"event_types": "ParticipantsJoin"}, token=MICK)
    assert [event["event_type"] for event in body["data"]] == ["ParticipantsJoin"]
    empty = await get_json(client, "/2/dm_events", {"event_types": "ParticipantsLeave"}, token=MICK)
    assert empty == {"meta": {"result_count": 0}}
    await get_json(client, "/2/dm_events", {"event_types": "MessageDelete"}, token=MICK, status=400)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_results", "0"),
        ("max_results", "101"),
        ("max_results", "ten"),
        ("pagination_token", "not-a-token"),
    ],
)
async def test_bad_listing_parameters_are_400(client: Any, name: str, value: str) -> None:
    body = await get_json(client, "/2/dm_events", {name: value}, status=400)
    assert body["errors"][0]["parameters"] == {name: [value]}


async def test_listing_expansions_include_each_user_once(client: Any) -> None:
    body = await get_json(client, "/2/dm_events", {"expansions": "sender_id,participant_ids"})
    user_ids = [user["id"] for user in body["includes"]["users"]]
    assert sorted(user_ids) == sorted({SEAN_ID, MICK_ID, DEV_ID})
    assert [error["resource_id"] for error in body["errors"]] == ["999999999"]


async def test_note_to_self_is_visible_to_its_author(client: Any) -> None:
    body = await get_json(client, "/2/dm_events", {"dm_event.fields": "dm_conversation_id"}, token=MARCOS)
    assert [(event["id"], event["dm_conversation_id"]) for event in body["data"]] == [
        ("39", "1-1"),
        ("38", "1-1"),
    ]


# --- users ------------------------------------------------------------------------------------------


async def test_users_lookup_reports_missing_ids(client: Any) -> None:
    body = await get_json(client, "/2/users", {"ids": f"{SEAN_ID},{MARCOS_ID},424242", "user.fields": "location"})
    assert body["data"] == [
        {"id": SEAN_ID, "name": "Sean Cook", "username": "theSeanCook", "location": "San Francisco"},
        {"id": MARCOS_ID, "name": "marcosgdf", "username": "marcosgdf"},
    ]
    assert body["errors"] == [
        {
            "value": "424242",
            "detail": "Could not find user with ids: [424242].",
            "title": "Not Found Error",
            "resource_type": "user",
            "parameter": "ids",
            "resource_id": "424242",
            "type": f"{PROBLEMS}resource-not-found",
        }
    ]


async def test_users_lookup_with_only_missing_ids_is_200_with_errors(client: Any) -> None:
    body = await get_json(client, "/2/users", {"ids": "424242,999999999"})
    assert set(body) == {"errors"}
    assert len(body["errors"]) == 2


@pytest.mark.parametrize("ids", ["", "abc", ",".join(str(n) for n in range(1, 102))])
async def test_users_lookup_rejects_bad_id_lists(client: Any, ids: str) -> None:
    body = await get_json(client, "/2/users", {"ids": ids}, status=400)
    assert list(body["errors"][0]["parameters"]) == ["ids"]


async def test_me_returns_the_caller(client: Any) -> None:
    body = await get_json(client, "/2/users/me", {"user.fields": "description,public_metrics,url"})
    assert body["data"]["description"].endswith("@Twitter. ")
    assert body["data"]["public_metrics"]["followers_count"] == 10622
    assert body["data"]["url"] == ""
    assert "location" not in body["data"]


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (f"/2/users/{MICK_ID}", MICK_ID),
        ("/2/users/by/username/s0c1alm3dia", MICK_ID),
        ("/2/users/by/username/S0C1ALM3DIA", MICK_ID),  # usernames match in any case
        ("/2/users/by/username/XDevelopers", DEV_ID),
    ],
)
async def test_single_user_lookups(client: Any, path: str, found: str) -> None:
    body = await get_json(client, path, {"user.fields": "public_metrics,receives_your_dm"})
    assert body["data"]["id"] == found
    assert "public_metrics" in body["data"]
    assert "receives_your_dm" not in body["data"]  # said only where the seed says it


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [("/2/users/999999999", "id", "999999999"), ("/2/users/by/username/nobody_at_all", "username", "nobody_at_all")],
)
async def test_single_user_lookup_of_nobody_is_200_with_an_error(
    client: Any, path: str, parameter: str, value: str
) -> None:
    body = await get_json(client, path)
    assert "data" not in body
    assert [(e["parameter"], e["value"], e["resource_type"]) for e in body["errors"]] == [(parameter, value, "user")]


@pytest.mark.parametrize("path", ["/2/users/12x", "/2/users/by/username/has-dash", "/2/users/by/username/" + "a" * 16])
async def test_single_user_lookup_of_a_malformed_name_is_400(client: Any, path: str) -> None:
    await get_json(client, path, status=400)


async def test_a_user_who_takes_no_messages_says_so_and_refuses_them(client: Any, state: EmulatorState) -> None:
    body = await get_json(client, "/2/users/by/username/Support", {"user.fields": "receives_your_dm"})
    assert body["data"]["receives_your_dm"] is False
    before = len(state.events)
    response = await client.post(
        f"/2/dm_conversations/with/{body['data']['id']}/messages", json={"text": "hello?"}, headers=bearer(SEAN)
    )
    assert response.status == 403
    assert len(state.events) == before


# --- routing ----------------------------------------------------------------------------------------


async def test_unknown_path_is_404_problem(client: Any) -> None:
    response = await client.get("/2/tweets", headers=bearer(SEAN))
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_wrong_method_is_405_with_allow(client: Any) -> None:
    response = await client.post("/2/dm_events", headers=bearer(SEAN))
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    assert (await response.json(content_type=None))["status"] == 405


# --- rate limits ------------------------------------------------------------------------------------


async def test_every_answer_carries_rate_limit_headers(client: Any, clock: FakeClock) -> None:
    ok = await client.get("/2/users/me", headers=bearer(SEAN))
    missing = await client.get("/2/dm_events/12345", headers=bearer(SEAN))
    assert (ok.status, missing.status) == (200, 404)
    assert {name: ok.headers[name] for name in RATE_HEADERS} == {
        "x-rate-limit-limit": "900",
        "x-rate-limit-remaining": "899",
        "x-rate-limit-reset": str(int(clock.now) + 900),
    }
    assert {name: missing.headers[name] for name in RATE_HEADERS} == {
        "x-rate-limit-limit": "300",
        "x-rate-limit-remaining": "299",
        "x-rate-limit-reset": str(int(clock.now) + 900),
    }


async def test_quota_runs_out_per_token_and_comes_back(client: Any, state: EmulatorState, clock: FakeClock) -> None:
    state.set_rate_limit("GET /2/users/me", 2, window=60)
    for remaining in ("1", "0"):
        response = await client.get("/2/users/me", headers=bearer(SEAN))
        assert response.headers["x-rate-limit-remaining"] == remaining
    limited = await client.get("/2/users/me", headers=bearer(SEAN))
    assert limited.status == 429
    assert limited.content_type == "application/problem+json"
    assert await limited.json(content_type=None) == {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    }
    assert limited.headers["x-rate-limit-limit"] == "2"
    assert limited.headers["x-rate-limit-remaining"] == "0"
    assert limited.headers["x-rate-limit-reset"] == str(int(clock.now) + 60)

    assert (await client.get("/2/users/me", headers=bearer(MICK))).status == 200
    assert (await client.get("/2/users", headers=bearer(SEAN), params={"ids": SEAN_ID})).status == 200
    clock.now += 60
    assert (await client.get("/2/users/me", headers=bearer(SEAN))).status == 200


async def test_seed_rate_limits_apply(aiohttp_client: Any) -> None:
    seed = default_seed()
    seed["rate_limits"] = {"DELETE /2/dm_events/:id": {"limit": 1, "window": 900}}
    client = await aiohttp_client(create_app(EmulatorState.from_seed(seed)))
    assert (await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))).status == 200
    assert (await client.delete(f"/2/dm_events/{HELLO}", headers=bearer(SEAN))).status == 429


# --- faults -----------------------------------------------------------------------------------------


async def test_status_fault_answers_problem_json_and_can_target_a_method(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", status=503))
    response = await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert (await response.json(content_type=None))["title"] == "Service Unavailable"
    assert not state.is_deleted_for(SECOND, SEAN_ID)
    assert (await client.get(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))).status == 200


async def test_status_fault_with_custom_body_and_headers(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(status=429, body={"title": "Slow down"}, headers={"x-rate-limit-reset": "42"}))
    response = await client.get("/2/users/me")  # faults come before authentication
    assert response.status == 429
    assert response.headers["x-rate-limit-reset"] == "42"
    assert await response.json(content_type=None) == {"title": "Slow down"}


async def test_fault_wears_out_after_times(client: Any, state: EmulatorState) -> None:
    rule = FaultRule(path="/2/users/me", status=500, times=2)
    state.faults.append(rule)
    statuses = [(await client.get("/2/users/me", headers=bearer(SEAN))).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert rule.times == 0


async def test_first_matching_fault_wins(client: Any, state: EmulatorState) -> None:
    state.faults.extend([FaultRule(path="/2/users*", status=502), FaultRule(status=504)])
    assert (await client.get("/2/users/me", headers=bearer(SEAN))).status == 502
    assert (await client.get("/2/dm_events", headers=bearer(SEAN))).status == 504


async def test_delay_fault_makes_a_short_timeout_fire(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(action="delay", delay=0.3, times=1))
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/2/users/me", headers=bearer(SEAN), timeout=aiohttp.ClientTimeout(total=0.05))
    # A patient client gets the normal answer once the delay is over.
    state.faults.append(FaultRule(action="delay", delay=0.05, times=1))
    response = await client.get("/2/users/me", headers=bearer(SEAN), timeout=aiohttp.ClientTimeout(total=2))
    assert response.status == 200


async def test_status_fault_can_be_slow_too(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(status=504, delay=0.05))
    started = asyncio.get_running_loop().time()
    response = await client.get("/2/users/me", headers=bearer(SEAN))
    assert response.status == 504
    assert asyncio.get_running_loop().time() - started >= 0.05


async def test_reset_fault_drops_the_connection_without_an_answer(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(method="DELETE", action="reset"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))
    assert not state.is_deleted_for(SECOND, SEAN_ID)
    # aiohttp retries an idempotent request once after a disconnect, so there may be two attempts.
    assert 1 <= len(state.requests) <= 2
    assert all(recorded.method == "DELETE" for recorded in state.requests)


def test_fault_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        FaultRule(action="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FaultRule(times=-1)
    with pytest.raises(ValueError):
        FaultRule.from_json({"action": "status", "colour": "red"})


# --- recording and control endpoints ----------------------------------------------------------------


async def test_requests_are_recorded_but_control_calls_are_not(client: Any, state: EmulatorState) -> None:
    await client.get("/2/users", headers=bearer(SEAN), params={"ids": MICK_ID})
    await client.get("/_emulator/requests")
    assert state.requests == [
        RecordedRequest(
            method="GET",
            path="/2/users",
            query={"ids": MICK_ID},
            headers={**state.requests[0].headers, "Authorization": f"Bearer {SEAN}"},
        )
    ]
    recorded = await (await client.get("/_emulator/requests")).json()
    assert recorded == [state.requests[0].to_json()]
    assert (await client.delete("/_emulator/requests")).status == 204
    assert state.requests == []


async def test_fault_control_endpoints(client: Any, state: EmulatorState) -> None:
    rules = {"rules": [{"path": "/2/users/me", "status": 502, "times": 1}, {"method": "DELETE", "action": "reset"}]}
    response = await client.post("/_emulator/faults", json=rules)
    assert response.status == 200
    assert [rule["action"] for rule in (await response.json())["rules"]] == ["status", "reset"]
    assert state.faults[0] == FaultRule(path="/2/users/me", status=502, times=1)
    assert (await client.get("/2/users/me", headers=bearer(SEAN))).status == 502
    # Control calls are never faulted, even by a catch-all rule.
    await client.post("/_emulator/faults", json={"rules": [{"status": 500}]})
    assert (await client.get("/_emulator/requests")).status == 200
    assert (await client.delete("/_emulator/faults")).status == 204
    assert (await client.get("/2/users/me", headers=bearer(SEAN))).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"rules": 5}',
        b'{"rules": [{"action": "explode"}]}',
        b'{"rules": [{"delay": "1"}]}',
    ],
)
async def test_bad_fault_bodies_are_400(client: Any, state: EmulatorState, body: bytes) -> None:
    response = await client.post("/_emulator/faults", data=body)
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert state.faults == []


async def test_rate_limit_control_endpoint(client: Any, state: EmulatorState) -> None:
    response = await client.post(
        "/_emulator/rate-limits", json={"endpoint": "DELETE /2/dm_events/:id", "limit": 1, "window": 900}
    )
    assert response.status == 200
    assert state.rate_limit_for("DELETE /2/dm_events/:id").limit == 1
    assert (await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))).status == 200
    assert (await client.delete(f"/2/dm_events/{HELLO}", headers=bearer(SEAN))).status == 429
    for bad in ({"endpoint": "GET /2/tweets", "limit": 1}, {"endpoint": "GET /2/users", "limit": "many"}):
        assert (await client.post("/_emulator/rate-limits", json=bad)).status == 400


async def test_reset_restores_the_seed_and_clears_everything(client: Any, state: EmulatorState) -> None:
    await client.post("/_emulator/rate-limits", json={"endpoint": "GET /2/dm_events/:id", "limit": 1})
    await client.delete(f"/2/dm_events/{SECOND}", headers=bearer(SEAN))
    await client.post("/_emulator/faults", json={"rules": [{"path": "/nowhere"}]})
    state.events.pop(HELLO)

    assert (await client.post("/_emulator/reset")).status == 204
    assert state.faults == [] and state.requests == []
    assert not state.is_deleted_for(SECOND, SEAN_ID)
    assert state.rate_limit_for("GET /2/dm_events/:id").limit == 300
    for event_id in (SECOND, HELLO, SECOND):
        assert (await client.get(f"/2/dm_events/{event_id}", headers=bearer(SEAN))).status == 200


async def test_the_app_holds_its_state_under_state_key(state: EmulatorState) -> None:
    assert create_app(state)[STATE_KEY] is state
    assert len(create_app()[STATE_KEY].events) == len(default_seed()["events"])


# --- a real socket ----------------------------------------------------------------------------------


async def test_emulator_server_listens_on_an_ephemeral_port_until_stopped() -> None:
    async with EmulatorServer() as emulator:
        assert emulator.url.startswith("http://127.0.0.1:") and not emulator.url.endswith(":0")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{emulator.url}/2/users/me", headers=bearer(DEV)) as response,
        ):
            assert (await response.json())["data"]["username"] == "XDevelopers"
        assert len(emulator.state.requests) == 1
        url = emulator.url
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"{url}/2/users/me")


async def test_serve_announces_its_url_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(serve("127.0.0.1", 0))
    for _ in range(200):
        await asyncio.sleep(0.01)
        out = capsys.readouterr().out
        if out:
            break
    assert out.startswith("X API v2 emulator listening on http://127.0.0.1:")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=2)
