"""Twitter v1 / StatusNet lists and sends through the gateway and the emulator, under both prefixes.

Bodies are held byte for byte against tests/golden/statusnet/; the emulator runs on a fixed clock so a
sent message's created_at and the rate-limit reset never change from run to run. Paging is checked
against a seeded inbox of more than one v2 page, counting the v2 list calls the gateway makes.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from xml.dom import minidom

import orjson
import pytest
import xmltodict

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password
from gateway.config import with_overrides
from gateway.emulator import EmulatorServer
from gateway.emulator.seed import default_seed
from gateway.emulator.state import EmulatorState
from gateway.store.factory import open_store
from tests.conftest import (
    ENTITIES_ID,
    HOSTILE_TEXT_ID,
    MARCOS_TOKEN,
    PLAIN_IDS,
    SEED_002_ID,
    SEED_003_JSON_ID,
    SEED_003_XML_ID,
    VANISHED_SENDER_ID,
    gateway_config,
)
from tests.golden_files import GOLDEN, assert_golden, without_message_id_twins

#: The emulator's clock: Tue Nov 14 22:13:20 +0000 2023.
NOW = 1_700_000_000
NOW_LEGACY = "Tue Nov 14 22:13:20 +0000 2023"
PREFIXES = ("/1", "/api")
FORMATS = ("xml", "json")

SEAN_ID = "38895958"
MICK_ID = "776627022"
SUPPORT_ID = "17874544"
NEXT_ID = "1583890000000000008"  # what the emulator gives the first message sent in a test

# Sean's messages in the seed, newest first.
SEAN_RECEIVED = [VANISHED_SENDER_ID, PLAIN_IDS[1], ENTITIES_ID, SEED_002_ID]
SEAN_SENT = [PLAIN_IDS[0], HOSTILE_TEXT_ID]

# Text that XML must escape: markup, an entity, quotes, CR and LF, a tab, C0 controls, "/" and non-ASCII.
ESCAPED_TEXT = "1 < 2 & <b>\"bold\"</b> 'single' &amp;\r\nline\ttab bell\x07 soh\x01 café ✓ a/b"


@pytest.fixture
async def emulator():
    state = EmulatorState.from_seed(default_seed(), clock=lambda: float(NOW))
    async with EmulatorServer(state) as server:
        yield server


def upstream(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def list_calls(emulator) -> list[dict[str, str]]:
    """The queries of the v2 event lists the gateway made."""
    return [r.query for r in emulator.state.requests if (r.method, r.path) == ("GET", "/2/dm_events")]


def xml_array(body: bytes) -> list[ET.Element]:
    """The items of a ``<direct-messages type="array">``, read as an array-typed element is read."""
    root = ET.fromstring(body)
    assert (root.tag, root.attrib) == ("direct-messages", {"type": "array"})
    assert all(child.tag == "direct_message" for child in root)
    return list(root)


def ids_of(body: bytes, fmt: str) -> list[str]:
    if fmt == "xml":
        return [item.findtext("id") for item in xml_array(body)]
    return [str(item["id"]) for item in orjson.loads(body)]


def xml_record(element: ET.Element) -> tuple:
    """An element's tag with its text (a leaf) or its children's records, whatever the indentation."""
    if len(element):
        return element.tag, [xml_record(child) for child in element]
    return element.tag, element.text


def assert_newest_first(ids: list[str]) -> None:
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)


def error_body(fmt: str, message: str, path: str) -> bytes:
    """StatusNet's error: ``{"error": …, "request": …}`` with escaped slashes, or ``<hash>`` in XML."""
    if fmt == "json":
        return orjson.dumps({"error": message, "request": path}).replace(b"/", b"\\/")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<hash>\n <error>{message}</error>\n <request>{path}</request>\n</hash>\n"
    ).encode()


def content_type(fmt: str) -> str:
    return "application/xml" if fmt == "xml" else "application/json"


# --- Golden bodies --------------------------------------------------------------------------------------

