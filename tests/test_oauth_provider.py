"""The gateway as OAuth 1.0a provider: legacy clients log in through it, for a consumer that is a live X app
and for one that acts through the operator's app, by PIN, by callback and by xAuth; tokens are invalidated;
and every refusal is the dialect's 401 with nothing sent upstream.

Each login here ends with the token it produced signing a real DM call, and the emulator's log says what
reached X (and that a legacy consumer's key never did).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import pytest
from authlib.oauth1 import ClientAuth
from cryptography.fernet import Fernet

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, RequestToken, Token, hash_password
from gateway.config import ConfigError, StoreConfig, load_config, with_overrides
from gateway.emulator import APP_CONSUMER_KEY, APP_CONSUMER_SECRET
from gateway.keys import STORE_KEY
from gateway.store.factory import open_store
from gateway.store.sqlite.schema import MIGRATIONS
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, gateway_config, opened_store
from tests.test_auth import rfc5849_header
from tests.test_credentials_cli import MARK, one_line, read_back, run
from tests.test_hostile_auth import raw_request

FORM = "application/x-www-form-urlencoded"
LIVE = Consumer(APP_CONSUMER_KEY, APP_CONSUMER_SECRET)
LEGACY = Consumer("legacy-client-key-1997", "legacy-client-secret", via_upstream_app=True)
CALLBACK = "https://client.example/done?state=abc"
PIN = re.compile(r'<code id="oauth_pin">([0-9]+)</code>')
SEAN_ID = "38895958"
PASSWORD = "correct horse battery staple"
EVENTS = "/1.1/direct_messages/events/destroy.json"


def provider_config(emulator: Any, **auth: Any):
    config = gateway_config(
        emulator, upstream={"oauth1_consumer_key": APP_CONSUMER_KEY, "oauth1_consumer_secret": APP_CONSUMER_SECRET}
    )
    return with_overrides(config, upstream={"bearer_token": None}, auth={"sidecar": False, **auth})


@pytest.fixture
async def store(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path}/provider.sqlite3")
    await store.put_consumer(LIVE)
    await store.put_consumer(LEGACY)
    await store.put_user(BasicUser("sean", hash_password(PASSWORD), OAuth2Grant(SEAN_TOKEN)))
    yield store
    await store.close()


@pytest.fixture
async def gateway(aiohttp_client, emulator, store):
    return await aiohttp_client(create_app(provider_config(emulator), store=store))


async def call(
    client: Any,
    method: str,
    path: str,
    consumer: Consumer,
    *,
    token: str | None = None,
    secret: str | None = None,
    form: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    where: str = "HEADER",
    **options: Any,
):
    """A request signed as an OAuth 1.0a client library signs it."""
    auth = ClientAuth(consumer.key, consumer.secret, token, secret, signature_type=where, **options)
    url = str(client.make_url(path)) + ("?" + urlencode(query) if query else "")
    headers = {"Content-Type": FORM} if form is not None else {}
    uri, headers, body = auth.sign(method, url, headers, urlencode(form) if form else "")
    return await client.session.request(method, uri, headers=headers, data=body or None, allow_redirects=False)


async def verifier_apart(
    client: Any, consumer: Consumer, token: str, secret: str, *, form: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
):  # fmt: skip
    """An access-token call with oauth_verifier in the body or the query and the rest in the header, as some
    clients send it (signed by hand: authlib's client will not sign such a request)."""
    oauth = {
        "oauth_consumer_key": consumer.key,
        "oauth_token": token,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": f"verifier-apart-{time.monotonic_ns()}",
        "oauth_version": "1.0",
    }
    url = str(client.make_url("/oauth/access_token"))
    extra = list((form or query or {}).items())
    headers = {"Authorization": rfc5849_header("POST", url, extra, oauth, (consumer.secret, secret))}
    if form is not None:
        headers["Content-Type"] = FORM
        return await client.post("/oauth/access_token", data=urlencode(extra), headers=headers)
    return await client.post("/oauth/access_token", params=extra, headers=headers)


def answer_of(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, strict_parsing=True))


def upstream(emulator: Any) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def legacy_key_reached_x(emulator: Any) -> bool:
    return any(LEGACY.key in f"{r.path}{r.query}{r.headers}" for r in emulator.state.requests)


