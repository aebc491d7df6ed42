"""Twitter v1.1 classic direct messages through the gateway and the emulator: the received and sent lists,
show and new, with golden bodies, classic paging over v2's pages, the historic send errors, learning and
rate-limit headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from gateway.emulator import EmulatorServer, EmulatorState, FaultRule
from tests.conftest import ENTITIES_ID, GROUP_ID, HOSTILE_TEXT_ID, PLAIN_IDS, SEED_002_ID, VANISHED_SENDER_ID, store_of
from tests.golden_files import GOLDEN, assert_golden
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

#: The emulator's fixed time, so a sent message's created_at is the same on every run.
#: The id the emulator gives the first message sent on its seed (the largest seeded id plus one).
FIRST_SENT_ID = "1583890000000000008"

RECEIVED = "/1.1/direct_messages.json"
SENT = "/1.1/direct_messages/sent.json"
SHOW = "/1.1/direct_messages/show.json"
NEW = "/1.1/direct_messages/new.json"
DESTROY = "/1.1/direct_messages/destroy.json"

#: Sean's one-to-one messages in the seed, newest first.
SEED_RECEIVED = [VANISHED_SENDER_ID, PLAIN_IDS[1], ENTITIES_ID, SEED_002_ID]
SEED_SENT = [PLAIN_IDS[0], HOSTILE_TEXT_ID]


async def ids_of(response) -> list[str]:
    body = await response.read()
    assert response.status == 200, body
    return [message["id_str"] for message in orjson.loads(body)]


# Many messages -------------------------------------------------------------------------------------------

BULK_BASE = 1_600_000_000_000_000_000
BULK_START = datetime(2023, 1, 1, tzinfo=UTC)


def bulk_id(i: int) -> str:
    return str(BULK_BASE + i)


def add_messages(state: EmulatorState, n: int, *, alternate: bool) -> None:
    """``n`` one-to-one messages between Mick and Sean, one a minute from 2023, ids rising with time. With
    ``alternate`` the even ones are Mick's (received by Sean) and the odd ones Sean's; else all are Mick's."""
    for i in range(n):
        created = (BULK_START + timedelta(minutes=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sender = SEAN_ID if alternate and i % 2 else MICK_ID
        state.events[bulk_id(i)] = {
            "id": bulk_id(i),
            "event_type": "MessageCreate",
            "text": f"bulk {i}",
            "created_at": created,
            "dm_conversation_id": f"{SEAN_ID}-{MICK_ID}",
            "sender_id": sender,
        }


# Golden bodies -------------------------------------------------------------------------------------------

LIST_BODIES = [
    ("v1_1/received.json", RECEIVED, SEED_RECEIVED),
    ("v1_1/received_count_1_no_entities.json", f"{RECEIVED}?count=1&include_entities=false", SEED_RECEIVED[:1]),
    ("v1_1/sent.json", SENT, SEED_SENT),
]


@pytest.mark.parametrize(("golden", "path", "ids"), LIST_BODIES, ids=[b[0] for b in LIST_BODIES])
async def test_list_matches_golden(gateway, golden, path, ids) -> None:
    response = await gateway.get(path)
    body = await response.read()
    assert response.status == 200, body
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert [m["id_str"] for m in orjson.loads(body)] == ids
    assert_golden(golden, body)


@pytest.mark.parametrize("path", [RECEIVED, SENT, f"/1.1/direct_messages/show.json?id={SEED_002_ID}"])
async def test_head_is_a_get_without_its_body(gateway, path) -> None:
    got = await gateway.get(path)
    body = await got.read()
    head = await gateway.head(path)
    assert head.status == got.status == 200
    assert await head.read() == b""
    assert head.content_type == got.content_type and int(head.headers["Content-Length"]) == len(body)
    assert "x-rate-limit-limit" in head.headers


async def test_head_is_refused_where_get_is(gateway, emulator) -> None:
    path = f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}"
    got, head = await gateway.get(path), await gateway.head(path)
    assert head.status == got.status == 404  # v1.1's wrong-method answer, without its body
    assert await head.read() == b"" and int(head.headers["Content-Length"]) == len(await got.read())
    assert not [r for r in emulator.state.requests if r.method == "DELETE"]


async def test_a_listed_message_is_the_body_its_destroy_answers(gateway) -> None:
    listed = {m["id_str"]: m for m in orjson.loads(await (await gateway.get(f"{RECEIVED}?count=200")).read())}
    listed |= {m["id_str"]: m for m in orjson.loads(await (await gateway.get(f"{SENT}?count=200")).read())}
    for message_id, golden in [(SEED_002_ID, "destroy_seed_002.json"), (ENTITIES_ID, "destroy_entities.json"),
                               (HOSTILE_TEXT_ID, "destroy_hostile_text.json"),
                               (VANISHED_SENDER_ID, "destroy_vanished_sender.json")]:  # fmt: skip
        assert listed[message_id] == orjson.loads((GOLDEN / "v1_1" / golden).read_bytes()), golden


async def test_include_entities_false_drops_only_entities(gateway) -> None:
    full = orjson.loads(await (await gateway.get(f"{RECEIVED}?count=1")).read())
    bare = orjson.loads(await (await gateway.get(f"{RECEIVED}?count=1&include_entities=false")).read())
    assert "entities" in full[0] and "entities" not in bare[0]
    del full[0]["entities"]
    assert bare == full


@pytest.mark.parametrize(("golden", "message_id"), [("v1_1/show_entities.json", ENTITIES_ID),
                                                    ("v1_1/show_hostile_text.json", HOSTILE_TEXT_ID)])  # fmt: skip
async def test_show_matches_golden(gateway, emulator, golden, message_id) -> None:
    response = await gateway.get(f"{SHOW}?id={message_id}")
    body = await response.read()
    assert response.status == 200, body
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert_golden(golden, body)
    # The same message, the same body as its destroy answers.
    assert body == (GOLDEN / golden.replace("show_", "destroy_")).read_bytes()
    assert ("GET", f"/2/dm_events/{message_id}") in calls(emulator)


async def test_show_include_entities_false(gateway) -> None:
    response = await gateway.get(f"{SHOW}?id={ENTITIES_ID}&include_entities=false")
    assert response.status == 200
    assert await response.read() == (GOLDEN / "v1_1/destroy_include_entities_false.json").read_bytes()


async def test_show_hostile_text_is_escaped_json(gateway) -> None:
    body = await (await gateway.get(f"{SHOW}?id={HOSTILE_TEXT_ID}")).read()
    assert b"\\u0007" in body and b"\x07" not in body
    assert b'\\"quotes\\"' in body and "café ✓".encode() in body
    assert orjson.loads(body)["text"] == "Tags <b>&amp; \"quotes\" 'apostrophes' & a bell \u0007 and café ✓"


SEND_BODIES = [
    ("v1_1/new_by_screen_name.json", {"screen_name": "s0c1alm3dia", "text": "hello, tworld."}, MICK_ID),
    (
        "v1_1/new_by_user_id.json",
        {"user_id": XDEV_ID, "text": 'Tags <b>&amp; "quotes" & a bell \u0007 and café ✓'},
        XDEV_ID,
    ),
    ("v1_1/new_by_at_screen_name.json", {"screen_name": "@XDevelopers", "text": "line one\nline two"}, XDEV_ID),
]


@pytest.mark.parametrize(("golden", "form", "recipient"), SEND_BODIES, ids=[b[0] for b in SEND_BODIES])
async def test_new_matches_golden(gateway, emulator, golden, form, recipient) -> None:
    response = await gateway.post(NEW, data=form)
    body = await response.read()
    assert response.status == 200, body
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert_golden(golden, body)
    message = orjson.loads(body)
    assert (message["id_str"], message["text"]) == (FIRST_SENT_ID, form["text"])
    assert (message["sender_id_str"], message["recipient_id_str"]) == (SEAN_ID, recipient)
    assert posts(emulator) == [f"/2/dm_conversations/with/{recipient}/messages"]
    event = emulator.state.events[FIRST_SENT_ID]
    assert (event["text"], event["sender_id"], event["created_at"]) == (
        form["text"],
        SEAN_ID,
        "2023-11-14T22:13:20.000Z",
    )


async def test_new_resolves_a_screen_name_with_one_lookup(gateway, emulator) -> None:
    await gateway.get(RECEIVED)  # the caller's own id is now known
    emulator.state.requests.clear()
    response = await gateway.post(NEW, data={"screen_name": "@S0C1ALM3DIA", "text": "hi"})
    assert response.status == 200
    assert calls(emulator) == [
        ("GET", "/2/users/by/username/S0C1ALM3DIA"),
        ("POST", f"/2/dm_conversations/with/{MICK_ID}/messages"),
        ("GET", f"/2/dm_events/{FIRST_SENT_ID}"),
    ]


async def test_new_takes_exactly_10000_characters(gateway, emulator) -> None:
    text = "é" * 10_000
    response = await gateway.post(NEW, data={"user_id": MICK_ID, "text": text})
    assert response.status == 200
    assert orjson.loads(await response.read())["text"] == text
    assert emulator.state.events[FIRST_SENT_ID]["text"] == text


# Paging --------------------------------------------------------------------------------------------------

RECEIVED_BOUNDS = [
    (f"since_id={SEED_RECEIVED[0]}", []),  # newer than everything: an empty page
    (f"since_id={ENTITIES_ID}", SEED_RECEIVED[:2]),  # since_id is exclusive
    (f"max_id={PLAIN_IDS[1]}", SEED_RECEIVED[1:]),  # max_id is inclusive
    (f"since_id={ENTITIES_ID}&max_id={PLAIN_IDS[1]}", [PLAIN_IDS[1]]),
    (f"since_id={PLAIN_IDS[1]}&max_id={ENTITIES_ID}", []),
    (f"max_id={int(SEED_002_ID) - 1}", []),  # older than everything
    ("count=200", SEED_RECEIVED),  # more than there are: the last page
    ("count=3", SEED_RECEIVED[:3]),
    ("since_id=0&max_id=0", SEED_RECEIVED),  # 0 is no bound, as the classic API read it
    ("since_id=&max_id=", SEED_RECEIVED),
    ("count=0", SEED_RECEIVED),
    ("count=abc", SEED_RECEIVED),
    ("page=2", SEED_RECEIVED),  # direct_messages.json has no page parameter
]


async def test_received_bounds(gateway, emulator) -> None:
    for query, ids in RECEIVED_BOUNDS:
        emulator.state.requests.clear()
        assert await ids_of(await gateway.get(f"{RECEIVED}?{query}")) == ids, query
        assert len(list_requests(emulator)) == 1, query


SENT_PAGES = [
    ("count=1", SEED_SENT[:1]),
    ("count=1&page=2", SEED_SENT[1:]),
    ("count=1&page=3", []),  # past the end: an empty array
    ("page=2", []),
    ("count=2&page=1", SEED_SENT),
    ("page=0", SEED_SENT),
    ("page=abc", SEED_SENT),
    (f"count=1&page=2&max_id={PLAIN_IDS[0]}", SEED_SENT[1:]),
    (f"since_id={HOSTILE_TEXT_ID}", SEED_SENT[:1]),
]


async def test_sent_pages(gateway) -> None:
    for query, ids in SENT_PAGES:
        assert await ids_of(await gateway.get(f"{SENT}?{query}")) == ids, query


async def test_a_page_past_the_end_is_an_empty_array(gateway) -> None:
    response = await gateway.get(f"{SENT}?count=5&page=2")
    assert response.status == 200
    assert await response.read() == b"[]"
    response = await gateway.get(f"{RECEIVED}?since_id={VANISHED_SENDER_ID}")
    assert await response.read() == b"[]"


async def test_an_empty_mailbox_is_an_empty_array(gateway, emulator) -> None:
    for event_id in list(emulator.state.events):
        emulator.state.delete_for(event_id, SEAN_ID)
    for path in (RECEIVED, SENT):
        response = await gateway.get(path)
        assert (response.status, await response.read()) == (200, b"[]"), path


MALFORMED_BOUNDS = [("since_id=abc", "since_id"), ("since_id=-1", "since_id"), ("since_id=1.5", "since_id"),
                    ("max_id=12x", "max_id"), ("max_id=99999999999999999999", "max_id")]  # fmt: skip


async def test_malformed_bounds_are_refused_before_v2(gateway, emulator) -> None:
    for path in (RECEIVED, SENT):
        for query, parameter in MALFORMED_BOUNDS:
            response = await gateway.get(f"{path}?{query}")
            assert response.status == 400, (path, query)
            assert await response.read() == error_body(44, f"{parameter} parameter is invalid."), (path, query)
    assert calls(emulator) == []


COUNTS = [("0", 20), ("abc", 20), ("-5", 20), ("", 20), ("7", 7), ("200", 200), ("201", 200), ("500", 200)]


async def test_count_is_lenient_and_capped_at_200(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=False)
    for count, expected in COUNTS:
        ids = await ids_of(await gateway.get(f"{RECEIVED}?count={count}"))
        assert ids == [bulk_id(i) for i in range(249, 249 - expected, -1)], count


async def test_a_request_the_first_v2_page_fills_reads_one_page(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=True)  # each v2 page of 100: 50 received, 50 sent
    assert len(await ids_of(await gateway.get(f"{RECEIVED}?count=20"))) == 20
    assert [q["max_results"] for q in list_requests(emulator)] == ["100"]
    emulator.state.requests.clear()
    # Filled by the very last event of the first page.
    ids = await ids_of(await gateway.get(f"{RECEIVED}?count=50"))
    assert ids == [bulk_id(i) for i in range(248, 148, -2)]
    assert len(list_requests(emulator)) == 1


async def test_a_request_needing_the_second_v2_page_reads_two(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=True)
    ids = await ids_of(await gateway.get(f"{RECEIVED}?count=51"))
    assert ids == [bulk_id(i) for i in range(248, 146, -2)]
    first, second = list_requests(emulator)
    assert "pagination_token" not in first and second["pagination_token"]
    assert first["max_results"] == second["max_results"] == "100"
    emulator.state.requests.clear()
    # Sent, page 2 of 50: the 51st to 100th of Sean's messages, the last of them on v2's second page.
    ids = await ids_of(await gateway.get(f"{SENT}?count=50&page=2"))
    assert ids == [bulk_id(i) for i in range(149, 49, -2)]
    assert len(list_requests(emulator)) == 2


async def test_since_id_inside_the_first_v2_page_stops_there(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=True)
    ids = await ids_of(await gateway.get(f"{RECEIVED}?count=200&since_id={bulk_id(200)}"))
    assert ids == [bulk_id(i) for i in range(248, 200, -2)]
    assert len(list_requests(emulator)) == 1


async def test_max_id_skips_to_a_later_v2_page(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=True)
    ids = await ids_of(await gateway.get(f"{RECEIVED}?count=10&max_id={bulk_id(100)}"))
    assert ids == [bulk_id(i) for i in range(100, 80, -2)]
    assert len(list_requests(emulator)) == 2


async def test_the_last_page_reads_every_v2_page_once(gateway, emulator) -> None:
    add_messages(emulator.state, 250, alternate=True)
    ids = await ids_of(await gateway.get(f"{RECEIVED}?count=200"))
    assert ids == [bulk_id(i) for i in range(248, -1, -2)] + SEED_RECEIVED
    tokens = [q.get("pagination_token") for q in list_requests(emulator)]
    assert len(tokens) == 3 and tokens[0] is None and len(set(tokens)) == 3


async def test_group_messages_are_not_listed(gateway) -> None:
    for path in (RECEIVED, SENT):
        assert GROUP_ID not in await ids_of(await gateway.get(f"{path}?count=200"))


# Send errors ---------------------------------------------------------------------------------------------

SEND_ERRORS = [
    ("no text", {"user_id": MICK_ID}, 400, 38, "text parameter is missing."),
    ("empty text", {"user_id": MICK_ID, "text": ""}, 400, 38, "text parameter is missing."),
    ("whitespace text", {"user_id": MICK_ID, "text": " \n\t "}, 400, 38, "text parameter is missing."),
    ("10,001 characters", {"user_id": MICK_ID, "text": "x" * 10_001}, 403, 354,
     "The text of your direct message is over the max character limit."),
    ("no recipient", {"text": "hi"}, 400, 38, "user_id parameter is missing."),
    ("empty recipient", {"text": "hi", "user_id": "", "screen_name": ""}, 400, 38, "user_id parameter is missing."),
    ("unknown screen name", {"screen_name": "nobody_here", "text": "hi"}, 404, 108, "Cannot find specified user."),
    ("unknown user id", {"user_id": "123", "text": "hi"}, 404, 108, "Cannot find specified user."),
    ("malformed screen name", {"screen_name": "bad name!", "text": "hi"}, 404, 108, "Cannot find specified user."),
    ("screen name too long", {"screen_name": "a" * 16, "text": "hi"}, 404, 108, "Cannot find specified user."),
    ("bare @", {"screen_name": "@", "text": "hi"}, 404, 108, "Cannot find specified user."),
    ("self by id", {"user_id": SEAN_ID, "text": "hi"}, 403, 151,
     "There was an error sending your message: You cannot send messages to yourself."),
    ("self by screen name", {"screen_name": "@theseancook", "text": "hi"}, 403, 151,
     "There was an error sending your message: You cannot send messages to yourself."),
    ("takes no messages", {"screen_name": "Support", "text": "hi"}, 403, 150,
     "You cannot send messages to users who are not following you."),
    ("takes no messages by id", {"user_id": SUPPORT_ID, "text": "hi"}, 403, 150,
     "You cannot send messages to users who are not following you."),
]  # fmt: skip


async def test_send_errors(gateway, emulator) -> None:
    for name, form, status, code, message in SEND_ERRORS:
        response = await gateway.post(NEW, data=form)
        assert (response.status, response.content_type) == (status, "application/json"), name
        assert await response.read() == error_body(code, message), name
    assert posts(emulator) == []
    assert FIRST_SENT_ID not in emulator.state.events


async def test_refusals_the_gateway_can_judge_reach_no_v2_at_all(gateway, emulator) -> None:
    for form in ({"user_id": MICK_ID, "text": "x" * 10_001}, {"user_id": MICK_ID, "text": "  "},
                 {"screen_name": "bad name!", "text": "hi"}, {"screen_name": "a" * 16, "text": "hi"},
                 {"screen_name": "caf\u00e9", "text": "hi"}):  # fmt: skip
        assert (await gateway.post(NEW, data=form)).status in (400, 403, 404), form
    assert calls(emulator) == []


async def test_show_errors(gateway) -> None:
    missing = await gateway.get(SHOW)
    assert (missing.status, await missing.read()) == (400, error_body(38, "id parameter is missing."))
    unknown = await gateway.get(f"{SHOW}?id=1583890000099999999")
    assert (unknown.status, await unknown.read()) == (404, error_body(34, "Sorry, that page does not exist."))
    group = await gateway.get(f"{SHOW}?id={GROUP_ID}")  # not a legacy DM
    assert (group.status, await group.read()) == (404, error_body(34, "Sorry, that page does not exist."))


# Learning ------------------------------------------------------------------------------------------------

LEARNERS = {
    "received": ("GET", f"{RECEIVED}?count=1&max_id={PLAIN_IDS[1]}", None, PLAIN_IDS[1]),
    "sent": ("GET", f"{SENT}?count=1", None, SEED_SENT[0]),
    "show": ("GET", f"{SHOW}?id={ENTITIES_ID}", None, ENTITIES_ID),
    "new": ("POST", NEW, {"screen_name": "s0c1alm3dia", "text": "learn me"}, FIRST_SENT_ID),
}


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize("learner", list(LEARNERS))
async def test_a_destroy_after_a_read_or_send_needs_no_v2_lookup(
    make_gateway, emulator, tmp_path, store, learner
) -> None:
    url = f"sqlite:///{tmp_path}/learn.sqlite3" if store == "sqlite" else "memory"
    client = await make_gateway(store_url=url)
    method, path, form, message_id = LEARNERS[learner]
    first = await client.request(method, path, data=form)
    first_body = await first.read()
    assert first.status == 200, first_body
    expected = orjson.loads(first_body)
    expected = expected[0] if isinstance(expected, list) else expected
    emulator.state.requests.clear()
    response = await client.post(f"{DESTROY}?id={message_id}")
    body = await response.read()
    assert response.status == 200, body
    # No lookup of the message; whom the caller acts for is asked once, if no earlier call asked it.
    assert [c for c in calls(emulator) if c != ("GET", "/2/users/me")] == [("DELETE", f"/2/dm_events/{message_id}")]
    assert orjson.loads(body) == expected
    assert emulator.state.is_deleted_for(message_id, SEAN_ID)


# A send is never repeated --------------------------------------------------------------------------------


async def test_a_failed_send_is_not_repeated(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="POST", path="/2/dm_conversations/*", status=503))
    response = await gateway.post(NEW, data={"user_id": MICK_ID, "text": "once"})
    assert response.status == 503
    assert await response.read() == error_body(130, "Over capacity")
    assert posts(emulator) == [f"/2/dm_conversations/with/{MICK_ID}/messages"]