LISTS = [
    ("list_received", "direct_messages.{fmt}", SEAN_RECEIVED),
    ("list_sent", "direct_messages/sent.{fmt}", SEAN_SENT),
    ("list_one", "direct_messages.{fmt}?count=1", SEAN_RECEIVED[:1]),
    ("list_empty", f"direct_messages.{{fmt}}?since_id={VANISHED_SENDER_ID}", []),
]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("golden", "path", "expected_ids"), LISTS, ids=[item[0] for item in LISTS])
async def test_lists_match_golden(gateway, emulator, prefix, fmt, golden, path, expected_ids) -> None:
    response = await gateway.get(f"{prefix}/{path.format(fmt=fmt)}")
    body = await response.read()
    assert response.status == 200, body
    assert (response.content_type, response.charset) == (content_type(fmt), "utf-8")
    assert_golden(f"statusnet/{golden}.{fmt}", body)
    assert ids_of(body, fmt) == expected_ids
    assert_newest_first(ids_of(body, fmt))
    assert len(list_calls(emulator)) == 1


async def test_an_empty_xml_list_is_an_empty_array_to_every_parser(gateway) -> None:
    body = await (await gateway.get(f"/api/direct_messages.xml?since_id={VANISHED_SENDER_ID}")).read()
    assert body == b'<?xml version="1.0" encoding="UTF-8"?>\n<direct-messages type="array"/>\n'
    assert xml_array(body) == []
    document = minidom.parseString(body).documentElement
    assert (document.tagName, document.getAttribute("type")) == ("direct-messages", "array")
    assert document.childNodes.length == 0
    assert xmltodict.parse(body) == {"direct-messages": {"@type": "array"}}
    json_body = await (await gateway.get(f"/1/direct_messages.json?since_id={VANISHED_SENDER_ID}")).read()
    assert json_body == b"[]"


def _xml_shape(element: ET.Element) -> list:
    return [(child.tag, _xml_shape(child)) for child in element]


@pytest.mark.parametrize("name", ["list_received", "list_sent", "new", "sent_escaped_text"])
def test_golden_messages_have_the_seed_003_shape(name) -> None:
    """Every message in a list or a send has the keys, order and JSON types of StatusNet's own example."""
    seed = orjson.loads((GOLDEN / "seeds/003_statusnet_destroy.json").read_bytes())
    ours = orjson.loads((GOLDEN / f"statusnet/{name}.json").read_bytes())
    for message in ours if isinstance(ours, list) else [ours]:
        message = without_message_id_twins(message)
        for theirs, mine in [
            (seed, message),
            (seed["sender"], message["sender"]),
            (seed["recipient"], message["recipient"]),
        ]:
            assert list(mine) == list(theirs)
            for key, value in theirs.items():
                if value is not None and mine[key] is not None:
                    assert type(mine[key]) is type(value), (name, key)
    seed_xml = ET.parse(GOLDEN / "seeds/003_statusnet_destroy.xml").getroot()
    ours_xml = ET.parse(GOLDEN / f"statusnet/{name}.xml").getroot()
    for message in xml_array(ET.tostring(ours_xml)) if ours_xml.tag == "direct-messages" else [ours_xml]:
        assert _xml_shape(message) == _xml_shape(seed_xml)


