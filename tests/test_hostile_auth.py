"""Hostile inbound authentication, each test written as the attack: password floods, replays at the edge of
the timestamp window, over-long nonces, credentials that are not text, and unsigned fields on signed calls.

Requests a client library would refuse to send go over a raw socket. Each test checks the answer in the
calling dialect's shape, what reached the emulator (X API v2), and what the store holds.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp.test_utils import TestClient
from authlib.oauth1 import SIGNATURE_TYPE_BODY, SIGNATURE_TYPE_QUERY, ClientAuth

from gateway.app import create_app
from gateway.auth import inbound
from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password
from gateway.auth.throttle import LoginThrottle, address_key
from gateway.config import ConfigError, load_config
from gateway.keys import AUTH_KEY
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite.schema import nonce_digest
from tests.conftest import SEED_003_JSON_ID, opened_store
from tests.golden_files import assert_golden
from tests.test_auth import CONSUMER, SEAN, add_credentials, auth_config

PASSWORD = "correct horse battery staple"
STATUSNET_DESTROY = f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json"
V1_DESTROY = "/1.1/direct_messages/destroy.json?id=1583890000000000003"
V1_NEW = "/1.1/direct_messages/new.json"
MICK_ID = "776627022"
XDEV_ID = "2244994945"
WINDOW = 300  # auth.timestamp_window's default


# --- the wire ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of each
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def raw_request(
    client: TestClient,
    method: str,
    target: str,
    headers: list[tuple[str, bytes]],
    body: bytes = b"",
    *,
    source: str = "127.0.0.1",
) -> Reply:
    """One request, written byte for byte over a socket from the loopback address ``source``."""
    reader, writer = await asyncio.open_connection(client.host, client.port, local_addr=(source, 0))
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nConnection: close\r\n".encode()
        for name, value in headers:
            head += name.encode() + b": " + value + b"\r\n"
        if body:
            head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    found = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    if found.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return Reply(int(lines[0].split()[1]), found, payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def basic(username: str, password: str) -> tuple[str, bytes]:
    return ("Authorization", b"Basic " + base64.b64encode(f"{username}:{password}".encode()))


async def login(
    gateway: TestClient,
    username: str,
    password: str,
    *,
    source: str = "127.0.0.1",
    path: str = STATUSNET_DESTROY,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Reply:
    """A Basic-authenticated destroy from the loopback address ``source``."""
    return await raw_request(gateway, "POST", path, [basic(username, password), *headers], source=source)


def upstream(emulator: Any) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing logged with a traceback, and no unexpected error at all."""
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "unexpected error" not in caplog.text


V1_BAD_AUTH = (400, {"errors": [{"code": 215, "message": "Bad Authentication data."}]})
V1_NOT_AUTHENTICATED = (401, {"errors": [{"code": 32, "message": "Could not authenticate you."}]})
V1_RATE_LIMITED = (429, {"errors": [{"code": 88, "message": "Rate limit exceeded"}]})
V1_BAD_REQUEST = (400, {"errors": [{"code": 214, "message": "Bad request."}]})


def statusnet(message: str, path: str = STATUSNET_DESTROY) -> dict[str, str]:
    return {"error": message, "request": path}


# --- gateways ------------------------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    await add_credentials(store)
    await store.put_user(BasicUser("marcos", hash_password(PASSWORD), OAuth2Grant("emulator-token-marcosgdf")))
    await store.put_user(BasicUser("mick", hash_password(PASSWORD), OAuth2Grant("emulator-token-s0c1alm3dia")))
    yield store
    await store.close()


@pytest.fixture
async def gateway(aiohttp_client: Any, emulator: Any, store: MemoryStore) -> TestClient:
    """The defaults: auth.max_failed_logins = 10 within auth.failed_login_window = 60 seconds."""
    return await aiohttp_client(create_app(auth_config(emulator), store=store))