async def test_a_send_whose_read_back_fails_still_answers_the_message(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="GET", path="/2/dm_events/*", status=503))
    response = await gateway.post(NEW, data={"screen_name": "s0c1alm3dia", "text": "sent anyway"})
    body = await response.read()
    assert response.status == 200, body
    message = orjson.loads(body)
    assert (message["id_str"], message["text"]) == (FIRST_SENT_ID, "sent anyway")
    assert (message["sender_id_str"], message["sender_screen_name"]) == (SEAN_ID, "theSeanCook")
    assert (message["recipient_id_str"], message["recipient_screen_name"]) == (MICK_ID, "s0c1alm3dia")
    assert message["recipient"]["name"] == "Mick Jagger"
    assert posts(emulator) == [f"/2/dm_conversations/with/{MICK_ID}/messages"]
    assert emulator.state.events[FIRST_SENT_ID]["text"] == "sent anyway"
    # Made from what was sent, not what v2 holds, so it is not kept for a later destroy.
    assert await store_of(gateway).get_message(FIRST_SENT_ID) is None


# Rate limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "form", "limit"),
    [("GET", RECEIVED, None, "300"), ("GET", SENT, None, "300"), ("GET", f"{SHOW}?id={SEED_002_ID}", None, "300"),
     ("POST", NEW, {"user_id": MICK_ID, "text": "hi"}, "1000")],
)  # fmt: skip
async def test_answers_carry_v2_rate_limits(gateway, method, path, form, limit) -> None:
    response = await gateway.request(method, path, data=form)
    assert response.status == 200
    assert response.headers["x-rate-limit-limit"] == limit
    assert int(response.headers["x-rate-limit-remaining"]) < int(limit)
    assert int(response.headers["x-rate-limit-reset"]) > NOW