async def test_xml_lists_carry_each_message_in_full(gateway) -> None:
    body = await (await gateway.get("/1/direct_messages.xml")).read()
    [vanished, third, _entities, seed_002] = xml_array(body)
    assert [child.tag for child in third] == [
        "id", "created_at", "text", "sender_id", "recipient_id", "sender_screen_name",
        "recipient_screen_name", "sender", "recipient",
    ]  # fmt: skip
    assert (third.findtext("text"), third.findtext("sender/screen_name")) == ("third message", "s0c1alm3dia")
    assert third.findtext("created_at") == "Sun Oct 23 09:01:00 +0000 2022"
    assert seed_002.findtext("text") == "hello, tworld."
    assert vanished.findtext("sender/created_at") == "Thu Jan 01 00:00:00 +0000 1970"


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("param", ["user", "screen_name"])
async def test_new_matches_golden(gateway, emulator, prefix, fmt, param) -> None:
    response = await gateway.post(f"{prefix}/direct_messages/new.{fmt}", data={param: "s0c1alm3dia", "text": "hi Mick"})
    body = await response.read()
    assert response.status == 200, body
    assert (response.content_type, response.charset) == (content_type(fmt), "utf-8")
    assert_golden(f"statusnet/new.{fmt}", body)
    event = emulator.state.events[NEXT_ID]
    assert (event["sender_id"], event["dm_conversation_id"], event["text"]) == (
        SEAN_ID,
        f"{SEAN_ID}-{MICK_ID}",
        "hi Mick",
    )
    if fmt == "json":
        sent = orjson.loads(body)
        assert (sent["id"], sent["created_at"], sent["recipient_id"]) == (int(NEXT_ID), NOW_LEGACY, MICK_ID)
    else:
        sent = ET.fromstring(body)
        assert (sent.tag, sent.findtext("id"), sent.findtext("created_at")) == ("direct_message", NEXT_ID, NOW_LEGACY)
    posts = [call for call in upstream(emulator) if call[0] == "POST"]
    assert posts == [("POST", f"/2/dm_conversations/with/{MICK_ID}/messages")]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_text_that_needs_escaping_survives_a_send_and_the_sent_list(gateway, emulator, prefix) -> None:
    response = await gateway.post(f"{prefix}/direct_messages/new.xml", data={"user": MICK_ID, "text": ESCAPED_TEXT})
    body = await response.read()
    assert response.status == 200, body
    assert_golden("statusnet/new_escaped_text.xml", body)
    assert emulator.state.events[NEXT_ID]["text"] == ESCAPED_TEXT
    # XML 1.0 cannot carry C0 controls other than tab, LF and CR; CR must be a reference to survive parsing.
    readable = ESCAPED_TEXT.replace("\x07", "").replace("\x01", "")
    assert ET.fromstring(body).findtext("text") == readable
    assert b"&#13;" in body

    xml_list = await (await gateway.get(f"{prefix}/direct_messages/sent.xml?count=1")).read()
    assert_golden("statusnet/sent_escaped_text.xml", xml_list)
    [item] = xml_array(xml_list)
    assert (item.findtext("id"), item.findtext("text")) == (NEXT_ID, readable)
    assert xmltodict.parse(xml_list)["direct-messages"]["direct_message"]["text"] == readable

    json_list = await (await gateway.get(f"{prefix}/direct_messages/sent.json?count=1")).read()
    assert_golden("statusnet/sent_escaped_text.json", json_list)
    [message] = orjson.loads(json_list)
    assert (message["id"], message["text"]) == (int(NEXT_ID), ESCAPED_TEXT)
    assert b"a\\/b" in json_list and b"\\u0001" in json_list and b"\\r\\n" in json_list


async def test_new_json_keeps_the_whole_text(gateway, emulator) -> None:
    response = await gateway.post(
        "/api/direct_messages/new.json", data={"screen_name": "s0c1alm3dia", "text": ESCAPED_TEXT}
    )
    body = await response.read()
    assert response.status == 200, body
    assert_golden("statusnet/new_escaped_text.json", body)
    assert orjson.loads(body)["text"] == ESCAPED_TEXT


async def test_text_of_exactly_10000_characters_is_sent(gateway, emulator) -> None:
    text = "é" * 10_000
    response = await gateway.post("/1/direct_messages/new.json", data={"user": "s0c1alm3dia", "text": text})
    assert response.status == 200, await response.text()
    assert orjson.loads(await response.read())["text"] == text
    assert emulator.state.events[NEXT_ID]["text"] == text


# --- Paging -----------------------------------------------------------------------------------------------

BULK = 250