@pytest.fixture
def scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each password check (scrypt) ran on, one entry per check."""
    runs: list[str] = []
    real = inbound.verify_password

    def counted(password: str, encoded: str) -> bool:
        runs.append(threading.current_thread().name)
        return real(password, encoded)

    monkeypatch.setattr(inbound, "verify_password", counted)
    return runs


# --- 1. failed logins are limited per address and per username -----------------------------------------


async def test_a_wrong_password_flood_is_refused_at_once_after_ten_failures(gateway, emulator, scrypt_runs) -> None:
    replies = [await login(gateway, "marcos", f"guess {n}") for n in range(15)]
    assert [r.status for r in replies] == [401] * 10 + [400] * 5  # StatusNet's rate-limit answer is a 400
    assert [r.json() for r in replies[10:]] == [statusnet("Rate limit exceeded.")] * 5
    assert len(scrypt_runs) == 10  # the refused ones were never hashed
    limited = replies[-1]
    assert limited.headers["x-ratelimit-limit"] == "10" and limited.headers["x-ratelimit-remaining"] == "0"
    assert time.time() < int(limited.headers["x-ratelimit-reset"]) <= time.time() + 62
    # The right password from the flooding address is refused too, for this user and for any other.
    for who in ("marcos", "mick"):
        reply = await login(gateway, who, PASSWORD)
        assert (reply.status, reply.json()) == (400, statusnet("Rate limit exceeded."))
    # v1.1 says it with its own 429 and code 88.
    reply = await login(gateway, "marcos", PASSWORD, path=V1_DESTROY)
    assert (reply.status, reply.json()) == V1_RATE_LIMITED
    assert_golden("errors/twitter_v1/rate_limited.json", reply.body)
    assert reply.headers["x-rate-limit-remaining"] == "0"
    assert len(scrypt_runs) == 10
    assert upstream(emulator) == []
    # The right password from another address still works, and is checked.
    reply = await login(gateway, "marcos", PASSWORD, source="127.0.0.2")
    assert reply.status == 200, reply.body
    assert len(scrypt_runs) == 11
    assert [m for m, _ in upstream(emulator)].count("DELETE") == 1


async def test_the_refusal_ends_when_the_window_has_passed(gateway, emulator, scrypt_runs) -> None:
    auth = gateway.server.app[AUTH_KEY]
    now = [1000.0]
    auth._throttle = LoginThrottle(10, 60, clock=lambda: now[0])
    for n in range(10):
        assert (await login(gateway, "marcos", f"guess {n}")).status == 401
    now[0] += 59.5
    assert (await login(gateway, "marcos", PASSWORD)).status == 400
    now[0] += 0.5
    assert (await login(gateway, "marcos", PASSWORD)).status == 200
    assert len(scrypt_runs) == 11


async def test_a_concurrent_flood_cannot_start_more_checks_than_the_limit(gateway, emulator, scrypt_runs) -> None:
    """Sixty wrong passwords at once from one address: each is counted before it is checked."""
    replies = await asyncio.gather(*(login(gateway, "marcos", f"guess {n}", path=V1_DESTROY) for n in range(60)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [401] * 10 + [429] * 50
    assert len(scrypt_runs) == 10
    assert upstream(emulator) == []


async def test_changing_the_username_does_not_reset_the_address(gateway, emulator, scrypt_runs) -> None:
    for n in range(10):
        reply = await login(gateway, f"nobody{n}", "guess")
        assert reply.status == 401
    reply = await login(gateway, "nobody-else", "guess")
    assert (reply.status, reply.json()) == (400, statusnet("Rate limit exceeded."))
    assert len(scrypt_runs) == 10
    assert upstream(emulator) == []


async def test_a_username_flooded_from_many_addresses_is_refused_to_those_that_failed(
    gateway, emulator, scrypt_runs
) -> None:
    sources = [f"127.0.0.{n}" for n in range(2, 12)]
    for source in sources:  # one wrong guess from each of ten addresses
        reply = await login(gateway, "Marcos", "guess", source=source)
        assert reply.status == 401
    # An address that failed is refused at once for that username (in any case), however right the password.
    reply = await login(gateway, "marcos", PASSWORD, source=sources[0])
    assert reply.status == 400 and reply.json() == statusnet("Rate limit exceeded.")
    assert len(scrypt_runs) == 10
    # ... but still heard for another username.
    reply = await login(gateway, "mick", PASSWORD, source=sources[0])
    assert reply.status == 403, reply.body  # authenticated as mick: the message is not his to delete
    # An address without failures is heard: the user's right password works, a wrong one is its last try.
    reply = await login(gateway, "marcos", PASSWORD, source="127.0.0.20")
    assert reply.status == 200, reply.body
    assert (await login(gateway, "marcos", "x", source="127.0.0.21")).status == 401
    assert (await login(gateway, "marcos", PASSWORD, source="127.0.0.21")).status == 400
    assert len(scrypt_runs) == 13


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(
    aiohttp_client, emulator, store, scrypt_runs
) -> None:
    gateway = await aiohttp_client(create_app(auth_config(emulator, trusted_proxies=("127.0.0.1/32",)), store=store))
    attacker = (("X-Forwarded-For", b"10.9.9.9"),)
    for n in range(10):
        assert (await login(gateway, "marcos", f"g{n}", headers=attacker)).status == 401
    # A forged first hop does not help: the last address the trusted proxy saw is the one counted.
    forged = (("X-Forwarded-For", b"1.2.3.4, 10.9.9.9"),)
    assert (await login(gateway, "marcos", PASSWORD, headers=forged)).status == 400
    victim = (("X-Forwarded-For", b"10.1.1.1"),)
    assert (await login(gateway, "marcos", PASSWORD, headers=victim)).status == 200
    assert len(scrypt_runs) == 11


async def test_a_clients_concurrent_requests_share_one_check(gateway, emulator, scrypt_runs) -> None:
    """Fifty requests at once with a right password not yet seen: one scrypt, none refused."""
    inbox = "/api/direct_messages.json"
    replies = await asyncio.gather(
        *(raw_request(gateway, "GET", inbox, [basic("marcos", PASSWORD)]) for _ in range(50))
    )
    assert [r.status for r in replies] == [200] * 50
    assert len(scrypt_runs) == 1


def test_the_throttle_stays_bounded_however_many_names_and_addresses() -> None:
    throttle = LoginThrottle(3, 60, max_entries=100)
    for n in range(5000):
        throttle.charge(f"10.0.{n // 256}.{n % 256}", f"user{n}" + "x" * 1000)
    assert throttle.sizes == (100, 100)
    assert max(len(k) for k in throttle._usernames._entries) <= 128


def test_ipv6_addresses_are_counted_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key(None) == address_key("not an address") == "unknown"


# --- 2. scrypt on threads of its own -------------------------------------------------------------------


async def test_passwords_are_never_checked_on_the_loops_default_executor(
    aiohttp_client, emulator, store, scrypt_runs
) -> None:
    """aiohttp resolves upstream host names on the default executor: a password flood must not fill it."""
    gateway = await aiohttp_client(create_app(auth_config(emulator, max_failed_logins=100), store=store))
    flood = [login(gateway, "marcos", f"g{n}") for n in range(24)]
    assert [r.status for r in await asyncio.gather(*flood)] == [401] * 24
    assert len(scrypt_runs) == 24
    assert {name.rsplit("_", 1)[0] for name in scrypt_runs} == {"dmgw-scrypt"}
    assert len(set(scrypt_runs)) <= inbound.SCRYPT_WORKERS


async def test_the_password_threads_stop_with_the_app(aiohttp_client, emulator, store) -> None:
    gateway = await aiohttp_client(create_app(auth_config(emulator), store=store))
    assert (await login(gateway, "marcos", PASSWORD)).status == 200
    executor = gateway.server.app[AUTH_KEY]._scrypt
    await gateway.close()
    with pytest.raises(RuntimeError):
        executor.submit(time.time)


# --- 3. nonces ------------------------------------------------------------------------------------------


def sign(
    client: TestClient,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    where: str = "HEADER",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> tuple[str, list[tuple[str, bytes]], bytes]:
    """(target, headers, body) of a request signed as SEAN, as a legacy client signs it."""
    auth = ClientAuth(CONSUMER.key, CONSUMER.secret, SEAN.token, SEAN.secret, signature_type=where)
    original = auth.get_oauth_params

    def params(default_nonce: str, default_timestamp: str) -> Any:
        return original(nonce or default_nonce, str(timestamp) if timestamp is not None else default_timestamp)

    auth.get_oauth_params = params  # type: ignore[method-assign]
    base = str(client.make_url(""))
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    uri, headers, body = auth.sign(method, base + path, headers, urlencode(form) if form is not None else "")
    return uri[len(base) :], [(k, v.encode()) for k, v in headers.items()], body.encode() if body else b""


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    async with opened_store(request.param, request, tmp_path) as store:
        await add_credentials(store)
        yield store


async def stored_nonces(store: Store) -> dict[str, float]:
    """Every nonce the store holds (SQLite: its digest, in hex), with its expiry on the gateway's clock."""
    if isinstance(store, MemoryStore):
        return {nonce: until for (_, nonce), until in store._nonces.items()}
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as db:
            return {digest.hex(): until for digest, until in db.execute("SELECT digest, expires_at FROM nonce_digests")}
    assert isinstance(store, RedisStore)
    raw = store._client
    found = {}
    async for key in raw.scan_iter(match=f"{store.prefix}nonce:*"):
        found[key.decode().rsplit(":", 1)[1]] = float(await raw.get(key))
        assert await raw.pttl(key) > 0  # Redis drops it some time after it died, never before
    return found


