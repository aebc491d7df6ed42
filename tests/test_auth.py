"""Legacy credentials in, v2 credentials out: OAuth 1.0a verified and re-signed, Basic users with their
stored v2 grant (refreshed once however many requests wait), and every refusal made before upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from authlib.oauth1 import SIGNATURE_TYPE_BODY, SIGNATURE_TYPE_QUERY, ClientAuth

from gateway.app import create_app
from gateway.auth import inbound
from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token, hash_password
from gateway.config import with_overrides
from gateway.emulator import FaultRule
from gateway.keys import AUTH_KEY
from gateway.store.factory import open_store
from tests.conftest import PLAIN_IDS, SEED_002_ID, SEED_003_JSON_ID, SEED_003_XML_ID, gateway_config

CONSUMER = Consumer("emulator-consumer", "emulator-consumer-secret")
SEAN = Token("38895958-emulatortoken", "emulator-consumer", "emulator-token-secret-sean")
OTHER_CONSUMER = Consumer("other-consumer", "other-consumer-secret")
OTHER_TOKEN = Token("other-token", "other-consumer", "other-token-secret")
MARCOS_PASSWORD = "correct horse battery staple"
SECRETS = (CONSUMER.secret, SEAN.secret, MARCOS_PASSWORD, "emulator-oauth2-refresh-theSeanCook")

CLASSIC = "/1.1/direct_messages/destroy.json"
EVENTS = "/1.1/direct_messages/events/destroy.json"


def auth_config(emulator: Any, **auth: Any):
    config = gateway_config(emulator, upstream={"oauth2_client_id": "emulator-client"})
    return with_overrides(config, upstream={"bearer_token": None}, auth={"sidecar": False, **auth})


async def add_credentials(store):
    await store.put_consumer(CONSUMER)
    await store.put_token(SEAN)
    await store.put_consumer(OTHER_CONSUMER)
    await store.put_token(OTHER_TOKEN)


@pytest.fixture
async def store(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path}/auth.sqlite3")
    await add_credentials(store)
    yield store
    await store.close()


@pytest.fixture
async def client(aiohttp_client, emulator, store):
    return await aiohttp_client(create_app(auth_config(emulator), store=store))


def signed(
    client: Any,
    method: str,
    path: str,
    *,
    consumer: Consumer = CONSUMER,
    token: Token = SEAN,
    form: dict[str, str] | None = None,
    where: str = "HEADER",
    url: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for client.request(), signed as a legacy client would sign them."""
    auth = ClientAuth(consumer.key, consumer.secret, token.token, token.secret, signature_type=where)
    target = url or str(client.make_url(path))
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    # authlib's client signs body parameters only when the body is a str.
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()) if form is not None else ""
    if timestamp is not None:
        auth.get_oauth_params = _with_timestamp(auth.get_oauth_params, timestamp)  # type: ignore[method-assign]
    uri, headers, body = auth.sign(method, target, headers, body)
    signed_path = uri[len(target) - len(path) :] if url is None else path + uri[len(url) :]
    return {"method": method, "path": signed_path, "headers": headers, "data": body.encode() if body else None}


def _with_timestamp(original, timestamp: int):
    def patched(nonce, ts):
        return original(nonce, str(timestamp))

    return patched


def rfc5849_header(
    method: str, url: str, query: list[tuple[str, str]], oauth: dict[str, str], secrets: tuple[str, str]
) -> str:
    """An Authorization header signed straight from RFC 5849 section 3.4, independently of authlib."""
    pct = partial(quote, safe="~")
    pairs = sorted((pct(k), pct(v)) for k, v in [*query, *oauth.items()])
    base = "&".join((method, pct(url), pct("&".join(f"{k}={v}" for k, v in pairs))))
    key = f"{pct(secrets[0])}&{pct(secrets[1])}".encode()
    signature = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()
    fields = {**oauth, "oauth_signature": signature}
    return "OAuth " + ", ".join(f'{pct(k)}="{pct(v)}"' for k, v in fields.items())