def seed_inbox(emulator, count: int = BULK) -> list[str]:
    """``count`` messages from Mick to Sean, newer than every seeded one; their ids, newest first."""
    start = datetime(2023, 1, 1, tzinfo=UTC)
    ids = []
    for n in range(count):
        event_id = str(1_600_000_000_000_000_000 + n)
        created = (start + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        emulator.state.events[event_id] = {
            "id": event_id, "event_type": "MessageCreate", "text": f"bulk {n}", "created_at": created,
            "dm_conversation_id": f"{SEAN_ID}-{MICK_ID}", "sender_id": MICK_ID,
        }  # fmt: skip
        ids.append(event_id)
    return ids[::-1]


@pytest.fixture
def inbox(emulator) -> list[str]:
    """Sean's whole inbox, newest first: 254 messages over three v2 pages (257 events with his sent ones)."""
    return seed_inbox(emulator) + SEAN_RECEIVED


async def listed(gateway, path: str) -> list[str]:
    response = await gateway.get(path)
    body = await response.read()
    assert response.status == 200, body
    fmt = "xml" if path.split("?")[0].endswith(".xml") else "json"
    ids = ids_of(body, fmt)
    assert_newest_first(ids)
    return ids


PAGES = [
    # query, slice of the inbox, v2 list calls needed
    ("", slice(0, 20), 1),
    ("?count=5", slice(0, 5), 1),
    ("?count=100", slice(0, 100), 1),
    ("?count=101", slice(0, 101), 2),
    ("?count=200", slice(0, 200), 2),
    ("?count=201", slice(0, 200), 2),
    ("?count=100000", slice(0, 200), 2),
    ("?count=0", slice(0, 20), 1),
    ("?count=-3", slice(0, 20), 1),
    ("?count=many", slice(0, 20), 1),
    ("?page=2", slice(20, 40), 1),
    ("?page=2&count=100", slice(100, 200), 2),
    ("?page=3&count=100", slice(200, 254), 3),
    ("?page=4&count=100", slice(0, 0), 3),
    ("?page=30&count=200", slice(0, 0), 3),
    ("?page=0", slice(0, 20), 1),
    ("?page=x", slice(0, 20), 1),
    ("?since_id={9}", slice(0, 9), 1),
    ("?since_id={0}", slice(0, 0), 1),
    ("?since_id={149}&count=200", slice(0, 149), 2),
    ("?since_id=0", slice(0, 20), 1),
    ("?since_id=", slice(0, 20), 1),
    ("?max_id={10}&count=5", slice(10, 15), 1),
    ("?max_id={120}", slice(120, 140), 2),
    ("?max_id={10}&since_id={13}", slice(10, 13), 1),
    ("?max_id={10}&since_id={13}&page=2&count=2", slice(12, 13), 1),
    ("?max_id=0", slice(0, 20), 1),
    ("?max_id=1", slice(0, 0), 3),
]


@pytest.mark.parametrize(
    ("prefix", "query", "expected", "calls"),
    [(PREFIXES[n % 2], *page) for n, page in enumerate(PAGES)],
    ids=[f"{PREFIXES[n % 2]}{page[0] or ''}" for n, page in enumerate(PAGES)],
)
async def test_inbox_paging(gateway, emulator, inbox, prefix, query, expected, calls) -> None:
    ids = await listed(gateway, f"{prefix}/direct_messages.json{query.format(*inbox)}")
    assert ids == inbox[expected]
    made = list_calls(emulator)
    assert len(made) == calls
    assert all(q["max_results"] == "100" for q in made)
    assert "pagination_token" not in made[0]
    assert all("pagination_token" in q for q in made[1:])


async def test_the_sent_box_reads_on_until_v2_has_no_more(gateway, emulator, inbox) -> None:
    assert await listed(gateway, "/1/direct_messages/sent.xml") == SEAN_SENT
    assert len(list_calls(emulator)) == 3
    emulator.state.requests.clear()
    assert await listed(gateway, f"/api/direct_messages/sent.json?max_id={SEAN_SENT[0]}&count=1") == SEAN_SENT[:1]
    assert len(list_calls(emulator)) == 3
    emulator.state.requests.clear()
    assert await listed(gateway, f"/api/direct_messages/sent.xml?since_id={inbox[99]}") == []
    assert len(list_calls(emulator)) == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_page_past_the_end_is_an_empty_array(gateway, inbox, fmt) -> None:
    last = await (await gateway.get(f"/api/direct_messages.{fmt}?page=13&count=20")).read()
    assert ids_of(last, fmt) == inbox[240:254]
    response = await gateway.get(f"/api/direct_messages.{fmt}?page=14&count=20")
    body = await response.read()
    assert response.status == 200
    assert body == (
        b"[]" if fmt == "json" else b'<?xml version="1.0" encoding="UTF-8"?>\n<direct-messages type="array"/>\n'
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("param", ["since_id", "max_id"])
async def test_a_malformed_bound_is_refused_before_v2(gateway, emulator, fmt, param) -> None:
    for prefix, box in [("/1", "direct_messages"), ("/api", "direct_messages/sent")]:
        path = f"{prefix}/{box}.{fmt}"
        for value in ["abc", "-1", "01", "1.5", " 7 8", "99999999999999999999"]:
            response = await gateway.get(path, params={param: value})
            assert response.status == 400, value
            # "request" is the path without its query string.
            assert await response.read() == error_body(fmt, f"Invalid value for parameter: {param}.", path)
    assert upstream(emulator) == []


# --- Send errors ------------------------------------------------------------------------------------------

NEW_ERRORS = [
    # name, form, status, message, whether v2 is asked anything
    ("no text", {"user": "s0c1alm3dia"}, 406, "No message text!", False),
    ("empty text", {"user": "s0c1alm3dia", "text": ""}, 406, "No message text!", False),
    ("whitespace text", {"user": "s0c1alm3dia", "text": " \t\r\n "}, 406, "No message text!", False),
    ("text too long", {"user": "s0c1alm3dia", "text": "x" * 10_001}, 406,
     "That's too long. Maximum message size is 10000 characters.", False),
    ("empty text, no recipient", {"text": ""}, 406, "No message text!", False),
    ("no recipient", {"text": "hello"}, 403, "Recipient user not found.", False),
    ("empty recipient", {"user": "", "user_id": "", "screen_name": "", "text": "hello"}, 403,
     "Recipient user not found.", False),
    ("not a screen name", {"user": "no such name!", "text": "hello"}, 403, "Recipient user not found.", False),
    ("unknown screen name", {"user": "nobody_here", "text": "hello"}, 403, "Recipient user not found.", True),
    ("unknown screen_name", {"screen_name": "nobody_here", "text": "hello"}, 403, "Recipient user not found.", True),
    ("unknown numeric user", {"user": "12345", "text": "hello"}, 403, "Recipient user not found.", True),
    ("unknown user_id", {"user_id": "12345", "text": "hello"}, 403, "Recipient user not found.", True),
    ("to oneself by name", {"user": "theSeanCook", "text": "hello"}, 403,
     "Do not send a message to yourself; just say it to yourself quietly instead.", True),
    ("to oneself by id", {"user": SEAN_ID, "text": "hello"}, 403,
     "Do not send a message to yourself; just say it to yourself quietly instead.", True),
    ("to oneself by user_id", {"user_id": SEAN_ID, "text": "hello"}, 403,
     "Do not send a message to yourself; just say it to yourself quietly instead.", True),
    ("takes no messages", {"user": "Support", "text": "hello"}, 403,
     "Cannot send direct messages to users who aren't your friend.", True),
    ("takes no messages, by id", {"user_id": SUPPORT_ID, "text": "hello"}, 403,
     "Cannot send direct messages to users who aren't your friend.", True),
]  # fmt: skip


PREFIX_FORMATS = [(prefix, fmt) for prefix in PREFIXES for fmt in FORMATS]


@pytest.mark.parametrize(
    ("form", "status", "message", "asks_v2"), [e[1:] for e in NEW_ERRORS], ids=[e[0] for e in NEW_ERRORS]
)
async def test_send_errors(make_gateway, emulator, form, status, message, asks_v2) -> None:
    for prefix, fmt in PREFIX_FORMATS:
        gateway = await make_gateway()  # a fresh one: none has looked up its caller yet
        emulator.state.requests.clear()
        path = f"{prefix}/direct_messages/new.{fmt}"
        response = await gateway.post(path, data=form)
        assert response.status == status, path
        assert response.content_type == content_type(fmt)
        assert await response.read() == error_body(fmt, message, path)
        calls = upstream(emulator)
        assert not [call for call in calls if call[0] != "GET"], "nothing may be sent"
        assert not [call for call in calls if call[1].startswith("/2/dm_events")]
        assert bool(calls) is asks_v2
    assert len(emulator.state.events) == len(default_seed()["events"])


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "direct_messages/new", "POST"),
        ("DELETE", "direct_messages/new", "POST"),
        ("POST", "direct_messages", "GET"),
        ("POST", "direct_messages/sent", "GET"),
        ("DELETE", "direct_messages/sent", "GET"),
    ],
)
async def test_a_wrong_method_names_the_right_one(gateway, emulator, method, path, allowed) -> None:
    for prefix, fmt in PREFIX_FORMATS:
        full = f"{prefix}/{path}.{fmt}"
        response = await gateway.request(method, full, data={"user": "s0c1alm3dia", "text": "hello"})
        assert response.status == 400, full
        assert response.content_type == content_type(fmt)
        assert await response.read() == error_body(fmt, f"This method requires a {allowed}.", full)
    assert upstream(emulator) == []