async def test_a_send_replayed_at_the_edge_of_the_window_gets_through_once(aiohttp_client, emulator, any_store) -> None:
    """A signed new.json with timestamp = now - window, sent five times, then five more at once."""
    gateway = await aiohttp_client(create_app(auth_config(emulator), store=any_store))
    edge = float(int(time.time()) - 1)  # the gateway's clock, stopped at the last instant the timestamp is good
    gateway.server.app[AUTH_KEY]._clock = lambda: edge
    timestamp = int(edge) - WINDOW
    target, headers, _ = sign(gateway, "POST", f"{V1_NEW}?screen_name=s0c1alm3dia&text=once", timestamp=timestamp)
    replies = [await raw_request(gateway, "POST", target, headers) for _ in range(5)]
    replies += await asyncio.gather(*(raw_request(gateway, "POST", target, headers) for _ in range(5)))
    assert [r.status for r in replies] == [200] + [401] * 9, [r.body for r in replies]
    assert all(r.json() == V1_NOT_AUTHENTICATED[1] for r in replies[1:])
    sends = [path for method, path in upstream(emulator) if method == "POST"]
    assert sends == [f"/2/dm_conversations/with/{MICK_ID}/messages"]
    nonces = await stored_nonces(any_store)
    assert len(nonces) == 1
    assert next(iter(nonces.values())) > timestamp + WINDOW + 30  # kept well past the window, on the gateway's clock


