"""What old clients trip on, checked as they would meet it: ids a JavaScript client can hold (a Node.js
client through /1 JSON), dates a strict parser (Java's ``HH``) accepts, no null names or avatars, and
JSONP (``callback=NAME``) on the /1 and /api JSON answers, errors included; never on /1.1.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password
from gateway.config import ConfigError, load_config
from gateway.store.factory import open_store
from tests.conftest import (
    ENTITIES_ID,
    PLAIN_IDS,
    SEED_002_ID,
    VANISHED_SENDER_ID,
    _in_ci,
)
from tests.golden_files import assert_golden
from tests.test_auth import auth_config, basic

NODE_CLIENT = Path(__file__).parent / "node" / "client.mjs"
DEFAULT_AVATAR = "https://abs.twimg.com/sticky/default_profile_images/default_profile_normal.png"
JSONP_TYPE = "application/javascript"
SEAN_ID = "38895958"


def upstream(emulator: Any) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


# --- Ids a JavaScript client can hold -----------------------------------------------------------------


async def test_a_node_client_lists_reads_id_str_and_destroys_through_1_json(gateway, emulator) -> None:
    node = shutil.which("node")
    if node is None:
        if _in_ci():
            pytest.fail("node is not installed: CI must install it")
        pytest.skip("node is not installed")
    base = str(gateway.make_url("/1"))
    process = await asyncio.create_subprocess_exec(
        node, str(NODE_CLIENT), base, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    report = orjson.loads(stdout)
    listed = report["listed"]
    assert [message["id_str"] for message in listed] == [VANISHED_SENDER_ID, PLAIN_IDS[1], ENTITIES_ID, SEED_002_ID]
    # What the client would have destroyed by the number: another message, past 2^53.
    assert listed[0]["id_as_number"] != VANISHED_SENDER_ID
    assert listed[0]["sender_user_id_str"] == listed[0]["sender_id_str"]
    assert report["destroyed"] == VANISHED_SENDER_ID
    assert ("DELETE", f"/2/dm_events/{VANISHED_SENDER_ID}") in upstream(emulator)
    assert emulator.state.is_deleted_for(VANISHED_SENDER_ID, SEAN_ID)


# --- Dates a strict parser accepts --------------------------------------------------------------------

#: What Java's DateTimeFormatter "EEE MMM dd HH:mm:ss Z yyyy" (Locale.US) accepts, and no more.
STRICT_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] \+0000 [0-9]{4}"
)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

#: Every route that writes a date as text, in every format it answers.
DATED_CALLS = [
    *[
        (method, f"{prefix}/{path}.{fmt}", form)
        for prefix in ("/1", "/api")
        for fmt in ("json", "xml")
        for method, path, form in (
            ("GET", "direct_messages", None),
            ("GET", "direct_messages/sent", None),
            ("GET", "account/verify_credentials", None),
            ("GET", "users/show/s0c1alm3dia", None),
            ("POST", "direct_messages/new", {"screen_name": "s0c1alm3dia", "text": f"to {prefix} in {fmt}"}),
        )
    ],
    ("POST", f"/1/direct_messages/destroy/{PLAIN_IDS[0]}.json", None),
    ("POST", f"/api/direct_messages/destroy/{PLAIN_IDS[1]}.xml", None),
    ("GET", "/1.1/direct_messages.json", None),
    ("GET", "/1.1/direct_messages/sent.json", None),
    ("GET", f"/1.1/direct_messages/show.json?id={ENTITIES_ID}", None),
    ("GET", "/1.1/account/verify_credentials.json", None),
    ("GET", "/1.1/users/show.json?screen_name=s0c1alm3dia", None),
    ("GET", "/1.1/users/lookup.json?screen_name=s0c1alm3dia,XDevelopers", None),
    ("POST", "/1.1/direct_messages/new.json", {"screen_name": "s0c1alm3dia", "text": "to /1.1"}),
    ("POST", f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}", None),
]


def _dates(body: bytes, content_type: str) -> list[str]:
    if content_type == "application/xml":
        return [element.text or "" for element in ET.fromstring(body).iter("created_at")]
    found: list[str] = []
    pending = [orjson.loads(body)]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            found.extend(text for key, text in value.items() if key == "created_at")
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def _strict_parse(text: str) -> datetime:
    """As a Java client parses it: the whole string, two-digit hour (%H), and the weekday the date has."""
    assert STRICT_DATE.fullmatch(text), text
    parsed = datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")
    assert WEEKDAYS[parsed.weekday()] == text[:3], text
    return parsed


async def test_every_created_at_the_gateway_writes_parses_strictly(gateway, emulator) -> None:
    seen = []
    for method, path, form in DATED_CALLS:
        response = await gateway.request(method, path, data=form)
        body = await response.read()
        assert response.status == 200, (path, body)
        dates = _dates(body, response.content_type)
        assert dates, path  # every one of these calls writes at least one date
        for text in dates:
            _strict_parse(text)
        seen.extend(dates)
    # Hours before ten (the seeded 09:00 messages and the epoch of a user v2 no longer knows) are among them.
    assert "Sun Oct 23 09:00:00 +0000 2022" in seen
    assert "Thu Jan 01 00:00:00 +0000 1970" in seen
    events = await gateway.get("/1.1/direct_messages/events/list.json")
    for event in orjson.loads(await events.read())["events"]:
        assert event["created_timestamp"].isdigit()  # the events API wrote milliseconds, not text


# --- No null names or avatars ------------------------------------------------------------------------


def _users(tree: Any) -> list[dict[str, Any]]:
    if isinstance(tree, list):
        return [user for item in tree for user in _users(item)]
    return [tree["sender"], tree["recipient"]]


@pytest.mark.parametrize("path", ["/1/direct_messages.json", "/1.1/direct_messages.json"])
async def test_a_vanished_sender_has_empty_names_and_the_default_avatar_in_json(gateway, path) -> None:
    messages = orjson.loads(await (await gateway.get(path)).read())
    vanished = next(message for message in messages if message["id_str"] == VANISHED_SENDER_ID)
    assert (vanished["sender_screen_name"], vanished["sender"]["screen_name"], vanished["sender"]["name"]) == (
        "",
        "",
        "",
    )
    assert vanished["sender"]["profile_image_url"] in (DEFAULT_AVATAR, DEFAULT_AVATAR.replace("https:", "http:"))
    for user in _users(messages):
        for key in ("name", "screen_name", "profile_image_url"):
            assert isinstance(user[key], str) and (user[key] or key == "name" or key == "screen_name"), (key, user)


async def test_a_vanished_sender_has_empty_names_and_the_default_avatar_in_xml(gateway) -> None:
    body = await (await gateway.get("/api/direct_messages.xml")).read()
    vanished = next(m for m in ET.fromstring(body) if m.findtext("id") == VANISHED_SENDER_ID)
    assert vanished.findtext("sender/profile_image_url") == DEFAULT_AVATAR
    assert (vanished.findtext("sender_screen_name"), vanished.findtext("sender/name")) == ("", "")


async def test_the_default_avatar_is_configurable(make_gateway) -> None:
    avatar = "https://avatars.example.org/none.png"
    gateway = await make_gateway(render={"default_profile_image_url": avatar})
    statusnet = orjson.loads(await (await gateway.get("/1/direct_messages.json")).read())
    assert statusnet[0]["sender"]["profile_image_url"] == avatar
    classic = orjson.loads(await (await gateway.get("/1.1/direct_messages.json")).read())
    sender = classic[0]["sender"]
    assert (sender["profile_image_url"], sender["profile_image_url_https"]) == (
        avatar.replace("https:", "http:"),
        avatar,
    )
    assert statusnet[1]["sender"]["profile_image_url"] != avatar  # a user with an image keeps it


async def test_vanished_sender_goldens(gateway) -> None:
    for fmt in ("json", "xml"):
        body = await (await gateway.post(f"/1/direct_messages/destroy/{VANISHED_SENDER_ID}.{fmt}")).read()
        assert_golden(f"statusnet/destroy_vanished_sender.{fmt}", body)


# --- JSONP --------------------------------------------------------------------------------------------

VALID_CALLBACKS = ["cb", "$", "_", "jQuery1910_1700000000000", "app.dm.got", "$x.y_1", "a" * 100, "thisOne", "new_"]
INVALID_CALLBACKS = [
    "1cb", "a-b", "alert(1)", "a..b", ".a", "a.", "a b", "<script>", "a;b", "this", "a.function", "null",
    "a" * 101, "café", "a\u2028b", "a/*", "x=1",
]  # fmt: skip


@pytest.mark.parametrize("name", VALID_CALLBACKS)
async def test_a_callback_wraps_a_json_answer(gateway, name) -> None:
    plain = await (await gateway.get("/api/direct_messages.json")).read()
    response = await gateway.get("/api/direct_messages.json", params={"callback": name})
    body = await response.read()
    assert response.status == 200
    assert (response.content_type, response.charset) == (JSONP_TYPE, "utf-8")
    assert body == name.encode() + b"(" + plain + b")"


async def test_jsonp_goldens(gateway) -> None:
    response = await gateway.get("/1/direct_messages/sent.json?callback=got")
    assert_golden("statusnet/jsonp_sent.js", await response.read())
    response = await gateway.post("/1/direct_messages/destroy/1583890000099999999.json?callback=got")
    assert (response.status, response.content_type) == (404, JSONP_TYPE)
    assert_golden("errors/statusnet/jsonp_message_not_found.js", await response.read())
    response = await gateway.get("/api/direct_messages.json?callback=1nvalid")
    assert (response.status, response.content_type) == (400, "application/json")
    assert_golden("errors/statusnet/invalid_callback.json", await response.read())


#: The calls a client makes on start-up, signed in (the user objects) or not (StatusNet's public calls).
STARTUP_CALLS = [
    "account/verify_credentials.json",
    "users/show/s0c1alm3dia.json",
    "users/show.json?screen_name=XDevelopers",
    "statusnet/config.json",
    "help/test.json",
]


@pytest.mark.parametrize("prefix", ["/1", "/api"])
async def test_a_callback_wraps_the_start_up_calls(gateway, prefix) -> None:
    for path in STARTUP_CALLS:
        plain = await (await gateway.get(f"{prefix}/{path}")).read()
        separator = "&" if "?" in path else "?"
        response = await gateway.get(f"{prefix}/{path}{separator}callback=app.onUser")
        body = await response.read()
        assert (response.status, response.content_type) == (200, JSONP_TYPE), path
        assert body == b"app.onUser(" + plain + b")", path
        answer = orjson.loads(body[len(b"app.onUser(") : -1])
        if path.startswith(("users/", "account/")):
            assert answer["id_str"] == str(answer["id"]), path
            _strict_parse(answer["created_at"])
            assert answer["name"] is not None and answer["profile_image_url"], path


async def test_jsonp_verify_credentials_golden(gateway) -> None:
    response = await gateway.get("/1/account/verify_credentials.json?callback=got")
    assert (response.status, response.content_type) == (200, JSONP_TYPE)
    assert_golden("statusnet/jsonp_verify_credentials.js", await response.read())


@pytest.mark.parametrize("name", INVALID_CALLBACKS)
@pytest.mark.parametrize("prefix", ["/1", "/api"])
async def test_a_callback_that_is_no_javascript_name_is_the_400_and_nothing_goes_upstream(
    gateway, emulator, prefix, name
) -> None:
    path = f"{prefix}/direct_messages/destroy/{PLAIN_IDS[0]}.json"
    response = await gateway.post(path, params={"callback": name})
    assert (response.status, response.content_type) == (400, "application/json")
    assert orjson.loads(await response.read()) == {"error": "Invalid value for parameter: callback.", "request": path}
    assert upstream(emulator) == []
    assert not emulator.state.is_deleted_for(PLAIN_IDS[0], SEAN_ID)


async def test_errors_are_wrapped_suppressed_or_not(gateway, emulator) -> None:
    missing = "1583890000099999999"
    response = await gateway.post(f"/1/direct_messages/destroy/{missing}.json?callback=cb&suppress_response_codes=true")
    body = await response.read()
    assert (response.status, response.content_type) == (200, JSONP_TYPE)
    assert body.startswith(b"cb({") and body.endswith(b"})")
    assert orjson.loads(body[3:-1])["error"] == "No direct message with that ID found."
    unknown = await gateway.get("/api/no/such/call.json?callback=cb")
    assert (unknown.status, unknown.content_type) == (404, JSONP_TYPE)
    assert orjson.loads((await unknown.read())[3:-1]) == {
        "error": "API method not found.",
        "request": "/api/no/such/call.json",
    }
    empty = await gateway.post("/api/direct_messages/new.json?callback=cb", data={"screen_name": "s0c1alm3dia"})
    assert (empty.status, empty.content_type) == (406, JSONP_TYPE)


async def test_line_and_paragraph_separators_are_escaped_in_jsonp(gateway) -> None:
    text = "line\u2028paragraph\u2029end"
    response = await gateway.post(
        "/1/direct_messages/new.json?callback=cb", data={"screen_name": "s0c1alm3dia", "text": text}
    )
    body = await response.read()
    assert (response.status, response.content_type) == (200, JSONP_TYPE)
    assert "\u2028".encode() not in body and "\u2029".encode() not in body
    assert b"line\\u2028paragraph\\u2029end" in body
    assert orjson.loads(body[3:-1])["text"] == text


@pytest.mark.parametrize("callback", ["cb", "1nvalid"])
async def test_xml_and_v1_1_ignore_callback(gateway, callback) -> None:
    for path in ("/api/direct_messages.xml", "/1.1/direct_messages.json", "/1.1/direct_messages/events/list.json"):
        plain = await gateway.get(path)
        wrapped = await gateway.get(path, params={"callback": callback})
        assert (wrapped.status, wrapped.content_type) == (200, plain.content_type), path
        assert await wrapped.read() == await plain.read(), path


async def test_jsonp_is_not_answered_for_basic_credentials_a_browser_adds_to_another_sites_call(
    aiohttp_client, emulator, tmp_path
) -> None:
    from gateway.app import create_app

    store = await open_store(f"sqlite:///{tmp_path}/users.sqlite3")
    try:
        await store.put_user(BasicUser("sean", hash_password("pw"), OAuth2Grant("emulator-token-theSeanCook")))
        client = await aiohttp_client(create_app(auth_config(emulator), store=store))
        credentials = basic("sean", "pw")
        cross_site = {**credentials, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "script"}
        refused = await client.get("/api/direct_messages.json?callback=steal", headers=cross_site)
        assert (refused.status, refused.content_type) == (401, "application/json")
        assert orjson.loads(await refused.read())["error"] == "Could not authenticate you."
        assert upstream(emulator) == []
        # The same credentials from the site's own page, or without a callback, are served.
        same_origin = await client.get(
            "/api/direct_messages.json?callback=got", headers={**credentials, "Sec-Fetch-Site": "same-origin"}
        )
        assert (same_origin.status, same_origin.content_type) == (200, JSONP_TYPE)
        plain = await client.get("/api/direct_messages.json", headers=cross_site)
        assert (plain.status, plain.content_type) == (200, "application/json")
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url", ["", "ftp://example.org/a.png", "https://example.org/a.png?size=normal", "https://example.org/a b.png",
            "https://user:pw@example.org/a.png", "https://example.org/\u00e9.png", "/relative.png"],
)  # fmt: skip
def test_a_default_avatar_that_is_no_plain_http_url_stops_start_up(url) -> None:
    with pytest.raises(ConfigError, match=r"^render\.default_profile_image_url"):
        load_config(env={}, overrides={"render": {"default_profile_image_url": url}})


def test_the_default_avatar_defaults_to_twitters() -> None:
    assert load_config(env={}).render.default_profile_image_url == DEFAULT_AVATAR