@pytest.mark.parametrize(
    ("form", "lookup"),
    [
        ({"user": MICK_ID}, f"/2/users/{MICK_ID}"),
        ({"user": "s0c1alm3dia"}, "/2/users/by/username/s0c1alm3dia"),
        ({"user": "S0C1ALM3DIA"}, "/2/users/by/username/S0C1ALM3DIA"),
        ({"user_id": MICK_ID}, f"/2/users/{MICK_ID}"),
        ({"screen_name": "s0c1alm3dia"}, "/2/users/by/username/s0c1alm3dia"),
        ({"user_id": MICK_ID, "screen_name": "XDevelopers", "user": "XDevelopers"}, f"/2/users/{MICK_ID}"),
        ({"screen_name": "s0c1alm3dia", "user": "XDevelopers"}, "/2/users/by/username/s0c1alm3dia"),
    ],
)
async def test_how_the_recipient_is_named(gateway, emulator, form, lookup) -> None:
    response = await gateway.post("/api/direct_messages/new.json", data={**form, "text": "hello"})
    assert response.status == 200, await response.text()
    body = orjson.loads(await response.read())
    assert (body["recipient_id"], body["recipient_screen_name"]) == (MICK_ID, "s0c1alm3dia")
    assert upstream(emulator) == [
        ("GET", "/2/users/me"),
        ("GET", lookup),
        ("POST", f"/2/dm_conversations/with/{MICK_ID}/messages"),
        ("GET", f"/2/dm_events/{NEXT_ID}"),
    ]