async def test_the_gateway_spends_a_nonce_under_the_timestamp_its_request_signed(
    aiohttp_client, emulator, tmp_path
) -> None:
    """On SQLite, which keeps nonces apart by timestamp: the one the client signed, not the gateway's clock."""
    store = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        await add_credentials(store)
        gateway = await aiohttp_client(create_app(auth_config(emulator), store=store))
        timestamp = int(time.time()) - 100
        target, headers, _ = sign(
            gateway, "POST", f"{V1_NEW}?screen_name=s0c1alm3dia&text=once", timestamp=timestamp, nonce="n0nce"
        )
        assert (await raw_request(gateway, "POST", target, headers)).status == 200
        assert (await raw_request(gateway, "POST", target, headers)).status == 401
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT timestamp, digest FROM nonce_digests").fetchall() == [
                (timestamp, nonce_digest(f"oauth1:{CONSUMER.key}:{SEAN.token}", "n0nce"))
            ]
    finally:
        await store.close()


async def test_a_store_keeps_a_nonce_by_the_gateways_clock(any_store) -> None:
    """The gateway's clock an hour behind the store's host (Redis's clock): the nonce still lives its life."""
    now = time.time() - 3600
    assert await any_store.remember_nonce("s", "n", now + 10, now=now) is True
    assert await any_store.remember_nonce("s", "n", now + 99, now=now + 9.9) is False  # live: never replaced
    assert await any_store.remember_nonce("s", "n", now + 20, now=now + 10) is True  # dead on that clock
    assert await any_store.remember_nonce("s", "n", now + 30, now=now + 19.9) is False
    assert list((await stored_nonces(any_store)).values()) == [pytest.approx(now + 20)]


