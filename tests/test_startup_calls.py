"""The calls a legacy client makes as it starts, through the gateway and the emulator, in every dialect.

Who am I (``account/verify_credentials``), users by id and by name (``users/show``, ``users/lookup``), and
what the service is (``help/test``, ``help/configuration``, ``statusnet/config``, ``statusnet/version``,
``application/rate_limit_status``). Bodies are held byte for byte against tests/golden/; each test checks
what went upstream and what the store learned. The emulator's clock is fixed far ahead, so the quotas it
reports are still current for the gateway, and every reset it names is the same from run to run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import orjson
import pytest

from gateway.emulator import EmulatorServer
from gateway.emulator.seed import default_seed
from gateway.emulator.state import EmulatorState
from gateway.model import RateLimit
from gateway.upstream.quotas import V2_LIMITS, Quotas
from tests.conftest import MARCOS_TOKEN, MICK_TOKEN, store_of
from tests.golden_files import assert_golden

#: The emulator's clock: Sun Oct 02 07:06:40 +0000 2096, so that every quota it reports is current.
NOW = 4_000_000_000
WINDOW_END = NOW + 900

SEAN_ID = "38895958"
MICK_ID = "776627022"
MARCOS_ID = "1"
XDEV_ID = "2244994945"
UNKNOWN_ID = "999999999"

PREFIXES = ("/1", "/api")
FORMATS = ("xml", "json")
MICK = {"Authorization": f"Bearer {MICK_TOKEN}"}
MARCOS = {"Authorization": f"Bearer {MARCOS_TOKEN}"}


@pytest.fixture
async def emulator():
    state = EmulatorState.from_seed(default_seed(), clock=lambda: float(NOW))
    async with EmulatorServer(state) as server:
        yield server


def upstream(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def content_type(fmt: str) -> str:
    return "application/xml" if fmt == "xml" else "application/json"


async def get(gateway: Any, path: str, *, status: int = 200, fmt: str = "json", **kwargs: Any) -> bytes:
    response = await gateway.get(path, **kwargs)
    body = await response.read()
    assert response.status == status, body
    assert (response.content_type, response.charset) == (content_type(fmt), "utf-8")
    return body


async def learned(gateway: Any, *user_ids: str) -> dict[str, str | None]:
    """The screen names the store holds for these users."""
    users = await store_of(gateway).get_users(user_ids)
    return {user_id: user.username for user_id, user in users.items()}


# --- Who am I ----------------------------------------------------------------------------------------------


async def test_v1_1_verify_credentials_is_v2_users_me(gateway, emulator) -> None:
    body = await get(gateway, "/1.1/account/verify_credentials.json?skip_status=true&include_email=true")
    assert_golden("v1_1/verify_credentials.json", body)
    user = orjson.loads(body)
    assert (user["id_str"], user["screen_name"], user["followers_count"]) == (SEAN_ID, "theSeanCook", 10622)
    [call] = emulator.state.requests
    assert (call.method, call.path) == ("GET", "/2/users/me")
    assert set(call.query["user.fields"].split(",")) >= {"created_at", "public_metrics", "profile_image_url"}
    assert await learned(gateway, SEAN_ID) == {SEAN_ID: "theSeanCook"}


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_statusnet_verify_credentials_is_v2_users_me(gateway, emulator, prefix, fmt) -> None:
    body = await get(gateway, f"{prefix}/account/verify_credentials.{fmt}", fmt=fmt, headers=MARCOS)
    assert_golden(f"statusnet/verify_credentials.{fmt}", body)
    if fmt == "xml":
        root = ET.fromstring(body)
        assert (root.tag, root.findtext("id"), root.findtext("screen_name")) == ("user", MARCOS_ID, "marcosgdf")
    else:
        assert orjson.loads(body)["screen_name"] == "marcosgdf"
    assert upstream(emulator) == [("GET", "/2/users/me")]
    assert await learned(gateway, MARCOS_ID) == {MARCOS_ID: "marcosgdf"}


async def test_verify_credentials_answers_the_quota_v2_reported(gateway, emulator) -> None:
    response = await gateway.get("/1.1/account/verify_credentials.json")
    assert response.status == 200
    assert response.headers["x-rate-limit-limit"] == "900"
    assert response.headers["x-rate-limit-remaining"] == "899"
    assert response.headers["x-rate-limit-reset"] == str(WINDOW_END)


# --- Users -------------------------------------------------------------------------------------------------

V1_1_SHOW = [
    ("users_show_by_id", f"user_id={MICK_ID}", f"/2/users/{MICK_ID}"),
    ("users_show_by_screen_name", "screen_name=@S0C1ALM3DIA", "/2/users/by/username/S0C1ALM3DIA"),
    ("users_show_by_id", f"user_id={MICK_ID}&screen_name=XDevelopers", f"/2/users/{MICK_ID}"),
]


@pytest.mark.parametrize(("golden", "query", "v2_path"), V1_1_SHOW)
async def test_v1_1_users_show(gateway, emulator, golden, query, v2_path) -> None:
    body = await get(gateway, f"/1.1/users/show.json?{query}")
    assert_golden(f"v1_1/{golden}.json", body)
    assert orjson.loads(body)["screen_name"] == "s0c1alm3dia"
    assert upstream(emulator) == [("GET", v2_path)]
    assert await learned(gateway, MICK_ID) == {MICK_ID: "s0c1alm3dia"}


STATUSNET_SHOW = [
    ("users/show/{id}.{fmt}", XDEV_ID, f"/2/users/{XDEV_ID}"),
    ("users/show/xdevelopers.{fmt}", None, "/2/users/by/username/xdevelopers"),
    ("users/show.{fmt}?id=XDevelopers", None, "/2/users/by/username/XDevelopers"),
    ("users/show.{fmt}?user_id={id}", XDEV_ID, f"/2/users/{XDEV_ID}"),
    ("users/show.{fmt}?screen_name=XDevelopers", None, "/2/users/by/username/XDevelopers"),
]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("path", "user_id", "v2_path"), STATUSNET_SHOW)
async def test_statusnet_users_show(gateway, emulator, prefix, fmt, path, user_id, v2_path) -> None:
    body = await get(gateway, f"{prefix}/{path.format(fmt=fmt, id=user_id)}", fmt=fmt)
    assert_golden(f"statusnet/users_show.{fmt}", body)
    assert upstream(emulator) == [("GET", v2_path)]
    assert await learned(gateway, XDEV_ID) == {XDEV_ID: "XDevelopers"}


async def test_v1_1_unknown_user_is_404_code_50(gateway, emulator) -> None:
    body = await get(gateway, f"/1.1/users/show.json?user_id={UNKNOWN_ID}", status=404)
    assert_golden("errors/twitter_v1/user_not_found.json", body)
    assert upstream(emulator) == [("GET", f"/2/users/{UNKNOWN_ID}")]
    body = await get(gateway, "/1.1/users/show.json?screen_name=nobody_here", status=404)
    assert_golden("errors/twitter_v1/user_not_found.json", body)
    assert await learned(gateway, UNKNOWN_ID) == {}


@pytest.mark.parametrize("fmt", FORMATS)
async def test_statusnet_unknown_user_is_its_404(gateway, emulator, fmt) -> None:
    path = f"/api/users/show/{UNKNOWN_ID}.{fmt}"
    body = await get(gateway, path, status=404, fmt=fmt)
    assert_golden(f"statusnet/users_show_not_found.{fmt}", body)
    assert upstream(emulator) == [("GET", f"/2/users/{UNKNOWN_ID}")]


async def test_v1_1_users_lookup_by_ids(gateway, emulator) -> None:
    query = f"user_id={XDEV_ID},{MICK_ID},{UNKNOWN_ID}&user_id={MICK_ID}&include_entities=false"
    body = await get(gateway, f"/1.1/users/lookup.json?{query}")
    assert_golden("v1_1/users_lookup.json", body)
    assert [user["id_str"] for user in orjson.loads(body)] == [XDEV_ID, MICK_ID]
    [call] = emulator.state.requests
    assert (call.path, call.query["ids"]) == ("/2/users", f"{XDEV_ID},{MICK_ID},{UNKNOWN_ID}")
    assert await learned(gateway, XDEV_ID, MICK_ID) == {XDEV_ID: "XDevelopers", MICK_ID: "s0c1alm3dia"}


async def test_v1_1_users_lookup_by_ids_and_names(gateway, emulator) -> None:
    query = f"user_id={XDEV_ID}&screen_name=@S0C1ALM3DIA,xdevelopers,s0c1alm3dia,nobody_here"
    body = await get(gateway, f"/1.1/users/lookup.json?{query}")
    assert [user["screen_name"] for user in orjson.loads(body)] == ["XDevelopers", "s0c1alm3dia"]
    by_id, by_name = emulator.state.requests
    assert (by_id.path, by_id.query["ids"]) == ("/2/users", XDEV_ID)
    assert (by_name.path, by_name.query["usernames"]) == ("/2/users/by", "S0C1ALM3DIA,xdevelopers,nobody_here")
    assert await learned(gateway, XDEV_ID, MICK_ID) == {XDEV_ID: "XDevelopers", MICK_ID: "s0c1alm3dia"}


async def test_v1_1_users_lookup_by_names_only(gateway, emulator) -> None:
    body = await get(gateway, "/1.1/users/lookup.json?screen_name=marcosgdf,theSeanCook")
    assert_golden("v1_1/users_lookup_by_names.json", body)
    assert [user["id_str"] for user in orjson.loads(body)] == [MARCOS_ID, SEAN_ID]
    assert upstream(emulator) == [("GET", "/2/users/by")]


async def test_v1_1_users_lookup_by_post_form(gateway, emulator) -> None:
    response = await gateway.post("/1.1/users/lookup.json", data={"user_id": f"{MICK_ID}, {XDEV_ID}"})
    body = await response.read()
    assert response.status == 200, body
    assert [user["id_str"] for user in orjson.loads(body)] == [MICK_ID, XDEV_ID]
    assert upstream(emulator) == [("GET", "/2/users")]


async def test_v1_1_users_lookup_of_nobody_known_is_404_code_17(gateway, emulator) -> None:
    body = await get(gateway, f"/1.1/users/lookup.json?user_id={UNKNOWN_ID}", status=404)
    assert_golden("errors/twitter_v1/no_user_matches.json", body)
    assert upstream(emulator) == [("GET", "/2/users")]


# --- The service itself ----------------------------------------------------------------------------------


async def test_v1_1_help_configuration(gateway, emulator) -> None:
    body = await get(gateway, "/1.1/help/configuration.json")
    assert_golden("v1_1/help_configuration.json", body)
    configuration = orjson.loads(body)
    assert configuration["dm_text_character_limit"] == 10_000
    assert (configuration["short_url_length"], configuration["short_url_length_https"]) == (23, 23)
    assert set(configuration["photo_sizes"]) == {"thumb", "small", "medium", "large"}
    assert upstream(emulator) == []


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("call", ["help/test", "statusnet/version"])
async def test_statusnet_test_and_version(gateway, emulator, prefix, fmt, call) -> None:
    body = await get(gateway, f"{prefix}/{call}.{fmt}", fmt=fmt)
    assert_golden(f"statusnet/{call.replace('/', '_')}.{fmt}", body)
    assert upstream(emulator) == []


@pytest.fixture
async def public_gateway(make_gateway):
    """A gateway that is no sidecar, so any Host reaches it; callers bring their own bearer token."""
    return await make_gateway(upstream={"bearer_token": None}, auth={"sidecar": False})


@pytest.mark.parametrize("call", ["help/test", "statusnet/config", "statusnet/version"])
async def test_statusnet_answers_about_itself_to_anyone(public_gateway, emulator, call) -> None:
    """As StatusNet did: a client asks these before it logs in. No credentials are read, even wrong ones."""
    for headers in ({}, {"Authorization": "Basic bm9ib2R5Ondyb25n"}):
        response = await public_gateway.get(f"/api/{call}.json", headers=headers)
        assert response.status == 200, await response.text()
    assert upstream(emulator) == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_statusnet_config(public_gateway, emulator, fmt) -> None:
    headers = {**MICK, "Host": "social.example:8443"}
    body = await get(public_gateway, f"/api/statusnet/config.{fmt}", fmt=fmt, headers=headers)
    assert_golden(f"statusnet/config.{fmt}", body)
    if fmt == "xml":
        site = ET.fromstring(body).find("site")
        assert (site.findtext("server"), site.findtext("path"), site.findtext("textlimit")) == (
            "social.example:8443",
            "",
            "10000",
        )
    else:
        site = orjson.loads(body)["site"]
        assert (site["server"], site["path"], site["textlimit"]) == ("social.example:8443", "", 10_000)
    assert upstream(emulator) == []


async def test_statusnet_config_names_no_host_a_client_could_not_have_named(public_gateway) -> None:
    for host in ("<b>evil</b>", "a b", "x" * 300, "h\u00e9.example"):
        body = await get(public_gateway, "/1/statusnet/config.json", headers={**MICK, "Host": host})
        site = orjson.loads(body)["site"]
        assert (site["server"], site["sslserver"]) == ("", "")


# --- Quotas ------------------------------------------------------------------------------------------------


async def test_rate_limit_status_is_what_v2_last_reported_to_the_caller(gateway, emulator) -> None:
    # Sean reads his inbox, a message, himself, a user and a list of users: v2 reports each quota.
    for path in (
        "/1.1/direct_messages.json",
        "/1.1/direct_messages/show.json?id=240251665733795841",
        "/1.1/account/verify_credentials.json",
        f"/1.1/users/show.json?user_id={MICK_ID}",
        f"/1.1/users/lookup.json?user_id={MICK_ID}",
    ):
        assert (await gateway.get(path)).status == 200, path
    calls = len(emulator.state.requests)
    body = await get(gateway, "/1.1/application/rate_limit_status.json")
    assert len(emulator.state.requests) == calls  # no v2 call of its own
    assert_golden("v1_1/rate_limit_status.json", body)
    status = orjson.loads(body)
    assert status["rate_limit_context"] == {"access_token": "sidecar"}
    messages = status["resources"]["direct_messages"]
    assert messages["/direct_messages"] == {"limit": 300, "remaining": 299, "reset": WINDOW_END}
    assert messages["/direct_messages/show"]["remaining"] == 299
    # /2/users/me twice: the inbox asked who Sean is, then verify_credentials.
    assert status["resources"]["account"]["/account/verify_credentials"]["remaining"] == 898

    # Another caller has used none of it: the whole of v2's limit, for a window that starts now.
    path = "/1.1/application/rate_limit_status.json?resources=direct_messages"
    other = orjson.loads(await get(gateway, path, headers=MICK))
    assert list(other["resources"]) == ["direct_messages"]
    quota = other["resources"]["direct_messages"]["/direct_messages"]
    assert (quota["limit"], quota["remaining"]) == (300, 300)
    assert quota["reset"] < NOW  # the gateway's clock, not the emulator's far-off one


async def test_rate_limit_status_shows_an_exhausted_quota(gateway, emulator) -> None:
    """A refusal's headers count too: after v2's 429 the caller is told none is left, until the reset."""
    emulator.state.set_rate_limit("GET /2/users/me", 1)
    assert (await gateway.get("/1.1/account/verify_credentials.json")).status == 200
    response = await gateway.get("/1.1/account/verify_credentials.json?suppress_response_codes=false")
    assert response.status == 429
    assert orjson.loads(await response.read())["errors"][0]["code"] == 88
    body = await get(gateway, "/1.1/application/rate_limit_status.json?resources=account")
    quota = orjson.loads(body)["resources"]["account"]["/account/verify_credentials"]
    assert quota == {"limit": 1, "remaining": 0, "reset": WINDOW_END}


async def test_rate_limit_status_resources_filter(gateway, emulator) -> None:
    body = await get(gateway, "/1.1/application/rate_limit_status.json?resources=users,statuses,,account")
    assert list(orjson.loads(body)["resources"]) == ["account", "users"]
    body = await get(gateway, "/1.1/application/rate_limit_status.json?resources=statuses")
    assert orjson.loads(body)["resources"] == {}
    assert upstream(emulator) == []


def test_quotas_are_bounded_and_reset_once_their_window_is_over() -> None:
    quotas = Quotas(size=2)
    quotas.record("a", "GET /2/dm_events", RateLimit(300, 10, 1_000))
    quotas.record("b", "GET /2/dm_events", RateLimit(300, 20, 1_000))
    quotas.record("c", "GET /2/dm_events", RateLimit(300, 30, 1_000))
    assert len(quotas) == 2
    assert quotas.current("a", "GET /2/dm_events", 500) == RateLimit(300, 300, 1_400)  # forgotten: full
    assert quotas.current("c", "GET /2/dm_events", 500) == RateLimit(300, 30, 1_000)
    assert quotas.current("c", "GET /2/dm_events", 1_000) == RateLimit(300, 300, 1_900)  # reset has come
    assert V2_LIMITS["GET /2/users/me"] == (900, 900)
    assert quotas.current("x", "GET /2/users/me", 0) == RateLimit(900, 900, 900)


# --- Hostile input: refused before anything goes upstream -------------------------------------------------

REFUSED = [
    ("/1.1/users/show.json?user_id=12a", 400, 44, "user_id parameter is invalid."),
    ("/1.1/users/show.json?user_id=99999999999999999999", 400, 44, "user_id parameter is invalid."),
    ("/1.1/users/show.json?screen_name=../../2/dm_events", 404, 50, "User not found."),
    ("/1.1/users/show.json?screen_name=this_name_is_far_too_long", 404, 50, "User not found."),
    ("/1.1/users/show.json", 404, 50, "User not found."),
    ("/1.1/users/lookup.json", 404, 17, "No user matches for specified terms."),
    ("/1.1/users/lookup.json?screen_name=%2F..%2F,a%26b", 404, 17, "No user matches for specified terms."),
    ("/1.1/users/lookup.json?user_id=1,%2Fx", 400, 44, "user_id parameter is invalid."),
    (
        "/1.1/users/lookup.json?user_id=" + ",".join(str(n) for n in range(1, 102)),
        400,
        44,
        "user_id parameter is invalid.",
    ),
    (
        "/1.1/users/lookup.json?user_id=" + ",".join(str(n) for n in range(1, 51))
        + "&screen_name=" + ",".join(f"n{n}" for n in range(51)),
        400,
        44,
        "screen_name parameter is invalid.",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("path", "status", "code", "message"), REFUSED, ids=[r[0][:60] for r in REFUSED])
async def test_v1_1_refusals_reach_nothing_upstream(gateway, emulator, path, status, code, message) -> None:
    body = await get(gateway, path, status=status)
    assert orjson.loads(body) == {"errors": [{"code": code, "message": message}]}
    assert upstream(emulator) == []
    assert await store_of(gateway).get_users([MICK_ID, SEAN_ID]) == {}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "path",
    [
        "users/show/99999999999999999999.{fmt}",
        "users/show/%3Cscript%3E.{fmt}",
        "users/show.{fmt}",
        "users/show.{fmt}?screen_name=a%20b",
    ],
)
async def test_statusnet_refusals_reach_nothing_upstream(gateway, emulator, fmt, path) -> None:
    full = f"/api/{path.format(fmt=fmt)}"
    body = await get(gateway, full, status=404, fmt=fmt)
    if fmt == "json":
        assert orjson.loads(body)["error"] == "Not found."
    else:
        assert ET.fromstring(body).findtext("error") == "Not found."
    assert upstream(emulator) == []


@pytest.mark.parametrize("path", ["/1.1/statuses/home_timeline.json", "/1.1/statuses/update.json"])
async def test_everything_else_is_still_not_there(gateway, emulator, path) -> None:
    body = await get(gateway, path, status=404)
    assert orjson.loads(body) == {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}
    body = await get(gateway, "/api/statuses/friends_timeline.xml", status=404, fmt="xml")
    assert ET.fromstring(body).findtext("error") == "API method not found."
    assert upstream(emulator) == []


async def test_start_up_calls_need_credentials(make_gateway, emulator) -> None:
    gateway = await make_gateway(upstream={"bearer_token": None}, auth={"sidecar": False})
    body = await get(gateway, "/1.1/account/verify_credentials.json", status=401)
    assert orjson.loads(body)["errors"][0]["code"] == 32
    body = await get(gateway, "/api/account/verify_credentials.xml", status=401, fmt="xml")
    assert ET.fromstring(body).findtext("error") == "Could not authenticate you."
    assert upstream(emulator) == []