async def approve_at_x(client: Any, gateway: Any, token: str, *, page: str = "authorize") -> Any:
    """The browser: the gateway's authorize page sends it to X's, where Sean signs in and approves."""
    response = await gateway.get(f"/oauth/{page}", params={"oauth_token": token}, allow_redirects=False)
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    x_token = dict(parse_qsl(location.query))["oauth_token"]
    x_page = await client.get(response.headers["Location"], allow_redirects=False)
    assert x_page.status == 200 and "Authorize Emulator DM App" in await x_page.text()
    approve = location._replace(path="/oauth/authorize", query="").geturl()
    return await client.post(
        approve, data={"oauth_token": x_token, "screen_name": "theSeanCook"}, allow_redirects=False
    )


async def destroy(gateway: Any, consumer: Consumer, token: str, secret: str, message_id: str):
    return await call(gateway, "DELETE", EVENTS, consumer, token=token, secret=secret, query={"id": message_id})


# --- a live X app ---------------------------------------------------------------------------------------


async def test_live_app_pin_login_then_a_dm_call_just_works(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LIVE, redirect_uri="oob")
    assert response.status == 200, await response.text()
    assert response.content_type == FORM
    request = answer_of(await response.text())
    assert request["oauth_callback_confirmed"] == "true"
    assert await store.get_request_token(request["oauth_token"]) is not None

    # The browser goes straight to X's page for X's own token.
    response = await gateway.get(
        "/oauth/authorize", params={"oauth_token": request["oauth_token"]}, allow_redirects=False
    )
    assert response.status == 302
    assert response.headers["Location"] == f"{emulator.url}/oauth/authorize?oauth_token={request['oauth_token']}"
    page = await approve_at_x(gateway.session, gateway, request["oauth_token"])
    pin = PIN.search(await page.text()).group(1)

    response = await call(
        gateway, "POST", "/oauth/access_token", LIVE, token=request["oauth_token"], secret=request["oauth_token_secret"],
        verifier=pin,
    )  # fmt: skip
    assert response.status == 200, await response.text()
    access = answer_of(await response.text())
    assert access["user_id"] == SEAN_ID and access["screen_name"] == "theSeanCook"
    assert access["oauth_token"] in emulator.state.oauth1.tokens  # X's own token, learned as X answered it
    assert await store.get_token(access["oauth_token"]) == Token(
        access["oauth_token"], LIVE.key, access["oauth_token_secret"]
    )
    assert await store.get_request_token(request["oauth_token"]) is None  # spent

    response = await destroy(gateway, LIVE, access["oauth_token"], access["oauth_token_secret"], PLAIN_IDS[0])
    assert response.status == 204
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], SEAN_ID)
    logins = [r for r in emulator.state.requests if r.path.startswith("/oauth/") and r.method == "POST"]
    assert [r.path for r in logins] == ["/oauth/request_token", "/oauth/authorize", "/oauth/access_token"]
    assert f'oauth_consumer_key="{LIVE.key}"' in logins[0].headers["Authorization"]
    assert 'oauth_callback="oob"' in logins[0].headers["Authorization"]


