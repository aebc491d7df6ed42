"""The emulator's OAuth 1.0a sign-in (X's three-legged flow) and ``GET /2/users/by``.

The gateway's own provider endpoints are tested against these, so each refusal here is paired with the
same request succeeding, and every flow ends with the issued token signing a real v2 call.
"""

from __future__ import annotations

import asyncio
import re
import time
import warnings
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
import oauthlib.oauth1
import pytest
from authlib.oauth1 import ClientAuth
from authlib.oauth1.rfc5849 import client_auth

from gateway.emulator import (
    APP_CONSUMER_KEY,
    APP_CONSUMER_SECRET,
    EmulatorServer,
    EmulatorState,
    default_seed,
)
from gateway.emulator.request_tokens import REQUEST_TOKEN_LIFETIME
from tests.emulator_app import SkewedClock  # its fixtures come through tests/conftest.py

SEAN_ID, MICK_ID = "38895958", "776627022"
SECOND = "1583890000000000003"  # Sean -> Mick
CALLBACK = "https://client.example/done?state=abc"
PIN = re.compile(r'<code id="oauth_pin">([0-9]+)</code>')


def signed(
    client: Any,
    method: str,
    path: str,
    *,
    token: str | None = None,
    token_secret: str | None = None,
    consumer: str = APP_CONSUMER_KEY,
    consumer_secret: str = APP_CONSUMER_SECRET,
    body: str = "",
    **options: Any,
) -> dict[str, str]:
    """Headers signing ``method`` on the test server's ``path`` as an OAuth 1.0a client library does."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    auth = ClientAuth(consumer, consumer_secret, token, token_secret, **options)
    _, headers, _ = auth.sign(method, str(client.make_url(path)), headers, body)
    return headers


async def get_request_token(client: Any, callback: str = CALLBACK, **options: Any) -> dict[str, str]:
    headers = signed(client, "POST", "/oauth/request_token", redirect_uri=callback, **options)
    response = await client.post("/oauth/request_token", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/x-www-form-urlencoded"
    return dict(parse_qsl(await response.text(), strict_parsing=True))


async def approve(client: Any, token: str, screen_name: str = "theSeanCook") -> Any:
    form = {"oauth_token": token, "screen_name": screen_name}
    return await client.post("/oauth/authorize", data=form, allow_redirects=False)


async def exchange(client: Any, request: dict[str, str], verifier: str, **options: Any) -> Any:
    headers = signed(
        client,
        "POST",
        "/oauth/access_token",
        token=request["oauth_token"],
        token_secret=request["oauth_token_secret"],
        verifier=verifier,
        **options,
    )
    return await client.post("/oauth/access_token", headers=headers)


async def callback_login(client: Any, screen_name: str = "theSeanCook") -> tuple[dict[str, str], str]:
    """A request token approved through the callback, and the verifier the redirect carried."""
    request = await get_request_token(client)
    approved = await approve(client, request["oauth_token"], screen_name)
    assert approved.status == 302, await approved.text()
    query = parse_qs(urlsplit(approved.headers["Location"]).query)
    return request, query["oauth_verifier"][0]


async def me_as(client: Any, token: str, token_secret: str) -> Any:
    headers = signed(client, "GET", "/2/users/me", token=token, token_secret=token_secret)
    return await client.get("/2/users/me", headers=headers)


# --- the flows ------------------------------------------------------------------------------------------


async def test_callback_flow_issues_a_token_that_acts_as_the_user(client: Any, state: EmulatorState) -> None:
    request = await get_request_token(client)
    assert request["oauth_callback_confirmed"] == "true"
    assert set(request) == {"oauth_token", "oauth_token_secret", "oauth_callback_confirmed"}

    page = await client.get("/oauth/authorize", params={"oauth_token": request["oauth_token"]})
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert "Emulator DM App" in text
    assert '<form method="post" action="/oauth/authorize">' in text
    assert f'name="oauth_token" value="{request["oauth_token"]}"' in text
    assert 'name="screen_name"' in text and 'value="Authorize app"' in text

    approved = await approve(client, request["oauth_token"], "s0c1alm3dia")  # any case of the name would do
    assert approved.status == 302
    location = urlsplit(approved.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "client.example", "/done")
    query = parse_qs(location.query)
    assert query["state"] == ["abc"] and query["oauth_token"] == [request["oauth_token"]]

    response = await exchange(client, request, query["oauth_verifier"][0])
    assert response.status == 200, await response.text()
    assert response.content_type == "application/x-www-form-urlencoded"
    access = dict(parse_qsl(await response.text()))
    assert (access["user_id"], access["screen_name"]) == (MICK_ID, "s0c1alm3dia")
    assert access["oauth_token"].startswith(f"{MICK_ID}-")

    me = await me_as(client, access["oauth_token"], access["oauth_token_secret"])
    assert me.status == 200
    assert (await me.json())["data"]["username"] == "s0c1alm3dia"
    path = f"/2/dm_events/{SECOND}"
    keys = {"token": access["oauth_token"], "token_secret": access["oauth_token_secret"]}
    delete = signed(client, "DELETE", path, **keys)
    assert (await client.delete(path, headers=delete)).status == 200
    assert state.is_deleted_for(SECOND, MICK_ID) and not state.is_deleted_for(SECOND, SEAN_ID)

    paths = [(r.method, r.path) for r in state.requests]
    assert paths[:4] == [
        ("POST", "/oauth/request_token"),
        ("GET", "/oauth/authorize"),
        ("POST", "/oauth/authorize"),
        ("POST", "/oauth/access_token"),
    ]


async def test_authenticate_page_is_the_same_page(client: Any) -> None:
    request = await get_request_token(client)
    page = await client.get("/oauth/authenticate", params={"oauth_token": request["oauth_token"]})
    assert page.status == 200
    assert 'value="Authorize app"' in await page.text()


async def test_oob_flow_shows_a_pin(client: Any) -> None:
    request = await get_request_token(client, "oob")
    approved = await approve(client, request["oauth_token"])
    assert approved.status == 200 and approved.content_type == "text/html"
    pin = PIN.search(await approved.text())
    assert pin is not None
    response = await exchange(client, request, pin.group(1))
    assert response.status == 200, await response.text()
    access = dict(parse_qsl(await response.text()))
    assert (access["user_id"], access["screen_name"]) == (SEAN_ID, "theSeanCook")
    assert (await me_as(client, access["oauth_token"], access["oauth_token_secret"])).status == 200


@pytest.mark.parametrize("place", ["query", "form"])
async def test_verifier_may_come_in_the_query_or_the_form(client: Any, place: str) -> None:
    request, verifier = await callback_login(client)
    # authlib's client will not sign protocol parameters outside the header; oauthlib's (under
    # requests-oauthlib) will, as many legacy clients do.
    signer = oauthlib.oauth1.Client(
        APP_CONSUMER_KEY, APP_CONSUMER_SECRET, request["oauth_token"], request["oauth_token_secret"]
    )
    if place == "query":
        twice = f"/oauth/access_token?oauth_verifier={verifier}&oauth_verifier={verifier}"
        _, headers, _ = signer.sign(str(client.make_url(twice)), "POST")
        assert (await client.post(twice, headers=headers)).status == 401  # and the token is spent
        request, verifier = await callback_login(client)
        signer = oauthlib.oauth1.Client(
            APP_CONSUMER_KEY, APP_CONSUMER_SECRET, request["oauth_token"], request["oauth_token_secret"]
        )
        path = f"/oauth/access_token?oauth_verifier={verifier}"
        _, headers, _ = signer.sign(str(client.make_url(path)), "POST")
        response = await client.post(path, headers=headers)
    else:
        body = f"oauth_verifier={verifier}"
        url = str(client.make_url("/oauth/access_token"))
        _, headers, _ = signer.sign(url, "POST", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = await client.post("/oauth/access_token", headers=headers, data=body)
    assert response.status == 200, await response.text()
    assert dict(parse_qsl(await response.text()))["user_id"] == SEAN_ID


async def test_old_clients_may_ask_with_get(client: Any) -> None:
    headers = signed(client, "GET", "/oauth/request_token", redirect_uri="oob")
    response = await client.get("/oauth/request_token", headers=headers)
    assert response.status == 200, await response.text()
    request = dict(parse_qsl(await response.text()))
    pin = PIN.search(await (await approve(client, request["oauth_token"])).text())
    assert pin is not None
    keys = {"token": request["oauth_token"], "token_secret": request["oauth_token_secret"]}
    as_post = signed(client, "POST", "/oauth/access_token", verifier=pin.group(1), **keys)
    assert (await client.get("/oauth/access_token", headers=as_post)).status == 401  # the method is signed
    request, verifier = await callback_login(client)
    keys = {"token": request["oauth_token"], "token_secret": request["oauth_token_secret"]}
    headers = signed(client, "GET", "/oauth/access_token", verifier=verifier, **keys)
    response = await client.get("/oauth/access_token", headers=headers)
    assert response.status == 200, await response.text()
    assert dict(parse_qsl(await response.text()))["user_id"] == SEAN_ID


async def test_tweepy_3_logs_in_with_a_pin() -> None:
    """tweepy 3.x's ``OAuthHandler`` (requests-oauthlib underneath), pointed at the emulator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tweepy 3 imports imghdr, deprecated in 3.11
        import tweepy
    async with EmulatorServer() as server:

        class Handler(tweepy.OAuthHandler):
            def _get_oauth_url(self, endpoint: str) -> str:
                return f"{server.url}/oauth/{endpoint}"

        handler = Handler(APP_CONSUMER_KEY, APP_CONSUMER_SECRET)
        url = await asyncio.to_thread(handler.get_authorization_url)
        token = parse_qs(urlsplit(url).query)["oauth_token"][0]
        async with aiohttp.ClientSession() as session:
            form = {"oauth_token": token, "screen_name": "marcosgdf"}
            async with session.post(f"{server.url}/oauth/authorize", data=form) as page:
                pin = PIN.search(await page.text())
        assert pin is not None
        key, secret = await asyncio.to_thread(handler.get_access_token, pin.group(1))
        assert server.state.oauth1.tokens[key].user_id == "1"
        assert server.state.oauth1.tokens[key].secret == secret