async def test_oauth_values_that_need_escaping_verify(client, emulator) -> None:
    oauth = {
        "oauth_consumer_key": CONSUMER.key,
        "oauth_token": SEAN.token,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": "n+o%20nce/=&x é",
        "oauth_version": "1.0",
    }
    url = str(client.make_url(EVENTS))
    header = rfc5849_header("DELETE", url, [("id", PLAIN_IDS[0])], oauth, (CONSUMER.secret, SEAN.secret))
    assert "n%2Bo%2520nce%2F%3D%26x%20%C3%A9" in header
    response = await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers={"Authorization": header})
    assert response.status == 204


async def send(client: Any, request: dict[str, Any]):
    return await client.request(request["method"], request["path"], headers=request["headers"], data=request["data"])


def upstream(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


# --- OAuth 1.0a in, re-signed out --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["HEADER", SIGNATURE_TYPE_QUERY])
async def test_oauth1_signed_classic_destroy_is_verified_and_re_signed(client, emulator, where) -> None:
    response = await send(client, signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}", where=where))
    assert response.status == 200, await response.text()
    assert orjson.loads(await response.read())["id_str"] == SEED_002_ID
    delete = next(r for r in emulator.state.requests if r.method == "DELETE")
    sent = delete.headers["Authorization"]
    assert sent.startswith("OAuth ") and 'oauth_consumer_key="emulator-consumer"' in sent
    assert 'oauth_token="38895958-emulatortoken"' in sent
    assert emulator.state.is_deleted_for(SEED_002_ID, "38895958")  # the emulator verified it as Sean


async def test_oauth1_params_in_a_form_body_including_delete(client, emulator) -> None:
    response = await send(client, signed(client, "POST", CLASSIC, form={"id": SEED_002_ID}, where=SIGNATURE_TYPE_BODY))
    assert response.status == 200, await response.text()
    response = await send(
        client, signed(client, "DELETE", EVENTS, form={"id": PLAIN_IDS[0]}, where=SIGNATURE_TYPE_BODY)
    )
    assert response.status == 204, await response.text()
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], "38895958")


def _tamper_id(request: dict[str, Any]) -> dict[str, Any]:
    return {**request, "path": request["path"].replace(SEED_002_ID, PLAIN_IDS[0])}


REFUSALS = [
    ("wrong consumer secret", {"consumer": Consumer(CONSUMER.key, "not-the-secret")}, None, 401, 32),
    ("wrong token secret", {"token": Token(SEAN.token, SEAN.consumer_key, "nope")}, None, 401, 32),
    ("altered parameter", {}, _tamper_id, 401, 32),
    ("unknown consumer", {"consumer": Consumer("nobody", "x")}, None, 401, 32),
    ("unknown token", {"token": Token("no-such-token", CONSUMER.key, "x")}, None, 401, 89),
    ("another consumer's token", {"token": OTHER_TOKEN}, None, 401, 89),
    ("stale timestamp", {"timestamp": int(time.time()) - 1000}, None, 401, 135),
    ("future timestamp", {"timestamp": int(time.time()) + 1000}, None, 401, 135),
]