async def test_statusnet_prefix_serves_the_login_too(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/api/oauth/request_token", LIVE, redirect_uri="oob")
    assert response.status == 200
    request = answer_of(await response.text())
    response = await gateway.get(
        "/api/oauth/authorize", params={"oauth_token": request["oauth_token"]}, allow_redirects=False
    )
    assert response.status == 302 and response.headers["Location"].startswith(f"{emulator.url}/oauth/authorize?")
    # A request token that does not exist, on the StatusNet path: StatusNet's own 401.
    response = await call(gateway, "POST", "/api/oauth/access_token", LIVE, token="nope", secret="x", verifier="1")
    assert response.status == 401
    assert await response.json() == {"error": "Could not authenticate you.", "request": "/api/oauth/access_token"}


# --- a consumer X does not know, through the operator's app ---------------------------------------------


async def test_upstream_app_callback_login_redirect_by_redirect(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri=CALLBACK)
    assert response.status == 200, await response.text()
    request = answer_of(await response.text())
    assert set(request) == {"oauth_token", "oauth_token_secret", "oauth_callback_confirmed"}
    pending = await store.get_request_token(request["oauth_token"])
    assert pending.upstream_token is not None and pending.upstream_token != request["oauth_token"]
    assert pending.callback == CALLBACK

    # X redirects to the gateway's own callback, which sends the browser on to the client's.
    x_answer = await approve_at_x(gateway.session, gateway, request["oauth_token"])
    assert x_answer.status == 302
    to_gateway = urlsplit(x_answer.headers["Location"])
    assert to_gateway.path == "/oauth/callback" and str(gateway.make_url("")).startswith(
        f"{to_gateway.scheme}://{to_gateway.netloc}"
    )
    x_verifier = dict(parse_qsl(to_gateway.query))["oauth_verifier"]
    response = await gateway.session.get(x_answer.headers["Location"], allow_redirects=False)
    assert response.status == 302
    back = urlsplit(response.headers["Location"])
    assert back._replace(query="").geturl() == "https://client.example/done"
    params = dict(parse_qsl(back.query))
    assert params["state"] == "abc" and params["oauth_token"] == request["oauth_token"]
    assert params["oauth_verifier"] != x_verifier  # the gateway's own verifier, not X's

    # oauth_verifier in the form body, the rest in the header.
    verifier = {"oauth_verifier": params["oauth_verifier"]}
    response = await verifier_apart(
        gateway, LEGACY, request["oauth_token"], request["oauth_token_secret"], form=verifier
    )
    assert response.status == 200, await response.text()
    access = answer_of(await response.text())
    assert access["user_id"] == SEAN_ID and access["screen_name"] == "theSeanCook"
    assert access["oauth_token"].startswith(f"{SEAN_ID}-")
    assert access["oauth_token"] not in emulator.state.oauth1.tokens  # the gateway's token, not X's
    stored = await store.get_token(access["oauth_token"])
    assert stored.consumer_key == LEGACY.key and stored.upstream_token in emulator.state.oauth1.tokens

    response = await destroy(gateway, LEGACY, access["oauth_token"], access["oauth_token_secret"], PLAIN_IDS[0])
    assert response.status == 204
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], SEAN_ID)
    delete = next(r for r in emulator.state.requests if r.method == "DELETE")
    assert f'oauth_consumer_key="{APP_CONSUMER_KEY}"' in delete.headers["Authorization"]
    assert not legacy_key_reached_x(emulator)


async def test_upstream_app_pin_login_with_the_verifier_in_the_query(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri="oob")
    request = answer_of(await response.text())
    page = await approve_at_x(gateway.session, gateway, request["oauth_token"], page="authenticate")
    pin = PIN.search(await page.text()).group(1)  # the PIN X shows is what the client sends back
    verifier = {"oauth_verifier": pin}
    response = await verifier_apart(
        gateway, LEGACY, request["oauth_token"], request["oauth_token_secret"], query=verifier
    )
    assert response.status == 200, await response.text()
    access = answer_of(await response.text())
    response = await destroy(gateway, LEGACY, access["oauth_token"], access["oauth_token_secret"], PLAIN_IDS[1])
    assert response.status == 204
    assert not legacy_key_reached_x(emulator)


# --- xAuth ----------------------------------------------------------------------------------------------


async def test_xauth_logs_a_basic_user_in_and_acts_with_their_grant(gateway, emulator, store) -> None:
    form = {"x_auth_mode": "client_auth", "x_auth_username": "sean", "x_auth_password": PASSWORD}
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, form=form)
    assert response.status == 200, await response.text()
    access = answer_of(await response.text())
    assert access["user_id"] == SEAN_ID and access["screen_name"] == "theSeanCook"
    assert access["x_auth_expires"] == "0"
    assert (await store.get_token(access["oauth_token"])).upstream_user == "sean"
    response = await destroy(gateway, LEGACY, access["oauth_token"], access["oauth_token_secret"], PLAIN_IDS[0])
    assert response.status == 204
    delete = next(r for r in emulator.state.requests if r.method == "DELETE")
    assert delete.headers["Authorization"] == f"Bearer {SEAN_TOKEN}"
    assert not legacy_key_reached_x(emulator)


async def test_xauth_wrong_password_is_refused_and_throttled(aiohttp_client, emulator, store) -> None:
    gateway = await aiohttp_client(create_app(provider_config(emulator, max_failed_logins=2), store=store))
    form = {"x_auth_mode": "client_auth", "x_auth_username": "sean", "x_auth_password": "wrong"}
    for _ in range(2):
        response = await call(gateway, "POST", "/oauth/access_token", LEGACY, form=form)
        assert response.status == 401
        assert await response.json() == {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
    form["x_auth_password"] = PASSWORD  # right, but too late: the throttle counts xAuth as a login
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, form=form)
    assert response.status == 429
    assert emulator.state.requests == []
    assert [e.kind for e in await store.list_credentials()].count("token") == 0