async def test_a_nonce_over_64_characters_is_refused_and_never_stored(gateway, emulator, store) -> None:
    for nonce, where in (("n" * 60_000, SIGNATURE_TYPE_BODY), ("n" * 65, "HEADER"), ("n" * 65, SIGNATURE_TYPE_QUERY)):
        target, headers, body = sign(gateway, "POST", V1_DESTROY, form={} if where == SIGNATURE_TYPE_BODY else None,
                                     where=where, nonce=nonce)  # fmt: skip
        reply = await raw_request(gateway, "POST", target, headers, body)
        assert (reply.status, reply.json()) == V1_NOT_AUTHENTICATED, where
    assert store._nonces == {}
    assert upstream(emulator) == []
    target, headers, _ = sign(gateway, "POST", V1_DESTROY, nonce="n" * 64)  # the longest taken
    assert (await raw_request(gateway, "POST", target, headers)).status == 200
    assert list(store._nonces) == [(f"oauth1:{CONSUMER.key}:{SEAN.token}", "n" * 64)]


# --- 4. credentials that are not what they claim --------------------------------------------------------


def _oauth_header(**values: str) -> bytes:
    fields = {
        "oauth_consumer_key": CONSUMER.key,
        "oauth_token": SEAN.token,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": "fresh-nonce",
        "oauth_signature": "c2lnbmF0dXJl",
        **values,
    }
    return b"OAuth " + b", ".join(f'{k}="{v}"'.encode() for k, v in fields.items())


HOSTILE = {
    "basic-non-ascii": b"Basic caf\xc3\xa9",
    "basic-undecodable-byte": b"Basic \xff\xfe",
    "basic-not-utf8": b"Basic " + base64.b64encode(b"\xff\xfe:password"),
    "basic-no-colon": b"Basic " + base64.b64encode(b"marcos"),
    "bearer-non-ascii": b"Bearer tok\xc3\xa9n",
    "bearer-undecodable-byte": b"Bearer tok\xffn",
    "oauth-non-ascii-key": _oauth_header() + b', caf\xc3\xa9="1"',
    "oauth-non-ascii-value": _oauth_header(oauth_nonce="caf\u00e9"),
    "oauth-undecodable-byte": _oauth_header() + b', x="\xff"',
    "oauth-duplicate-nonce": _oauth_header() + b', oauth_nonce="another"',
    "oauth-duplicate-realm": b'OAuth realm="a", realm="b", ' + _oauth_header()[6:],
    "oauth-bad-quoting": _oauth_header(oauth_nonce='a"b'),
    "oauth-unterminated-quote": _oauth_header() + b', x="open',
    "oauth-no-equals": _oauth_header() + b", lonely",
    "oauth-empty-value": _oauth_header() + b", oauth_version=",
}
UNREADABLE = {"v1.1": V1_BAD_AUTH, "statusnet": (401, statusnet("Could not authenticate you."))}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("dialect", ["v1.1", "statusnet"])
async def test_credentials_that_cannot_be_read_are_the_dialects_refusal(
    gateway, emulator, store, caplog, name, dialect
) -> None:
    caplog.set_level(logging.INFO)
    path = V1_DESTROY if dialect == "v1.1" else STATUSNET_DESTROY
    reply = await raw_request(gateway, "POST", path, [("Authorization", HOSTILE[name])])
    assert (reply.status, reply.json()) == UNREADABLE[dialect], reply.body
    if reply.status == 401:
        assert "www-authenticate" in reply.headers
    assert upstream(emulator) == []
    assert store._nonces == {}
    no_traceback(caplog)


@pytest.mark.parametrize("signature", ["%C3%A9", "%FF", "%00"])
@pytest.mark.parametrize("dialect", ["v1.1", "statusnet"])
async def test_a_non_ascii_signature_with_known_keys_is_a_mismatch(
    gateway, emulator, store, caplog, signature, dialect
) -> None:
    """compare_digest refuses str with non-ASCII: the signatures are compared as bytes."""
    caplog.set_level(logging.INFO)
    path = V1_DESTROY if dialect == "v1.1" else STATUSNET_DESTROY
    reply = await raw_request(gateway, "POST", path, [("Authorization", _oauth_header(oauth_signature=signature))])
    expected = V1_NOT_AUTHENTICATED if dialect == "v1.1" else (401, statusnet("Could not authenticate you."))
    assert (reply.status, reply.json()) == expected
    assert upstream(emulator) == []
    assert store._nonces == {}
    no_traceback(caplog)