@pytest.mark.parametrize(("name", "kwargs", "tamper", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_forged_or_stale_signatures_are_refused_before_upstream(
    client, emulator, name, kwargs, tamper, status, code
) -> None:
    request = signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}", **kwargs)
    response = await send(client, tamper(request) if tamper else request)
    assert response.status == status
    assert orjson.loads(await response.read()) == {"errors": [{"code": code, "message": _MESSAGES[code]}]}
    assert response.headers["WWW-Authenticate"] == 'OAuth realm="https://api.twitter.com"'
    assert upstream(emulator) == []


_MESSAGES = {
    32: "Could not authenticate you.",
    89: "Invalid or expired token.",
    135: "Timestamp out of bounds.",
    215: "Bad Authentication data.",
}


async def test_a_replayed_nonce_is_refused(client, emulator) -> None:
    request = signed(client, "DELETE", f"{EVENTS}?id={PLAIN_IDS[0]}")
    assert (await send(client, request)).status == 204
    emulator.state.requests.clear()
    replay = await send(client, request)
    assert replay.status == 401
    assert orjson.loads(await replay.read())["errors"][0]["code"] == 32
    assert upstream(emulator) == []


async def test_a_nonce_replayed_to_another_replica_sharing_the_store_is_refused(
    aiohttp_client, emulator, shared_store
) -> None:
    """Run on a shared SQLite file and on a shared Redis."""
    await add_credentials(shared_store)
    one = await aiohttp_client(create_app(auth_config(emulator), store=shared_store))
    other = await aiohttp_client(create_app(auth_config(emulator), store=shared_store))
    request = signed(one, "DELETE", f"{EVENTS}?id={PLAIN_IDS[0]}")
    assert (await send(one, request)).status == 204
    # The same bytes, sent to the other replica (signed for the first one's host, as a captured request would be).
    request["headers"] = {**request["headers"], "Host": f"{one.host}:{one.port}"}
    replay = await send(other, request)
    assert replay.status == 401


@pytest.mark.parametrize(
    "authorization",
    [
        'OAuth oauth_consumer_key="emulator-consumer"',  # no signature, token, nonce...
        "OAuth garbage",
        "Bearer",
        "Negotiate abc",
    ],
)
async def test_unreadable_authentication_is_215(client, emulator, authorization) -> None:
    response = await client.post(f"{CLASSIC}?id={SEED_002_ID}", headers={"Authorization": authorization})
    assert response.status == 400
    assert orjson.loads(await response.read())["errors"][0]["code"] == 215
    assert upstream(emulator) == []


async def test_only_hmac_sha1_is_accepted(client, emulator) -> None:
    request = signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}")
    request["headers"]["Authorization"] = request["headers"]["Authorization"].replace("HMAC-SHA1", "PLAINTEXT")
    response = await send(client, request)
    assert response.status == 400 and upstream(emulator) == []