# --- refusals -------------------------------------------------------------------------------------------


async def test_request_token_refuses_unknown_consumer_and_bad_signature(client: Any, state: EmulatorState) -> None:
    for headers in (
        signed(client, "POST", "/oauth/request_token", consumer="stranger", redirect_uri="oob"),
        signed(client, "POST", "/oauth/request_token", consumer_secret="wrong", redirect_uri="oob"),
        signed(client, "POST", "/oauth/request_token/x", redirect_uri="oob"),  # signed for another URL
        # An access token has no business here: a request token is asked for by the app alone.
        signed(
            client,
            "POST",
            "/oauth/request_token",
            token="1-emulatortoken",
            token_secret="emulator-token-secret-marcos",
            redirect_uri="oob",
        ),
        {},
    ):
        response = await client.post("/oauth/request_token", headers=headers)
        assert response.status == 401
        assert await response.json() == {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
    assert state.logins.pending == {}
    assert len(state.requests) == 5
    await get_request_token(client, "oob")
    assert len(state.logins.pending) == 1


@pytest.mark.parametrize("callback", ["ftp://client.example/", "not a url", "https://" + "a" * 3000, "https:///x"])
async def test_request_token_needs_a_usable_callback(client: Any, callback: str) -> None:
    headers = signed(client, "POST", "/oauth/request_token", redirect_uri=callback)
    response = await client.post("/oauth/request_token", headers=headers)
    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == 417


async def test_request_token_refuses_a_callback_given_twice(client: Any) -> None:
    query = "/oauth/request_token?oauth_callback=oob&oauth_callback=https%3A%2F%2Fclient.example%2F"
    signer = oauthlib.oauth1.Client(APP_CONSUMER_KEY, APP_CONSUMER_SECRET)
    _, headers, _ = signer.sign(str(client.make_url(query)), "POST")
    assert (await client.post(query, headers=headers)).status == 400
    query = "/oauth/request_token?oauth_callback=https%3A%2F%2Fclient.example%2F"
    _, headers, _ = signer.sign(str(client.make_url(query)), "POST")
    assert (await client.post(query, headers=headers)).status == 200


def test_the_exported_app_consumer_is_the_default_seeds() -> None:
    assert default_seed()["oauth1"]["consumers"][APP_CONSUMER_KEY] == APP_CONSUMER_SECRET


async def test_request_token_replayed_nonce_is_refused(client: Any) -> None:
    headers = signed(client, "POST", "/oauth/request_token", redirect_uri="oob")
    assert (await client.post("/oauth/request_token", headers=headers)).status == 200
    assert (await client.post("/oauth/request_token", headers=headers)).status == 401


async def test_request_token_is_single_use(client: Any, state: EmulatorState) -> None:
    request, verifier = await callback_login(client)
    assert (await exchange(client, request, verifier)).status == 200
    again = await exchange(client, request, verifier)
    assert again.status == 401
    assert await again.json() == {"errors": [{"code": 89, "message": "Invalid or expired token."}]}
    page = await client.get("/oauth/authorize", params={"oauth_token": request["oauth_token"]})
    assert page.status == 401


async def test_wrong_verifier_is_refused_and_spends_the_token(client: Any) -> None:
    request, verifier = await callback_login(client)
    wrong = await exchange(client, request, verifier + "x")
    assert wrong.status == 401
    assert (await wrong.json())["errors"][0]["message"] == "Invalid oauth_verifier parameter."
    assert (await exchange(client, request, verifier)).status == 401


async def test_bad_signature_on_access_token_spends_nothing(client: Any) -> None:
    request, verifier = await callback_login(client)
    forged = dict(request, oauth_token_secret="guess")
    assert (await exchange(client, forged, verifier)).status == 401
    keys = {"token": request["oauth_token"], "token_secret": request["oauth_token_secret"]}
    other = signed(client, "POST", "/oauth/access_token", verifier=verifier, consumer="stranger", **keys)
    assert (await client.post("/oauth/access_token", headers=other)).status == 401
    assert (await exchange(client, request, verifier)).status == 200


async def test_unapproved_or_missing_verifier_is_refused(client: Any) -> None:
    request = await get_request_token(client)
    assert (await exchange(client, request, "anything")).status == 401
    request, _ = await callback_login(client)
    keys = {"token": request["oauth_token"], "token_secret": request["oauth_token_secret"]}
    headers = signed(client, "POST", "/oauth/access_token", **keys)
    assert (await client.post("/oauth/access_token", headers=headers)).status == 401


async def test_request_token_expires(client: Any, clock: SkewedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    request = await get_request_token(client)
    clock.offset = REQUEST_TOKEN_LIFETIME + 1
    page = await client.get("/oauth/authorize", params={"oauth_token": request["oauth_token"]})
    assert page.status == 401
    assert (await approve(client, request["oauth_token"])).status == 401
    clock.offset = 0
    request, verifier = await callback_login(client)
    clock.offset = REQUEST_TOKEN_LIFETIME + 1
    # authlib stamps the real time; stay inside the timestamp tolerance by signing in the future too.
    monkeypatch.setattr(client_auth, "generate_timestamp", lambda: str(int(time.time() + clock.offset)))
    late = await exchange(client, request, verifier)
    assert late.status == 401


async def test_authorization_page_refusals(client: Any) -> None:
    assert (await client.get("/oauth/authorize")).status == 400
    unknown = await client.get("/oauth/authorize", params={"oauth_token": "<script>"})
    assert unknown.status == 401 and "<script>" not in await unknown.text()
    request = await get_request_token(client)
    nobody = await approve(client, request["oauth_token"], "no_such_user")
    assert nobody.status == 400
    twice = await client.post("/oauth/authorize", data=[("oauth_token", request["oauth_token"]), ("oauth_token", "x")])
    assert twice.status == 400
    assert (await client.post("/oauth/authorize", json={"oauth_token": request["oauth_token"]})).status == 400
    # None of that spent the token.
    assert (await approve(client, request["oauth_token"])).status == 302


async def test_page_escapes_what_it_echoes(client: Any, state: EmulatorState) -> None:
    state.oauth1.app_names["emulator-consumer"] = "<b>App</b>"
    request = await get_request_token(client)
    page = await client.get(
        "/oauth/authorize", params={"oauth_token": request["oauth_token"], "screen_name": '"><script>'}
    )
    text = await page.text()
    assert "<b>" not in text and "<script>" not in text
    assert "&lt;b&gt;App&lt;/b&gt;" in text


async def test_cancel_redirects_with_denied(client: Any) -> None:
    request = await get_request_token(client)
    form = {"oauth_token": request["oauth_token"], "cancel": "Cancel"}
    response = await client.post("/oauth/authorize", data=form, allow_redirects=False)
    assert response.status == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["denied"] == [request["oauth_token"]]
    assert (await approve(client, request["oauth_token"])).status == 401


async def test_reset_forgets_sign_ins_and_issued_tokens(client: Any, state: EmulatorState) -> None:
    request, verifier = await callback_login(client)
    access = dict(parse_qsl(await (await exchange(client, request, verifier)).text()))
    pending = await get_request_token(client)
    state.reset()
    assert (await me_as(client, access["oauth_token"], access["oauth_token_secret"])).status == 401
    assert (await approve(client, pending["oauth_token"])).status == 401


# --- invalidation ---------------------------------------------------------------------------------------


async def test_invalidate_token_forgets_the_token(client: Any, state: EmulatorState) -> None:
    request, verifier = await callback_login(client)
    access = dict(parse_qsl(await (await exchange(client, request, verifier)).text()))
    keys = {"token": access["oauth_token"], "token_secret": access["oauth_token_secret"]}
    assert (await me_as(client, **keys)).status == 200

    path = "/1.1/oauth/invalidate_token"
    forged = signed(client, "POST", path, token=access["oauth_token"], token_secret="guess")
    refused = await client.post(path, headers=forged)
    assert refused.status == 401
    assert await refused.json() == {"errors": [{"code": 89, "message": "Invalid or expired token."}]}
    assert (await me_as(client, **keys)).status == 200

    response = await client.post(path, headers=signed(client, "POST", path, **keys))
    assert response.status == 200
    assert await response.json() == {"access_token": access["oauth_token"]}
    assert access["oauth_token"] not in state.oauth1.tokens
    assert (await me_as(client, **keys)).status == 401
    assert (await client.post(path, headers=signed(client, "POST", path, **keys))).status == 401
    assert [r.path for r in state.requests].count(path) == 3


async def test_invalidate_token_works_on_seeded_tokens_too(client: Any, state: EmulatorState) -> None:
    path = "/1.1/oauth/invalidate_token"
    keys = {"token": "1-emulatortoken", "token_secret": "emulator-token-secret-marcos"}
    assert (await client.post(path, headers=signed(client, "POST", path, **keys))).status == 200
    assert (await me_as(client, **keys)).status == 401
    state.reset()
    assert (await me_as(client, **keys)).status == 200


# --- GET /2/users/by ------------------------------------------------------------------------------------


def bearer() -> dict[str, str]:
    return {"Authorization": "Bearer emulator-token-theSeanCook"}


async def test_users_by_usernames_in_the_order_asked(client: Any, state: EmulatorState) -> None:
    query = {"usernames": "S0C1ALM3DIA,theSeanCook", "user.fields": "location"}
    response = await client.get("/2/users/by", params=query, headers=bearer())
    assert response.status == 200, await response.text()
    body = await response.json()
    found = [(u["id"], u["username"]) for u in body["data"]]
    assert found == [(MICK_ID, "s0c1alm3dia"), (SEAN_ID, "theSeanCook")]
    assert body["data"][0]["location"] == "San Francisco, CA"
    assert "errors" not in body
    assert "x-rate-limit-limit" in response.headers
    assert state.requests[-1].query == query


async def test_users_by_reports_unknown_names_as_errors(client: Any) -> None:
    query = {"usernames": "nobody_here,marcosgdf"}
    response = await client.get("/2/users/by", params=query, headers=bearer())
    assert response.status == 200
    body = await response.json()
    assert [u["username"] for u in body["data"]] == ["marcosgdf"]
    assert body["errors"] == [
        {
            "value": "nobody_here",
            "detail": "Could not find user with usernames: [nobody_here].",
            "title": "Not Found Error",
            "resource_type": "user",
            "parameter": "usernames",
            "resource_id": "nobody_here",
            "type": "https://api.twitter.com/2/problems/resource-not-found",
        }
    ]
    only_unknown = await (await client.get("/2/users/by?usernames=ghost", headers=bearer())).json()
    assert "data" not in only_unknown and only_unknown["errors"][0]["value"] == "ghost"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "usernames"),
        ("usernames=", "usernames"),
        ("usernames=bad-name", "usernames"),
        ("usernames=" + ",".join(f"u{i}" for i in range(101)), "usernames"),
        ("usernames=a&user.fields=password", "user.fields"),
        ("usernames=a&ids=1", "ids"),
    ],
)
async def test_users_by_refuses_bad_queries(client: Any, query: str, parameter: str) -> None:
    response = await client.get(f"/2/users/by?{query}", headers=bearer())
    assert response.status == 400
    body = await response.json()
    assert body["title"] == "Invalid Request"
    assert parameter in body["errors"][0]["parameters"]


async def test_users_by_needs_a_caller_and_takes_an_oauth1_one(client: Any) -> None:
    path = "/2/users/by?usernames=marcosgdf"
    assert (await client.get(path)).status == 401
    request, verifier = await callback_login(client)
    access = dict(parse_qsl(await (await exchange(client, request, verifier)).text()))
    keys = {"token": access["oauth_token"], "token_secret": access["oauth_token_secret"]}
    response = await client.get(path, headers=signed(client, "GET", path, **keys))
    assert response.status == 200
    assert (await response.json())["data"][0]["id"] == "1"