async def test_undecodable_bytes_in_signed_query_parameters_are_refused(gateway, emulator, store, caplog) -> None:
    target, headers, _ = sign(gateway, "POST", V1_DESTROY)
    for extra in ("&x=%FF", "&caf%C3%A9=1", "&x=%ED%A0%80", "&oauth_nonce=%FF"):
        reply = await raw_request(gateway, "POST", target + extra, headers)
        assert reply.status in (400, 401) and reply.json()["errors"][0]["code"] in (32, 215), reply.body
    assert upstream(emulator) == []
    assert store._nonces == {}
    no_traceback(caplog)


# --- 5. only what the signature covers ------------------------------------------------------------------


def _multipart(fields: list[tuple[str, str]], boundary: str = "b0undary") -> tuple[list[tuple[str, bytes]], bytes]:
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields
        )
        + f"--{boundary}--\r\n".encode()
    )
    return [("Content-Type", f"multipart/form-data; boundary={boundary}".encode())], body


@pytest.mark.parametrize("where", ["HEADER", SIGNATURE_TYPE_QUERY])
async def test_an_unsigned_multipart_field_cannot_pick_the_recipient(gateway, emulator, store, where) -> None:
    """new.json signed for screen_name=s0c1alm3dia, with a multipart user_id naming someone else."""
    target, headers, _ = sign(gateway, "POST", f"{V1_NEW}?screen_name=s0c1alm3dia&text=hello", where=where)
    content_type, body = _multipart([("user_id", XDEV_ID)])
    reply = await raw_request(gateway, "POST", target, headers + content_type, body)
    assert (reply.status, reply.json()) == V1_BAD_REQUEST
    assert upstream(emulator) == []
    assert store._nonces == {}  # refused before the signature was even checked: the nonce is not spent
    # Signed the same way without the multipart body, the call goes to the recipient it signed for.
    reply = await raw_request(gateway, "POST", target, headers)
    assert reply.status == 200, reply.body
    assert reply.json()["recipient_id_str"] == MICK_ID
    assert [p for m, p in upstream(emulator) if m == "POST"] == [f"/2/dm_conversations/with/{MICK_ID}/messages"]


async def test_a_multipart_body_is_still_read_for_basic_callers(gateway, emulator) -> None:
    content_type, body = _multipart([("user", "s0c1alm3dia"), ("text", "by basic")])
    reply = await raw_request(
        gateway, "POST", "/api/direct_messages/new.json", [basic("marcos", PASSWORD), *content_type], body
    )
    assert reply.status == 200, reply.body
    assert [p for m, p in upstream(emulator) if m == "POST"] == [f"/2/dm_conversations/with/{MICK_ID}/messages"]


# --- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_failed_logins", 0, "auth.max_failed_logins must be between 1 and 1000, got 0"),
        ("max_failed_logins", "10", "auth.max_failed_logins must be an integer, got '10'"),
        ("failed_login_window", 0, "auth.failed_login_window must be between 1 and 86400 seconds, got 0"),
        ("failed_login_window", 1.5, "auth.failed_login_window must be an integer, got 1.5"),
    ],
)
def test_the_throttle_settings_are_checked(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={}, overrides={"auth": {key: value}})
    assert str(raised.value) == message


def test_the_throttle_settings_default_to_ten_in_a_minute() -> None:
    auth = load_config(env={}).auth
    assert (auth.max_failed_logins, auth.failed_login_window) == (10, 60)


def test_values_a_caller_signs_cannot_fill_the_gateways_memory() -> None:
    """Percent-encoding keeps what it wrote for short values only: long ones, which a caller chooses freely
    (form text, query values), are written each time and never kept."""
    from gateway.auth.upstream import ESCAPE_CACHE_LENGTH, _escape_short, escape

    _escape_short.cache_clear()
    long_values = [f"{'x' * ESCAPE_CACHE_LENGTH}{n} é" for n in range(50)]
    assert [escape(v) for v in long_values] == [v.replace(" ", "%20").replace("é", "%C3%A9") for v in long_values]
    assert _escape_short.cache_info().currsize == 0
    assert escape("a b") == "a%20b"
    assert _escape_short.cache_info().currsize == 1