@pytest.mark.parametrize(
    ("path", "shape"),
    [(f"{CLASSIC}?id={SEED_002_ID}", "v1.1"), (f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", "statusnet")],
)
async def test_no_credentials_and_no_sidecar_is_the_dialects_401(client, emulator, path, shape) -> None:
    response = await client.post(path)
    assert response.status == 401
    body = await response.read()
    if shape == "v1.1":
        assert orjson.loads(body)["errors"][0]["code"] == 32
    else:
        assert b"<error>Could not authenticate you.</error>" in body
        assert response.headers["WWW-Authenticate"] == 'Basic realm="StatusNet API"'
    assert upstream(emulator) == []


# --- The URL the client signed -----------------------------------------------------------------------


async def test_public_base_url_signatures_are_accepted_only_when_configured(aiohttp_client, emulator, store) -> None:
    plain = await aiohttp_client(create_app(auth_config(emulator), store=store))
    request = signed(
        plain, "DELETE", f"{EVENTS}?id={PLAIN_IDS[0]}", url=f"https://api.twitter.com{EVENTS}?id={PLAIN_IDS[0]}"
    )
    assert (await send(plain, request)).status == 401
    public = await aiohttp_client(
        create_app(auth_config(emulator, public_base_urls=("https://api.twitter.com",)), store=store)
    )
    request = signed(
        public, "DELETE", f"{EVENTS}?id={PLAIN_IDS[0]}", url=f"https://api.twitter.com{EVENTS}?id={PLAIN_IDS[0]}"
    )
    assert (await send(public, request)).status == 204


@pytest.mark.parametrize(("trusted", "status"), [((), 401), (("127.0.0.0/8",), 204)])
async def test_forwarded_headers_count_only_from_trusted_proxies(
    aiohttp_client, emulator, store, trusted, status
) -> None:
    client = await aiohttp_client(create_app(auth_config(emulator, trusted_proxies=trusted), store=store))
    url = f"https://dm.example.org{EVENTS}?id={PLAIN_IDS[0]}"
    request = signed(client, "DELETE", f"{EVENTS}?id={PLAIN_IDS[0]}", url=url)
    request["headers"] = {**request["headers"], "X-Forwarded-Proto": "https", "X-Forwarded-Host": "dm.example.org"}
    assert (await send(client, request)).status == status


# --- HTTP Basic users with a stored v2 grant ---------------------------------------------------------


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.fixture
async def with_users(store):
    await store.put_user(BasicUser("marcos", hash_password(MARCOS_PASSWORD), OAuth2Grant("emulator-token-marcosgdf")))
    await store.put_user(
        BasicUser(
            "sean",
            hash_password(MARCOS_PASSWORD),
            OAuth2Grant("emulator-oauth2-access-theSeanCook", "emulator-oauth2-refresh-theSeanCook", time.time() - 10),
        )
    )
    return store


async def test_basic_user_deletes_with_their_stored_grant(client, emulator, with_users) -> None:
    response = await client.post(
        f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", headers=basic("marcos", MARCOS_PASSWORD)
    )
    assert response.status == 200, await response.text()
    delete = next(r for r in emulator.state.requests if r.method == "DELETE")
    assert delete.headers["Authorization"] == "Bearer emulator-token-marcosgdf"


@pytest.mark.parametrize(
    "headers",
    [
        basic("marcos", "wrong"),
        basic("nobody", MARCOS_PASSWORD),
        {"Authorization": "Basic !!!notbase64"},
        basic("", "x"),
    ],
    ids=["wrong password", "unknown user", "not base64", "no username"],
)
async def test_basic_failures_are_statusnet_401s(client, emulator, with_users, headers) -> None:
    response = await client.post(f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="StatusNet API"'
    assert orjson.loads(await response.read()) == {
        "error": "Could not authenticate you.",
        "request": f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json",
    }
    assert upstream(emulator) == []


@pytest.fixture
def scrypt_runs(monkeypatch) -> list[str]:
    """The stored hashes each password check was run against (scrypt, on a thread)."""
    runs: list[str] = []
    real = inbound.verify_password

    def counted(password: str, encoded: str) -> bool:
        runs.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(inbound, "verify_password", counted)
    return runs


async def test_a_basic_password_that_matched_is_not_hashed_again(client, emulator, with_users, scrypt_runs) -> None:
    right, wrong = basic("marcos", MARCOS_PASSWORD), basic("marcos", MARCOS_PASSWORD + "!")
    path = f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml"
    assert [(await client.post(path, headers=right)).status for _ in range(3)] == [200, 200, 200]
    assert len(scrypt_runs) == 1
    assert (await client.post(path, headers=wrong)).status == 401  # a password that does not match pays in full
    assert (await client.post(path, headers=basic("nobody", MARCOS_PASSWORD))).status == 401
    assert len(scrypt_runs) == 3
    assert (await client.post(path, headers=right)).status == 200
    assert len(scrypt_runs) == 3


async def test_a_new_password_or_a_removed_user_counts_at_once(client, emulator, with_users, scrypt_runs) -> None:
    path = f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml"
    assert (await client.post(path, headers=basic("marcos", MARCOS_PASSWORD))).status == 200
    await with_users.put_user(BasicUser("marcos", hash_password("a new one"), OAuth2Grant("emulator-token-marcosgdf")))
    assert (await client.post(path, headers=basic("marcos", MARCOS_PASSWORD))).status == 401
    assert (await client.post(path, headers=basic("marcos", "a new one"))).status == 200
    assert await with_users.remove_credential("user", "marcos")
    assert (await client.post(path, headers=basic("marcos", "a new one"))).status == 401
    assert len(scrypt_runs) == 4


async def test_what_is_kept_of_a_basic_password_is_no_password(client, emulator, with_users, monkeypatch) -> None:
    monkeypatch.setattr(inbound, "VERIFIED_BASIC_SIZE", 1)
    path = f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml"
    for user in ("marcos", "sean", "marcos"):
        assert (await client.post(path, headers=basic(user, MARCOS_PASSWORD))).status in (200, 403)
    kept = client.server.app[AUTH_KEY]._verified
    assert list(kept) == ["marcos"]  # bounded: the least recently verified went
    assert MARCOS_PASSWORD.encode() not in repr(kept).encode() and MARCOS_PASSWORD.encode() not in kept["marcos"][1]
    assert kept["marcos"][1] != hashlib.sha256(MARCOS_PASSWORD.encode()).digest()  # keyed, not a plain digest


def _add_events(emulator, count: int) -> list[str]:
    ids = [str(1583890000000100000 + n) for n in range(count)]
    for event_id in ids:
        emulator.state.events[event_id] = {
            "id": event_id, "event_type": "MessageCreate", "text": f"bulk {event_id}",
            "created_at": "2022-10-26T10:00:00.000Z", "dm_conversation_id": "38895958-776627022",
            "sender_id": "776627022",
        }  # fmt: skip
    return ids


async def test_an_expired_grant_is_refreshed_once_for_50_concurrent_requests(client, emulator, with_users) -> None:
    ids = _add_events(emulator, 50)
    # A slow token endpoint, so that every request is waiting on the refresh while it is under way.
    emulator.state.faults.append(FaultRule(method="POST", path="/2/oauth2/token", action="delay", delay=1.0))
    headers = basic("sean", MARCOS_PASSWORD)
    responses = await asyncio.gather(*(client.delete(f"{EVENTS}?id={i}", headers=headers) for i in ids))
    assert [r.status for r in responses] == [204] * 50
    assert emulator.state.token_refreshes == 1
    stored = (await with_users.get_user("sean")).grant
    assert stored.access_token != "emulator-oauth2-access-theSeanCook"  # persisted
    assert stored.refresh_token in emulator.state.valid_refresh_tokens()
    assert stored.expires_at is not None and stored.expires_at > time.time()


async def test_a_grant_v2_rejects_is_refreshed_and_the_call_retried(client, emulator, store) -> None:
    await store.put_user(
        BasicUser(
            "sean",
            hash_password(MARCOS_PASSWORD),
            OAuth2Grant("emulator-oauth2-access-theSeanCook", "emulator-oauth2-refresh-theSeanCook"),
        )
    )
    emulator.state.expire_access_token("emulator-oauth2-access-theSeanCook")
    response = await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers=basic("sean", MARCOS_PASSWORD))
    assert response.status == 204
    assert emulator.state.token_refreshes == 1
    assert [r.method for r in emulator.state.requests] == ["DELETE", "POST", "DELETE"]


async def test_a_grant_replaced_by_the_operator_is_used_at_once(client, emulator, with_users) -> None:
    marcos = basic("marcos", MARCOS_PASSWORD)
    assert (await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers=marcos)).status == 403  # not his message
    await with_users.put_grant("marcos", OAuth2Grant("emulator-token-theSeanCook"))  # dm-gateway credentials
    emulator.state.requests.clear()
    assert (await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers=marcos)).status == 204
    assert emulator.state.requests[0].headers["Authorization"] == "Bearer emulator-token-theSeanCook"