async def test_xauth_is_not_for_a_live_app(gateway, emulator) -> None:
    form = {"x_auth_mode": "client_auth", "x_auth_username": "sean", "x_auth_password": PASSWORD}
    response = await call(gateway, "POST", "/oauth/access_token", LIVE, form=form)
    assert response.status == 401
    assert emulator.state.requests == []


# --- invalidate_token -----------------------------------------------------------------------------------


async def test_invalidate_a_live_app_token_tells_x_and_forgets_it(gateway, emulator, store) -> None:
    x_token = next(t for t, v in emulator.state.oauth1.tokens.items() if v.user_id == SEAN_ID)
    token = Token(x_token, LIVE.key, emulator.state.oauth1.tokens[x_token].secret)
    await store.put_token(token)
    response = await call(gateway, "POST", "/1.1/oauth/invalidate_token", LIVE, token=token.token, secret=token.secret)
    assert response.status == 200
    assert await response.json() == {"access_token": token.token}
    assert await store.get_token(token.token) is None
    assert x_token not in emulator.state.oauth1.tokens  # X was told
    emulator.state.requests.clear()
    response = await destroy(gateway, LIVE, token.token, token.secret, PLAIN_IDS[0])
    assert response.status == 401
    assert await response.json() == {"errors": [{"code": 89, "message": "Invalid or expired token."}]}
    assert emulator.state.requests == []


async def test_invalidate_an_xauth_token(gateway, emulator, store) -> None:
    token = Token("issued-token", LEGACY.key, "issued-secret", upstream_user="sean")
    await store.put_token(token)
    response = await call(
        gateway, "POST", "/1.1/oauth/invalidate_token", LEGACY, token=token.token, secret=token.secret
    )
    assert response.status == 200 and await store.get_token(token.token) is None
    assert emulator.state.requests == []  # X never knew this token
    response = await destroy(gateway, LEGACY, token.token, token.secret, PLAIN_IDS[0])
    assert response.status == 401 and (await response.json())["errors"][0]["code"] == 89


# --- refusals: the dialect's 401, nothing upstream ------------------------------------------------------

COULD_NOT_AUTHENTICATE = {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
INVALID_TOKEN = {"errors": [{"code": 89, "message": "Invalid or expired token."}]}


async def test_unknown_consumer_is_refused_before_upstream(gateway, emulator) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", Consumer("nobody", "x"), redirect_uri="oob")
    assert response.status == 401 and await response.json() == COULD_NOT_AUTHENTICATE
    assert emulator.state.requests == []


async def test_bad_signature_is_refused_before_upstream(gateway, emulator) -> None:
    for consumer in (Consumer(LIVE.key, "wrong"), Consumer(LEGACY.key, "wrong")):
        response = await call(gateway, "POST", "/oauth/request_token", consumer, redirect_uri="oob")
        assert response.status == 401 and await response.json() == COULD_NOT_AUTHENTICATE
    assert emulator.state.requests == []


async def test_replayed_request_token_is_refused_before_upstream(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri="oob")
    request = answer_of(await response.text())
    page = await approve_at_x(gateway.session, gateway, request["oauth_token"])
    pin = PIN.search(await page.text()).group(1)
    keys = {"token": request["oauth_token"], "secret": request["oauth_token_secret"], "verifier": pin}
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, **keys)
    assert response.status == 200
    emulator.state.requests.clear()
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, **keys)
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert emulator.state.requests == []


async def test_expired_request_token_is_refused_before_upstream(gateway, emulator, store) -> None:
    await store.put_request_token(RequestToken("old", LIVE.key, "old-secret", "oob", time.time() - 1))
    response = await call(gateway, "POST", "/oauth/access_token", LIVE, token="old", secret="old-secret", verifier="1")
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    response = await gateway.get("/oauth/authorize", params={"oauth_token": "old"}, allow_redirects=False)
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert emulator.state.requests == []


async def test_wrong_verifier_is_refused_before_upstream_and_spends_the_token(gateway, emulator, store) -> None:
    pending = RequestToken(
        "gw-request", LEGACY.key, "gw-secret", CALLBACK, time.time() + 600, "x-request", "x-secret", "right", "x-verifier"
    )  # fmt: skip
    await store.put_request_token(pending)
    keys = {"token": "gw-request", "secret": "gw-secret"}
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, verifier="wrong", **keys)
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, verifier="right", **keys)
    assert response.status == 401 and await response.json() == INVALID_TOKEN  # single use
    assert emulator.state.requests == []


