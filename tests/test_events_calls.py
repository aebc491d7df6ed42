"""Twitter v1.1 direct message events through the gateway and the emulator: new, list and show, with golden
bodies, cursor paging over v2's pagination tokens, the send errors naming the JSON member at fault, learning
and rate-limit headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from gateway.emulator import EmulatorServer, EmulatorState, FaultRule
from tests.conftest import ENTITIES_ID, GROUP_ID, HOSTILE_TEXT_ID, PLAIN_IDS, SEED_002_ID, VANISHED_SENDER_ID, store_of
from tests.golden_files import assert_golden
from tests.v1_1_calls import NOW, calls, error_body, frozen_emulator, list_requests, posts


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator on its seed, with a clock that never moves."""
    async with frozen_emulator() as server:
        yield server


SEAN_ID = "38895958"
MICK_ID = "776627022"
XDEV_ID = "2244994945"
SUPPORT_ID = "17874544"  # receives_your_dm is false

#: The emulator's fixed time, so a sent message's created_timestamp is the same on every run.
NOW_MILLIS = "1700000000000"
#: The id the emulator gives the first message sent on its seed (the largest seeded id plus one).
FIRST_SENT_ID = "1583890000000000008"

NEW = "/1.1/direct_messages/events/new.json"
LIST = "/1.1/direct_messages/events/list.json"
SHOW = "/1.1/direct_messages/events/show.json"
CLASSIC_DESTROY = "/1.1/direct_messages/destroy.json"

#: The seed's group conversation of Sean, Mick and XDevelopers.
GROUP_CONVERSATION = "1583889999999999999"
#: Sean's one-to-one messages in the seed, sent and received, newest first (v2's order).
SEED_MESSAGES = [VANISHED_SENDER_ID, PLAIN_IDS[1], PLAIN_IDS[0], HOSTILE_TEXT_ID, ENTITIES_ID, SEED_002_ID]


def message_create(recipient_id: object = MICK_ID, text: object = "hello") -> dict:
    return {
        "event": {
            "type": "message_create",
            "message_create": {"target": {"recipient_id": recipient_id}, "message_data": {"text": text}},
        }
    }


async def page(client, query: str = "") -> dict:
    response = await client.get(f"{LIST}?{query}")
    body = await response.read()
    assert response.status == 200, body
    return orjson.loads(body)