# --- Learning and rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("box", "message_id"), [("direct_messages", ENTITIES_ID), ("direct_messages/sent", HOSTILE_TEXT_ID)]
)
async def test_a_listed_message_is_destroyed_without_a_lookup(gateway, emulator, prefix, fmt, box, message_id) -> None:
    listed_body = await (await gateway.get(f"{prefix}/{box}.{fmt}")).read()
    emulator.state.requests.clear()
    response = await gateway.post(f"{prefix}/direct_messages/destroy/{message_id}.{fmt}")
    body = await response.read()
    assert response.status == 200, body
    assert upstream(emulator) == [("DELETE", f"/2/dm_events/{message_id}")]
    if fmt == "json":
        [item] = [m for m in orjson.loads(listed_body) if str(m["id"]) == message_id]
        assert orjson.loads(body) == item
    else:
        [item] = [m for m in xml_array(listed_body) if m.findtext("id") == message_id]
        assert xml_record(ET.fromstring(body)) == xml_record(item)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("send_fmt", "destroy_fmt"), [("xml", "json"), ("json", "xml")])
async def test_a_sent_message_is_destroyed_without_a_lookup(gateway, emulator, prefix, send_fmt, destroy_fmt) -> None:
    sent = await gateway.post(
        f"{prefix}/direct_messages/new.{send_fmt}", data={"user": "s0c1alm3dia", "text": "hi Mick"}
    )
    assert sent.status == 200
    emulator.state.requests.clear()
    response = await gateway.delete(f"{prefix}/direct_messages/destroy.{destroy_fmt}?id={NEXT_ID}")
    body = await response.read()
    assert response.status == 200, body
    assert upstream(emulator) == [("DELETE", f"/2/dm_events/{NEXT_ID}")]
    assert_golden(f"statusnet/new.{destroy_fmt}", body)  # the same full body the send answered
    assert emulator.state.is_deleted_for(NEXT_ID, SEAN_ID)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_rate_limit_headers(gateway, emulator, inbox, prefix, fmt) -> None:
    first = await gateway.get(f"{prefix}/direct_messages.{fmt}")
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == ("300", "299")
    assert first.headers["X-RateLimit-Reset"] == str(NOW + 900)
    # A list that read three v2 pages reports where the last one left the quota.
    second = await gateway.get(f"{prefix}/direct_messages/sent.{fmt}?count=1&max_id={inbox[150]}")
    assert second.headers["X-RateLimit-Remaining"] == "296"
    assert len(list_calls(emulator)) == 4
    new = await gateway.post(f"{prefix}/direct_messages/new.{fmt}", data={"user": "s0c1alm3dia", "text": "hi"})
    assert new.status == 200
    assert [new.headers[f"X-RateLimit-{name}"] for name in ("Limit", "Remaining", "Reset")] == [
        "1000",
        "999",
        str(NOW + 86_400),
    ]
    assert "x-rate-limit-limit" not in new.headers  # v1.1's names are not StatusNet's