async def test_request_token_of_another_consumer_or_wrong_secret_is_refused(gateway, emulator, store) -> None:
    await store.put_request_token(RequestToken("theirs", LIVE.key, "their-secret", "oob", time.time() + 600))
    response = await call(
        gateway, "POST", "/oauth/access_token", LEGACY, token="theirs", secret="their-secret", verifier="1"
    )
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    response = await call(gateway, "POST", "/oauth/access_token", LIVE, token="theirs", secret="guess", verifier="1")
    assert response.status == 401 and await response.json() == COULD_NOT_AUTHENTICATE
    assert await store.get_request_token("theirs") is not None  # a forgery spends nothing
    assert emulator.state.requests == []


async def test_callback_with_the_wrong_x_token_is_refused(gateway, emulator, store) -> None:
    pending = RequestToken("gw-request", LEGACY.key, "gw-secret", CALLBACK, time.time() + 600, "x-request", "x-secret")
    await store.put_request_token(pending)
    response = await gateway.get(
        "/oauth/callback", params={"request": "gw-request", "oauth_token": "forged", "oauth_verifier": "v"},
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert (await store.get_request_token("gw-request")).verifier is None


@pytest.mark.parametrize(
    "callback",
    [
        "javascript:alert(1)",
        "https://client.example/\r\nSet-Cookie: a=b",
        "/relative",
        "https://" + "a" * 3000 + ".example/",
    ],
)
async def test_unusable_callback_is_a_bad_request(gateway, emulator, callback) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri=callback)
    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == 214
    assert emulator.state.requests == []


async def test_authorize_with_an_oversized_or_missing_token(gateway, emulator) -> None:
    response = await gateway.get("/oauth/authorize", params={"oauth_token": "t" * 5000}, allow_redirects=False)
    assert response.status == 400
    response = await gateway.get("/oauth/authorize", allow_redirects=False)
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert emulator.state.requests == []


async def test_via_upstream_app_consumer_without_an_operator_app(aiohttp_client, emulator, store) -> None:
    config = with_overrides(
        provider_config(emulator), upstream={"oauth1_consumer_key": None, "oauth1_consumer_secret": None}
    )
    gateway = await aiohttp_client(create_app(config, store=store))
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri="oob")
    assert response.status == 503
    assert emulator.state.requests == []
    assert gateway.app[STORE_KEY] is store


# --- the store: every backend keeps the new credentials, secrets sealed ---------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_every_store_keeps_mapped_tokens_and_request_tokens(backend, request, tmp_path) -> None:
    now = [1_000_000.0]
    settings = StoreConfig(encryption_key=Fernet.generate_key().decode())
    async with opened_store(backend, request, tmp_path, settings=settings, clock=lambda: now[0]) as store:
        await store.put_consumer(LEGACY)
        assert await store.get_consumer(LEGACY.key) == LEGACY
        mapped = Token("gw-token", LEGACY.key, "gw-SECRET", upstream_token="x-token", upstream_secret="x-SECRET")
        by_user = Token("gw-user-token", LEGACY.key, "gw-SECRET-2", upstream_user="sean")
        await store.put_token(mapped)
        await store.put_token(by_user)
        assert await store.get_token("gw-token") == mapped
        assert await store.get_token("gw-user-token") == by_user
        await store.put_token(Token("gw-token", LEGACY.key, "plain"))  # replaced whole: no mapping left
        assert await store.get_token("gw-token") == Token("gw-token", LEGACY.key, "plain")
        await store.put_token(mapped)
        assert [(e.kind, e.key, e.detail) for e in await store.list_credentials()] == [
            ("consumer", LEGACY.key, "2 tokens, via upstream app"),
            ("token", "gw-token", f"consumer {LEGACY.key}, mapped to an X token of the upstream app"),
            ("token", "gw-user-token", f"consumer {LEGACY.key}, acts as user sean"),
        ]

        pending = RequestToken("rt", LEGACY.key, "rt-SECRET", CALLBACK, now[0] + 60, "x-rt", "x-rt-SECRET")
        await store.put_request_token(pending)
        assert await store.get_request_token("rt") == pending
        assert await store.take_request_token("rt") == pending
        assert await store.take_request_token("rt") is None  # single use
        assert await store.get_request_token("rt") is None
        await store.put_request_token(pending)
        taken = await asyncio.gather(*(store.take_request_token("rt") for _ in range(5)))
        assert taken.count(pending) == 1 and taken.count(None) == 4  # concurrent takers: one gets it
        await store.put_request_token(pending)
        now[0] += 61
        assert await store.get_request_token("rt") is None  # expired
        assert await store.take_request_token("rt") is None

        if backend == "sqlite":  # at rest: the keys in clear, every secret sealed
            raw = b"".join(p.read_bytes() for p in tmp_path.glob("sqlite.sqlite3*"))
            assert b"x-token" in raw and b"x-rt" not in raw and b"SECRET" not in raw
        await store.put_consumer(Consumer(LEGACY.key, "new", via_upstream_app=False))
        assert (await store.get_consumer(LEGACY.key)).via_upstream_app is False
        assert await store.remove_credential("consumer", LEGACY.key)
        assert await store.get_token("gw-token") is None
        await store.put_consumer(Consumer(LEGACY.key, "again"))
        assert (await store.get_consumer(LEGACY.key)).via_upstream_app is False