async def test_a_failed_refresh_is_the_dialects_auth_error(client, emulator, with_users) -> None:
    emulator.state.faults.append(FaultRule(method="POST", path="/2/oauth2/token", action="status", status=400,
                                           body={"error": "invalid_request"}))  # fmt: skip
    response = await client.post(
        f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=basic("sean", MARCOS_PASSWORD)
    )
    assert response.status == 401
    assert orjson.loads(await response.read())["error"] == "Could not authenticate you."
    assert not [r for r in emulator.state.requests if r.method == "DELETE"]


async def test_secrets_never_reach_the_log(client, emulator, with_users, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    await send(client, signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}"))
    await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers=basic("sean", MARCOS_PASSWORD))
    await client.post(f"{CLASSIC}?id={PLAIN_IDS[1]}", headers=basic("sean", "wrong password"))
    for secret in SECRETS:
        assert secret not in caplog.text


async def test_a_store_read_that_raced_a_refresh_does_not_undo_it(emulator, store) -> None:
    import aiohttp

    from gateway.auth.upstream import GrantRefresher

    old = OAuth2Grant("emulator-oauth2-access-theSeanCook", "emulator-oauth2-refresh-theSeanCook", time.time() - 1)
    await store.put_user(BasicUser("sean", hash_password(MARCOS_PASSWORD), old))
    async with aiohttp.ClientSession() as session:
        refresher = GrantRefresher(store, session, f"{emulator.url}/2/oauth2/token", "emulator-client")
        refresher.remember("sean", old)
        new = await refresher.refresh("sean", old.access_token)
        assert new.access_token != old.access_token
        refresher.remember("sean", old)  # read from the store just before the refresh persisted
        assert await refresher.current("sean") == new
        assert emulator.state.token_refreshes == 1


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "https://api.x.com/2/dm_events/1?expansions=sender_id%2Cparticipant_ids&user.fields=a%2Cb"),
        ("DELETE", "https://api.x.com:443/2/dm_events/2"),
        ("GET", "http://127.0.0.1:8080/2/users/by?usernames=a%2Cb+c&x=%25%7E"),
    ],
)
async def test_upstream_signature_is_one_authlibs_server_side_check_accepts(method: str, url: str) -> None:
    """The header an OAuth1Credential sends for v2 verifies as RFC 5849 says, over the query it names, with
    secrets that need escaping; and a header for another URL or method does not."""
    from authlib.oauth1.rfc5849.signature import verify_hmac_sha1
    from authlib.oauth1.rfc5849.wrapper import OAuth1Request

    from gateway.auth.upstream import OAuth1Credential

    credential = OAuth1Credential("ck-1", "c&s%ret", "tok~1", "t+s/ret")

    def verifies(method: str, url: str, header: str) -> bool:
        request = OAuth1Request(method, url, headers={"Authorization": header})
        request.client = type("Client", (), {"get_client_secret": lambda self: "c&s%ret"})()
        request.credential = type("Credential", (), {"get_oauth_token_secret": lambda self: "t+s/ret"})()
        return bool(verify_hmac_sha1(request)) and request.token == "tok~1" and request.client_id == "ck-1"

    header = await credential.authorization(method, url)
    assert verifies(method, url, header)
    assert not verifies("POST", url, header)
    assert not verifies(method, url.replace("/2/", "/1.1/"), header)