# --- HTTP Basic -------------------------------------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.fixture
async def basic_gateway(aiohttp_client, emulator, tmp_path):
    """A gateway with no sidecar, where marcosgdf signs in with HTTP Basic and a stored v2 grant."""
    store = await open_store(f"sqlite:///{tmp_path}/basic.sqlite3")
    await store.put_user(BasicUser("marcos", hash_password(PASSWORD), OAuth2Grant(MARCOS_TOKEN)))
    config = with_overrides(gateway_config(emulator), upstream={"bearer_token": None}, auth={"sidecar": False})
    yield await aiohttp_client(create_app(config, store=store))
    await store.close()


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_a_basic_client_lists_and_sends(basic_gateway, emulator, prefix) -> None:
    marcos = basic("marcos", PASSWORD)
    inbox = await basic_gateway.get(f"{prefix}/direct_messages.xml", headers=marcos)
    assert inbox.status == 200
    assert ids_of(await inbox.read(), "xml") == [SEED_003_XML_ID, SEED_003_JSON_ID]

    sent = await basic_gateway.post(
        f"{prefix}/direct_messages/new.json", data={"user": "theSeanCook", "text": "hola"}, headers=marcos
    )
    body = orjson.loads(await sent.read())
    assert sent.status == 200, body
    assert (body["sender_screen_name"], body["recipient_id"], body["text"]) == ("marcosgdf", SEAN_ID, "hola")

    listed_sent = await basic_gateway.get(f"{prefix}/direct_messages/sent.json", headers=marcos)
    assert ids_of(await listed_sent.read(), "json") == [NEXT_ID, SEED_003_XML_ID, SEED_003_JSON_ID]
    assert {r.headers["Authorization"] for r in emulator.state.requests} == {f"Bearer {MARCOS_TOKEN}"}

    refused = await basic_gateway.get(f"{prefix}/direct_messages.json", headers=basic("marcos", "wrong"))
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="StatusNet API"'
    anonymous = await basic_gateway.post(f"{prefix}/direct_messages/new.xml", data={"user": "theSeanCook", "text": "x"})
    assert anonymous.status == 401
    assert await anonymous.read() == error_body(
        "xml", "Could not authenticate you.", f"{prefix}/direct_messages/new.xml"
    )
    assert upstream(emulator) == [
        ("GET", "/2/users/me"),
        ("GET", "/2/dm_events"),
        ("GET", "/2/users/by/username/theSeanCook"),
        ("POST", f"/2/dm_conversations/with/{SEAN_ID}/messages"),
        ("GET", f"/2/dm_events/{NEXT_ID}"),
        ("GET", "/2/dm_events"),
    ]  # nothing for the refusals