async def test_sqlite_version_4_file_migrates_to_the_provider_schema(tmp_path) -> None:
    path = tmp_path / "v4.sqlite3"
    conn = sqlite3.connect(path)
    for version in range(1, 5):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("INSERT INTO consumers (key, secret) VALUES ('ck', 'cs')")
    conn.execute("INSERT INTO tokens (token, consumer_key, secret) VALUES ('tk', 'ck', 'ts')")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    store = await open_store(f"sqlite:///{path}")
    try:
        assert await store.get_consumer("ck") == Consumer("ck", "cs")
        assert await store.get_token("tk") == Token("tk", "ck", "ts")
    finally:
        await store.close()


# --- the CLI --------------------------------------------------------------------------------------------


def test_cli_registers_a_legacy_consumer_and_maps_tokens(tmp_path) -> None:
    flag = ["--store", f"sqlite:///{tmp_path}/creds.sqlite3"]
    result = run(*flag, "add-consumer", "legacy", "-", "--via-upstream-app", stdin=f"c-{MARK}\n")
    assert one_line(result.stdout) == "added consumer legacy (via the upstream app)", result.stderr
    result = run(
        *flag, "add-token", "legacy", "gw-1", "-", "--upstream-token", "x-1", "--upstream-token-secret", "-",
        stdin=f"t-{MARK}\nx-{MARK}\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == "added token gw-1 for consumer legacy, mapped to an X token of the upstream app"
    assert read_back(tmp_path / "creds.sqlite3", token="gw-1") == Token(
        "gw-1", "legacy", f"t-{MARK}", "x-1", f"x-{MARK}"
    )

    result = run(*flag, "add-token", "legacy", "gw-2", f"t-{MARK}", "--upstream-user", "erin")
    assert result.returncode == 1 and "no user 'erin'; add it first with add-user" in result.stderr
    run(*flag, "add-user", "erin", "--password-stdin", "--upstream-bearer", f"b-{MARK}", stdin=f"pw-{MARK}\n")
    result = run(*flag, "add-token", "legacy", "gw-2", f"t-{MARK}", "--upstream-user", "erin")
    assert one_line(result.stdout) == "added token gw-2 for consumer legacy, acts as user erin", result.stderr

    for args, message in [
        (["gw-3", f"t-{MARK}"], "give --upstream-token and --upstream-token-secret, or --upstream-user"),
        (["gw-3", f"t-{MARK}", "--upstream-token", "x"], "--upstream-token and --upstream-token-secret go together"),
        (["gw-3", f"t-{MARK}", "--upstream-user", "erin", "--upstream-token", "x", "--upstream-token-secret", f"s-{MARK}"],
         "one of the two"),
    ]:  # fmt: skip
        result = run(*flag, "add-token", "legacy", *args)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    run(*flag, "add-consumer", "live", f"c-{MARK}")
    result = run(*flag, "add-token", "live", "tk", f"t-{MARK}", "--upstream-user", "erin")
    assert result.returncode == 1 and "is a live X app" in result.stderr

    listing = run(*flag, "list").stdout
    assert "consumer legacy" in listing and "2 tokens, via upstream app" in listing
    assert "gw-1" in listing and "x-1" not in listing  # keys only; the X token is not shown
    assert one_line(run(*flag, "remove", "token", "gw-1").stdout) == "removed token gw-1"
    assert read_back(tmp_path / "creds.sqlite3", token="gw-1") is None


# --- configuration --------------------------------------------------------------------------------------


def test_the_upstream_app_is_configured_whole() -> None:
    config = load_config(
        env={"DMGW_UPSTREAM_OAUTH1_CONSUMER_SECRET": "from-env"}, overrides={"upstream": {"oauth1_consumer_key": "app"}}
    )
    assert (config.upstream.oauth1_consumer_key, config.upstream.oauth1_consumer_secret) == ("app", "from-env")
    assert "from-env" not in repr(config)
    for upstream, message in [
        ({"oauth1_consumer_key": "app"}, ("upstream.oauth1_consumer_key and upstream.oauth1_consumer_secret (or "
         "DMGW_UPSTREAM_OAUTH1_CONSUMER_SECRET) go together: set both or neither")),
        ({"oauth1_consumer_secret": "s"}, "go together"),
        ({"oauth1_consumer_key": " ", "oauth1_consumer_secret": "s"}, "upstream.oauth1_consumer_key must not be blank"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(env={}, overrides={"upstream": upstream})


# --- hostile input on the login endpoints ---------------------------------------------------------------


async def test_a_header_that_is_not_ascii_is_bad_auth_data(gateway, emulator) -> None:
    header = 'OAuth oauth_consumer_key="legacy-client-key-1997", oauth_callback="h\xe9"'.encode("latin-1")
    reply = await raw_request(gateway, "POST", "/oauth/request_token", [("Authorization", header)])
    assert reply.status == 400
    assert orjson.loads(reply.body) == {"errors": [{"code": 215, "message": "Bad Authentication data."}]}
    reply = await raw_request(gateway, "POST", "/api/oauth/access_token", [("Authorization", b"Basic c2Vhbjpw")])
    assert reply.status == 401 and orjson.loads(reply.body)["error"] == "Could not authenticate you."
    assert emulator.state.requests == []


async def test_oauth_parameters_twice_or_split_are_bad_auth_data(gateway, emulator) -> None:
    # oauth_callback in the query as well as the header: only oauth_verifier may stand apart.
    oauth = {
        "oauth_consumer_key": LEGACY.key,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": "split",
        "oauth_callback": "oob",
    }
    url = str(gateway.make_url("/oauth/request_token"))
    query = [("oauth_callback", "oob")]
    header = rfc5849_header("POST", url, query, oauth, (LEGACY.secret, ""))
    response = await gateway.post("/oauth/request_token", params=query, headers={"Authorization": header})
    assert response.status == 400 and (await response.json())["errors"][0]["code"] == 215
    assert emulator.state.requests == []


async def test_oversized_xauth_fields_are_refused_before_any_password_check(gateway, emulator, store) -> None:
    form = {"x_auth_mode": "client_auth", "x_auth_username": "sean", "x_auth_password": "p" * 5000}
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, form=form)
    assert response.status == 400 and (await response.json())["errors"][0]["code"] == 214
    form = {"x_auth_mode": "client_auth", "x_auth_username": "sean"}
    response = await call(gateway, "POST", "/oauth/access_token", LEGACY, form=form)
    assert response.status == 400 and (await response.json())["errors"][0]["code"] == 215
    assert emulator.state.requests == []


async def test_a_user_who_says_no_at_x_is_sent_back_denied(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LEGACY, redirect_uri=CALLBACK)
    request = answer_of(await response.text())
    response = await gateway.get(
        "/oauth/authorize", params={"oauth_token": request["oauth_token"]}, allow_redirects=False
    )
    location = urlsplit(response.headers["Location"])
    x_token = dict(parse_qsl(location.query))["oauth_token"]
    approve = location._replace(query="").geturl()
    x_answer = await gateway.session.post(
        approve, data={"oauth_token": x_token, "cancel": "Cancel"}, allow_redirects=False
    )
    response = await gateway.session.get(x_answer.headers["Location"], allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"{CALLBACK}&denied={request['oauth_token']}"
    assert await store.get_request_token(request["oauth_token"]) is None


# --- tokens mapped by hand (the sidecar case) -----------------------------------------------------------


async def test_tokens_mapped_by_hand_act_as_what_they_map_to(gateway, emulator, store) -> None:
    x_token = "38895958-emulatortoken"  # seeded: theSeanCook's token for the emulator's app
    by_x_token = Token(
        "baked-in-1", LEGACY.key, "baked-secret-1", x_token, emulator.state.oauth1.tokens[x_token].secret
    )
    by_user = Token("baked-in-2", LEGACY.key, "baked-secret-2", upstream_user="sean")
    unmapped = Token("baked-in-3", LEGACY.key, "baked-secret-3")
    for token in (by_x_token, by_user, unmapped):
        await store.put_token(token)
    for token, authorization in [(by_x_token, f'oauth_token="{x_token}"'), (by_user, f"Bearer {SEAN_TOKEN}")]:
        emulator.state.requests.clear()
        response = await call(
            gateway, "GET", "/1.1/account/verify_credentials.json", LEGACY, token=token.token, secret=token.secret
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["screen_name"] == "theSeanCook"
        [me] = emulator.state.requests
        assert me.path == "/2/users/me" and authorization in me.headers["Authorization"]
        assert not legacy_key_reached_x(emulator)
    # A legacy consumer's token mapped to nothing cannot act: it is never re-signed with the legacy key.
    emulator.state.requests.clear()
    response = await destroy(gateway, LEGACY, unmapped.token, unmapped.secret, PLAIN_IDS[0])
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert emulator.state.requests == []


async def test_a_replayed_or_stale_request_token_call_is_refused_before_upstream(gateway, emulator) -> None:
    auth = ClientAuth(LIVE.key, LIVE.secret, redirect_uri="oob")
    url = str(gateway.make_url("/oauth/request_token"))
    _, headers, _ = auth.sign("POST", url, {}, "")
    assert (await gateway.post("/oauth/request_token", headers=headers)).status == 200
    emulator.state.requests.clear()
    response = await gateway.post("/oauth/request_token", headers=headers)  # the same nonce again
    assert response.status == 401 and await response.json() == COULD_NOT_AUTHENTICATE
    oauth = {
        "oauth_consumer_key": LIVE.key,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time()) - 3600),
        "oauth_nonce": "stale",
        "oauth_callback": "oob",
    }
    header = rfc5849_header("POST", url, [], oauth, (LIVE.secret, ""))
    response = await gateway.post("/oauth/request_token", headers={"Authorization": header})
    assert response.status == 401 and (await response.json())["errors"][0]["code"] == 135
    assert emulator.state.requests == []


async def test_the_access_type_asked_for_goes_on_to_x(gateway, emulator) -> None:
    for consumer in (LIVE, LEGACY):
        response = await call(gateway, "POST", "/oauth/request_token", consumer, query={"x_auth_access_type": "read"})
        assert response.status == 200, await response.text()
    assert [r.query for r in emulator.state.requests] == [{"x_auth_access_type": "read"}] * 2
    emulator.state.requests.clear()
    response = await call(gateway, "POST", "/oauth/request_token", LIVE, query={"x_auth_access_type": "admin"})
    assert response.status == 400 and emulator.state.requests == []


async def test_x_refusing_a_pin_is_the_dialects_401_without_xs_words(gateway, emulator, store) -> None:
    response = await call(gateway, "POST", "/oauth/request_token", LIVE, redirect_uri="oob")
    request = answer_of(await response.text())
    await approve_at_x(gateway.session, gateway, request["oauth_token"])
    keys = {"token": request["oauth_token"], "secret": request["oauth_token_secret"]}
    response = await call(gateway, "POST", "/oauth/access_token", LIVE, verifier="0000000", **keys)
    # Only X can judge a live app's PIN: it is asked, and its refusal is answered as the gateway's own.
    assert response.status == 401 and await response.json() == INVALID_TOKEN
    assert [r.path for r in emulator.state.requests][-1] == "/oauth/access_token"
    assert [e for e in await store.list_credentials() if e.kind == "token"] == []


async def test_a_mapped_token_on_the_v2_pass_through_acts_as_its_x_identity(gateway, emulator, store) -> None:
    x_token = "38895958-emulatortoken"
    token = Token("baked-in-v2", LEGACY.key, "baked-secret", x_token, emulator.state.oauth1.tokens[x_token].secret)
    await store.put_token(token)
    response = await call(gateway, "GET", "/2/users/me", LEGACY, token=token.token, secret=token.secret)
    assert response.status == 200, await response.text()
    assert (await response.json())["data"]["username"] == "theSeanCook"
    [me] = emulator.state.requests
    assert f'oauth_consumer_key="{APP_CONSUMER_KEY}"' in me.headers["Authorization"]
    assert not legacy_key_reached_x(emulator)