@pytest.mark.parametrize(
    ("method", "uri", "params"),
    [
        ("post", "HTTP://Example.COM:80/r%20v/X", [("b5", "=%3D"), ("a3", "a"), ("c@", ""), ("a2", "r b")]),
        ("GET", "https://api.x.com/2/dm_events/1", [("a3", "2 q"), ("oauth_signature", "x="), ("a3", "a")]),
        ("DELETE", "http://127.0.0.1:8080/p;x", [("k&=%", "v&=%~+"), ("ünï", "çødé ✓"), ("k", "a\tb\nc")]),
    ],
)
def test_the_base_string_is_rfc_5849s_each_time(method: str, uri: str, params: list[tuple[str, str]]) -> None:
    """The signature base string, whose values are escaped once and remembered, is the one authlib's
    primitives make (RFC 5849, 3.4.1), the first time and again."""
    from authlib.oauth1.rfc5849.signature import normalize_base_string_uri, normalize_parameters
    from authlib.oauth1.rfc5849.util import escape

    from gateway.auth.upstream import base_string

    pairs = normalize_parameters([(k, v) for k, v in params if k != "oauth_signature"])
    expected = "&".join((escape(method.upper()), escape(normalize_base_string_uri(uri)), escape(pairs)))
    assert base_string(method, uri, params) == expected
    assert base_string(method, uri, params) == expected