def add_messages(state: EmulatorState, n: int) -> list[str]:
    """``n`` one-to-one messages between Sean and Mick (alternating senders) and as many group messages
    between them, one a minute from 2023; the one-to-one ids, newest first."""
    start = datetime(2023, 1, 1, tzinfo=UTC)
    one_to_one = []
    for i in range(2 * n):
        event_id = str(1_600_000_000_000_000_000 + i)
        created = (start + timedelta(minutes=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        group = i % 2 == 1
        state.events[event_id] = {
            "id": event_id,
            "event_type": "MessageCreate",
            "text": f"bulk {i}",
            "created_at": created,
            "dm_conversation_id": GROUP_CONVERSATION if group else f"{SEAN_ID}-{MICK_ID}",
            "sender_id": SEAN_ID if i % 4 == 2 else MICK_ID,
        }
        if not group:
            one_to_one.append(event_id)
    return one_to_one[::-1]


# Golden bodies -------------------------------------------------------------------------------------------


async def test_new_matches_golden(gateway, emulator) -> None:
    text = 'Tags <b>&amp; "quotes" & a bell \u0007, café ✓ and a\nnew line'
    response = await gateway.post(NEW, json=message_create(MICK_ID, text))
    body = await response.read()
    assert response.status == 200, body
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert_golden("v1_1_events/new.json", body)
    event = orjson.loads(body)["event"]
    assert list(event) == ["type", "id", "created_timestamp", "message_create"]
    assert (event["type"], event["id"], event["created_timestamp"]) == ("message_create", FIRST_SENT_ID, NOW_MILLIS)
    create = event["message_create"]
    assert list(create) == ["target", "sender_id", "message_data"]
    assert (create["target"], create["sender_id"]) == ({"recipient_id": MICK_ID}, SEAN_ID)
    assert create["message_data"]["text"] == text
    assert list(create["message_data"]["entities"]) == ["hashtags", "symbols", "user_mentions", "urls"]
    assert posts(emulator) == [f"/2/dm_conversations/with/{MICK_ID}/messages"]
    assert emulator.state.events[FIRST_SENT_ID]["text"] == text


async def test_show_matches_golden(gateway, emulator) -> None:
    for golden, message_id in (("v1_1_events/show_entities.json", ENTITIES_ID),
                               ("v1_1_events/show_hostile_text.json", HOSTILE_TEXT_ID)):  # fmt: skip
        response = await gateway.get(f"{SHOW}?id={message_id}")
        body = await response.read()
        assert response.status == 200, body
        assert response.content_type == "application/json" and response.charset == "utf-8"
        assert_golden(golden, body)
        assert orjson.loads(body)["event"]["id"] == message_id
        assert ("GET", f"/2/dm_events/{message_id}") in calls(emulator)


async def test_show_entities_have_the_events_shape(gateway) -> None:
    event = orjson.loads(await (await gateway.get(f"{SHOW}?id={ENTITIES_ID}")).read())["event"]
    data = event["message_create"]["message_data"]
    entities = data["entities"]
    assert entities["symbols"] == []
    (hashtag,) = entities["hashtags"]
    assert data["text"][slice(*hashtag["indices"])] == "#v2"
    (mention,) = entities["user_mentions"]
    assert (mention["screen_name"], mention["id_str"], mention["id"]) == ("theSeanCook", SEAN_ID, int(SEAN_ID))
    (url,) = entities["urls"]
    assert data["text"][slice(*url["indices"])] == url["url"]
    assert event["created_timestamp"] == "1666461600000"  # 2022-10-22T18:00:00Z
    assert event["message_create"]["target"] == {"recipient_id": SEAN_ID}
    assert event["message_create"]["sender_id"] == XDEV_ID


async def test_list_matches_golden(gateway, emulator) -> None:
    # v2's first page of 3 holds a group message, which is no legacy DM: two events and a cursor.
    first = await gateway.get(f"{LIST}?count=3")
    body = await first.read()
    assert first.status == 200, body
    assert first.content_type == "application/json" and first.charset == "utf-8"
    assert_golden("v1_1_events/list_next_cursor.json", body)
    tree = orjson.loads(body)
    assert list(tree) == ["next_cursor", "events"]
    assert [e["id"] for e in tree["events"]] == [VANISHED_SENDER_ID, PLAIN_IDS[1]]

    last = await gateway.get(f"{LIST}?count=50")
    body = await last.read()
    assert last.status == 200, body
    assert_golden("v1_1_events/list.json", body)
    tree = orjson.loads(body)
    assert list(tree) == ["events"]
    assert [e["id"] for e in tree["events"]] == SEED_MESSAGES


async def test_list_and_show_render_the_same_event(gateway) -> None:
    listed = {e["id"]: e for e in (await page(gateway, "count=50"))["events"]}
    for message_id in SEED_MESSAGES:
        shown = orjson.loads(await (await gateway.get(f"{SHOW}?id={message_id}")).read())
        assert shown == {"event": listed[message_id]}


async def test_an_empty_list_is_an_empty_events_array(gateway, emulator) -> None:
    for event_id in list(emulator.state.events):
        emulator.state.delete_for(event_id, SEAN_ID)
    response = await gateway.get(LIST)
    assert response.status == 200
    assert await response.read() == b'{"events":[]}'


# Paging --------------------------------------------------------------------------------------------------


async def test_count_becomes_max_results_capped_at_50(gateway, emulator) -> None:
    for count, max_results in [("5", "5"), ("1", "1"), ("50", "50"), ("51", "50"), ("500", "50"),
                               ("0", "20"), ("abc", "20"), ("", "20")]:  # fmt: skip
        emulator.state.requests.clear()
        await page(gateway, f"count={count}")
        [query] = list_requests(emulator)
        assert query["max_results"] == max_results, count
        assert "pagination_token" not in query


async def test_the_cursor_is_v2s_pagination_token(gateway, emulator) -> None:
    first = await page(gateway, "count=2")
    assert "pagination_token" not in list_requests(emulator)[0]
    emulator.state.requests.clear()
    await page(gateway, f"count=2&cursor={first['next_cursor']}")
    [query] = list_requests(emulator)
    assert query["pagination_token"] == first["next_cursor"]
    assert query["max_results"] == "2"


async def test_following_next_cursor_visits_every_message_once(gateway, emulator) -> None:
    added = add_messages(emulator.state, 60)
    seen: list[str] = []
    query = "count=7"
    for _ in range(100):
        tree = await page(gateway, query)
        seen += [e["id"] for e in tree["events"]]
        if "next_cursor" not in tree:
            break
        query = f"count=7&cursor={tree['next_cursor']}"
    else:
        pytest.fail("next_cursor never ran out")
    assert seen == added + SEED_MESSAGES
    assert len(set(seen)) == len(seen)
    # 60 one-to-one and 60 group messages and the seed's 7 message events, 7 a page.
    assert len(list_requests(emulator)) == -(-127 // 7)


async def test_a_bad_cursor_is_the_v1_1_error(gateway, emulator) -> None:
    # v2 refuses a token it never handed out.
    response = await gateway.get(f"{LIST}?cursor=bm90LWEtdG9rZW4")
    assert response.status == 400
    assert await response.read() == error_body(44, "cursor parameter is invalid.")
    assert list_requests(emulator)[-1]["pagination_token"] == "bm90LWEtdG9rZW4"
    # What cannot be a token never reaches v2.
    emulator.state.requests.clear()
    for cursor in ("x" * 257, "caf%C3%A9", "%07", "a%0Ab"):
        response = await gateway.get(f"{LIST}?cursor={cursor}")
        assert response.status == 400, cursor
        assert await response.read() == error_body(44, "cursor parameter is invalid."), cursor
    assert calls(emulator) == []


async def test_a_failing_v2_list_is_not_a_bad_cursor(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="GET", path="/2/dm_events", status=503))
    response = await gateway.get(f"{LIST}?count=2")
    assert response.status == 503
    assert await response.read() == error_body(130, "Over capacity")


# Send errors ---------------------------------------------------------------------------------------------

TOO_LONG = "The text of your direct message is over the max character limit."
SEND_ERRORS = [
    ("empty text", message_create(text=""), 400, 38, "text parameter is missing."),
    ("whitespace text", message_create(text=" \n "), 400, 38, "text parameter is missing."),
    ("no text", {"event": {"type": "message_create", "message_create": {
        "target": {"recipient_id": MICK_ID}, "message_data": {}}}}, 400, 38, "text parameter is missing."),
    ("text not a string", message_create(text=12), 400, 44, "event.message_create.message_data.text parameter is invalid."),
    ("10,001 characters", message_create(text="x" * 10_001), 403, 354, TOO_LONG),
    ("unknown recipient", message_create("123"), 404, 108, "Cannot find specified user."),
    ("self", message_create(SEAN_ID), 403, 151,
     "There was an error sending your message: You cannot send messages to yourself."),
    ("takes no messages", message_create(SUPPORT_ID), 403, 349, "You cannot send messages to this user."),
    ("no event", {}, 400, 38, "event parameter is missing."),
    ("event not an object", {"event": "message_create"}, 400, 44, "event parameter is invalid."),
    ("not an object at all", [], 400, 38, "event parameter is missing."),
    ("no type", {"event": {"message_create": {}}}, 400, 38, "event.type parameter is missing."),
    ("another type", {"event": {"type": "reaction_create", "message_create": {}}}, 400, 44,
     "event.type parameter is invalid."),
    ("no message_create", {"event": {"type": "message_create"}}, 400, 38,
     "event.message_create parameter is missing."),
    ("no target", {"event": {"type": "message_create", "message_create": {"message_data": {"text": "hi"}}}}, 400, 38,
     "event.message_create.target parameter is missing."),
    ("no recipient", {"event": {"type": "message_create", "message_create": {
        "target": {}, "message_data": {"text": "hi"}}}}, 400, 38,
     "event.message_create.target.recipient_id parameter is missing."),
    ("recipient not an id", message_create("@s0c1alm3dia"), 400, 44,
     "event.message_create.target.recipient_id parameter is invalid."),
    ("no message_data", {"event": {"type": "message_create", "message_create": {
        "target": {"recipient_id": MICK_ID}}}}, 400, 38, "event.message_create.message_data parameter is missing."),
    ("message_data not an object", {"event": {"type": "message_create", "message_create": {
        "target": {"recipient_id": MICK_ID}, "message_data": "hi"}}}, 400, 44,
     "event.message_create.message_data parameter is invalid."),
]  # fmt: skip


async def test_send_errors(gateway, emulator) -> None:
    for name, document, status, code, message in SEND_ERRORS:
        response = await gateway.post(NEW, json=document)
        assert (response.status, response.content_type) == (status, "application/json"), name
        assert await response.read() == error_body(code, message), name
    assert posts(emulator) == []
    assert FIRST_SENT_ID not in emulator.state.events


async def test_a_body_that_is_not_json_is_a_bad_request(gateway, emulator) -> None:
    for body in (b"event=1", b'{"event": ', b"\xff\xfe"):
        response = await gateway.post(NEW, data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400, body
        assert await response.read() == error_body(214, "Bad request."), body
    response = await gateway.post(NEW)  # no body at all: the event is missing
    assert (response.status, await response.read()) == (400, error_body(38, "event parameter is missing."))
    assert calls(emulator) == []


async def test_refusals_the_gateway_can_judge_reach_no_v2_at_all(gateway, emulator) -> None:
    for document in (message_create(text="x" * 10_001), message_create(text="  "), message_create("x1")):
        assert (await gateway.post(NEW, json=document)).status in (400, 403), document
    assert calls(emulator) == []


async def test_exactly_10000_characters_are_sent(gateway, emulator) -> None:
    text = "é" * 10_000
    response = await gateway.post(NEW, json=message_create(MICK_ID, text))
    assert response.status == 200
    assert orjson.loads(await response.read())["event"]["message_create"]["message_data"]["text"] == text


async def test_show_errors(gateway) -> None:
    missing = await gateway.get(SHOW)
    assert (missing.status, await missing.read()) == (400, error_body(38, "id parameter is missing."))
    for unknown in ("1583890000099999999", GROUP_ID):
        response = await gateway.get(f"{SHOW}?id={unknown}")
        assert (response.status, await response.read()) == (404, error_body(34, "Sorry, that page does not exist."))


# Learning ------------------------------------------------------------------------------------------------

LEARNERS = {
    "list": ("GET", f"{LIST}?count=50", None, SEED_002_ID),
    "show": ("GET", f"{SHOW}?id={ENTITIES_ID}", None, ENTITIES_ID),
    "new": ("POST", NEW, message_create(MICK_ID, "learn me"), FIRST_SENT_ID),
}


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize("learner", list(LEARNERS))
async def test_a_classic_destroy_after_an_events_call_needs_no_v2_lookup(
    make_gateway, emulator, tmp_path, store, learner
) -> None:
    url = f"sqlite:///{tmp_path}/learn.sqlite3" if store == "sqlite" else "memory"
    client = await make_gateway(store_url=url)
    method, path, document, message_id = LEARNERS[learner]
    first = await client.request(method, path, json=document)
    assert first.status == 200, await first.read()
    emulator.state.requests.clear()
    response = await client.post(f"{CLASSIC_DESTROY}?id={message_id}")
    body = await response.read()
    assert response.status == 200, body
    # No lookup of the message; whom the caller acts for is asked once, if no earlier call asked it.
    assert [c for c in calls(emulator) if c != ("GET", "/2/users/me")] == [("DELETE", f"/2/dm_events/{message_id}")]
    message = orjson.loads(body)
    assert message["id_str"] == message_id
    assert message["sender"]["screen_name"] and message["recipient"]["screen_name"]
    assert emulator.state.is_deleted_for(message_id, SEAN_ID)


# A send is never repeated --------------------------------------------------------------------------------


async def test_a_failed_send_is_not_repeated(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="POST", path="/2/dm_conversations/*", status=503))
    response = await gateway.post(NEW, json=message_create(MICK_ID, "once"))
    assert response.status == 503
    assert await response.read() == error_body(130, "Over capacity")
    assert posts(emulator) == [f"/2/dm_conversations/with/{MICK_ID}/messages"]


async def test_a_send_whose_read_back_fails_still_answers_the_event(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="GET", path="/2/dm_events/*", status=503))
    response = await gateway.post(NEW, json=message_create(MICK_ID, "sent anyway"))
    body = await response.read()
    assert response.status == 200, body
    event = orjson.loads(body)["event"]
    assert (event["type"], event["id"]) == ("message_create", FIRST_SENT_ID)
    create = event["message_create"]
    assert (create["target"], create["sender_id"]) == ({"recipient_id": MICK_ID}, SEAN_ID)
    assert create["message_data"]["text"] == "sent anyway"
    assert event["created_timestamp"].isdigit()
    assert posts(emulator) == [f"/2/dm_conversations/with/{MICK_ID}/messages"]
    assert await store_of(gateway).get_message(FIRST_SENT_ID) is None


# Rate limits ---------------------------------------------------------------------------------------------


async def test_answers_carry_v2_rate_limits(gateway) -> None:
    for method, path, document, limit in [("GET", LIST, None, "300"), ("GET", f"{SHOW}?id={SEED_002_ID}", None, "300"),
                                          ("POST", NEW, message_create(), "1000")]:  # fmt: skip
        response = await gateway.request(method, path, json=document)
        assert response.status == 200, path
        assert response.headers["x-rate-limit-limit"] == limit, path
        assert int(response.headers["x-rate-limit-remaining"]) < int(limit), path
        assert int(response.headers["x-rate-limit-reset"]) > NOW, path


async def test_a_failing_users_lookup_does_not_fail_an_events_answer(gateway, emulator) -> None:
    """The events shape names users by id only: when the lookup that would learn a user v2 did not include
    (a vanished sender) fails, the events call still answers."""
    emulator.state.faults.append(FaultRule(status=500, method="GET", path="/2/users"))
    listed = await gateway.get(f"{LIST}?count=50")
    shown = await gateway.get(f"{SHOW}?id={VANISHED_SENDER_ID}")
    assert (listed.status, shown.status) == (200, 200)
    assert orjson.loads(await shown.read())["event"]["message_create"]["sender_id"] == "999999999"
    assert [r for r in emulator.state.requests if r.path == "/2/users"]  # it was tried, and failed
    classic = await gateway.get(f"/1.1/direct_messages/show.json?id={VANISHED_SENDER_ID}")
    assert classic.status == 502  # a classic answer shows the users: there the failure is the caller's