def test_base_string_uris_hmacs_and_header_items_are_authlibs_and_the_standard_librarys() -> None:
    """The parts of a signature the gateway writes itself read what the library functions they stand for
    read, over random URIs, secrets, header texts and values (each drawn from characters that matter to
    them)."""
    import random
    from urllib.request import parse_http_list

    from authlib.oauth1.rfc5849.signature import hmac_sha1_signature, normalize_base_string_uri
    from authlib.oauth1.rfc5849.util import escape

    from gateway.auth.inbound import _header_items
    from gateway.auth.upstream import ESCAPE_CACHE_LENGTH, escaped_base_uri, hmac_sha1
    from gateway.auth.upstream import escape as gateway_escape

    rng = random.Random(22)
    uri_chars = "aZ09-._~/%;?#@:!$&'()*+,= \tü"
    header_chars = 'ab=",\\ \t'
    for _ in range(3000):
        scheme = rng.choice(["http", "HTTPS", "https", "ftp", ""])
        authority = rng.choice(["Example.COM", "h:80", "h:443", "[::1]:8080", "u@h", ""])
        path = "".join(rng.choice(uri_chars) for _ in range(rng.randrange(12)))
        uri = f"{scheme}://{authority}{'/' if rng.random() < 0.8 else ''}{path}"
        try:
            expected = escape(normalize_base_string_uri(uri))
        except ValueError:
            with pytest.raises(ValueError):
                escaped_base_uri(uri)
        else:
            assert escaped_base_uri(uri) == expected, uri
        secrets_ = ["".join(rng.choice(uri_chars) for _ in range(rng.randrange(8))) for _ in range(2)]
        assert hmac_sha1(uri, *secrets_) == hmac_sha1_signature(uri, *secrets_)
        text = "".join(rng.choice(header_chars) for _ in range(rng.randrange(16)))
        assert _header_items(text) == parse_http_list(text), text
        # Values of unreserved characters only, or not, remembered or too long to be.
        value = "".join(rng.choice(uri_chars[:6] if rng.random() < 0.5 else uri_chars) for _ in range(rng.randrange(9)))
        value *= ESCAPE_CACHE_LENGTH // 4 if rng.random() < 0.1 else 1
        assert gateway_escape(value) == escape(value), value


async def test_a_token_stored_anew_acts_upstream_with_its_new_secret_at_once(client, emulator, store) -> None:
    """A verified caller's upstream signer is kept for its next requests only while the store answers the
    same records: a token given another secret signs with that one at once (which X, still knowing the old
    one, refuses), and with the old one again once it is stored back."""
    first = await send(client, signed(client, "POST", f"{CLASSIC}?id={PLAIN_IDS[0]}"))
    assert first.status == 200
    rotated = Token(SEAN.token, SEAN.consumer_key, "another secret")
    await store.put_token(rotated)
    assert (await send(client, signed(client, "POST", f"{CLASSIC}?id={PLAIN_IDS[1]}"))).status == 401  # inbound
    refused = await send(client, signed(client, "POST", f"{CLASSIC}?id={PLAIN_IDS[1]}", token=rotated))
    assert refused.status == 401 and upstream(emulator)[-1][0] == "GET"  # X refused the new signature
    await store.put_token(SEAN)
    again = await send(client, signed(client, "POST", f"{CLASSIC}?id={PLAIN_IDS[1]}"))
    assert again.status == 200
