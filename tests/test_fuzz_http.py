"""Hypothesis against whole HTTP round trips: every legacy route, any path under any prefix, and the v2
pass-through, with hostile methods, paths, queries, headers, bodies and credentials, sent as raw bytes to
a gateway on a loopback port in front of a healthy emulator.

tests/test_parse_fuzz.py fuzzes the dialects' parsers alone and tests/test_hostile.py holds the named hostile
cases; here the whole stack answers. Whatever arrives, the gateway must:

- answer below 500 (the emulator is healthy, so any 5xx would be the gateway's own doing), and answer at all;
- log no traceback and nothing at ERROR;
- send only well-formed XML and JSON, every legacy error in its dialect's own shape, with a request id;
- ask upstream for nothing but ``/2/...`` paths, and count nothing against the upstream's circuit breaker.

Each test builds one gateway (on SQLite, with the sidecar on, Basic users and an OAuth 1.0a consumer and
token in its store) and drives every example through it over a fresh connection; calls that once reached a
500 or a traceback are explicit examples, tried on every run. Request heads aiohttp's
parser refuses have a test of their own. The last fuzz test has the emulator answer any JSON document with
any status: a v2 answer the gateway cannot use is a 502 (or 503, 504) in the dialect's shape, never a 500,
and the pass-through relays it as it came.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import string
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token, hash_password
from gateway.config import load_config
from gateway.emulator import EmulatorServer, FaultRule
from gateway.keys import BREAKERS_KEY, SERVICE_KEY
from gateway.passthrough import FOLLOW_UPS_KEY
from gateway.router import DialectRouter
from gateway.upstream.resilience import BreakerState
from tests.conftest import (
    ENTITIES_ID,
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEAN_TOKEN,
    SEED_002_ID,
    SEED_003_JSON_ID,
    SEED_003_XML_ID,
    XDEV_TOKEN,
    GatewayFactory,
    store_of,
)

CONSUMER = Consumer("emulator-consumer", "emulator-consumer-secret")
TOKEN = Token("38895958-emulatortoken", "emulator-consumer", "emulator-token-secret-sean")
PASSWORD = "correct horse battery staple"
FORM = "application/x-www-form-urlencoded"

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the gateway, one per test ------------------------------------------------------------------------


@dataclass
class Fuzzed:
    """A gateway on a real loopback port, its emulator, and the log records of the current example."""

    client: TestClient
    emulator: EmulatorServer
    records: list[logging.LogRecord] = field(default_factory=list, repr=False)

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def settle(self) -> None:
        """Wait for what the last answer left running: deletion records and pass-through follow-ups."""
        app = self.client.server.app
        await app[SERVICE_KEY].drain()
        await asyncio.gather(*app[FOLLOW_UPS_KEY], return_exceptions=True)


class _Collector(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)


@contextmanager
def collected(records: list[logging.LogRecord]) -> Iterator[None]:
    handler = _Collector(records)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


async def _fuzzed(make_gateway: GatewayFactory, emulator: EmulatorServer, **sections: Any) -> AsyncIterator[Fuzzed]:
    # One failure opens the breaker, so a single failure the gateway counts shows; it is half-open again
    # by the next example.
    upstream = {"oauth2_client_id": "emulator-client", "breaker_failures": 1, "breaker_reset": 0.01}
    upstream.update(sections.pop("upstream", {}))
    client = await make_gateway(upstream=upstream, **sections)
    store = store_of(client)
    await store.put_consumer(CONSUMER)
    await store.put_token(TOKEN)
    await store.put_user(BasicUser("marcos", hash_password(PASSWORD), OAuth2Grant(MARCOS_TOKEN)))
    await store.put_user(
        BasicUser(
            "sean",
            hash_password(PASSWORD),
            OAuth2Grant("emulator-oauth2-access-theSeanCook", "emulator-oauth2-refresh-theSeanCook", time.time() - 10),
        )
    )
    fuzzed = Fuzzed(client, emulator)
    with collected(fuzzed.records):
        yield fuzzed


@pytest.fixture
async def fuzzed(make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Any) -> AsyncIterator[Fuzzed]:
    """The gateway on its default store, SQLite, with the sidecar on: a call without credentials acts."""
    async for value in _fuzzed(make_gateway, emulator, store_url=f"sqlite:///{tmp_path}/fuzz.sqlite3"):
        yield value


# --- raw HTTP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lowercased; the last of repeated headers
    body: bytes


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def parse_reply(raw: bytes, method: str) -> Reply | None:
    """The answer on a connection the server closed after it, or None when there was none."""
    while raw.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue) before the final one
        raw = raw.partition(b"\r\n\r\n")[2]
    if not raw:
        return None
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"an incomplete answer: {raw[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if method == "HEAD" or status in ("204", "304"):
        body = b""
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        assert len(rest) >= length, f"an answer cut short: {raw[:300]!r}"
        body = rest[:length]
    else:
        body = rest
    return Reply(int(status), headers, body)


async def exchange(port: int, data: bytes, method: str, *, hang_up: bool = False) -> Reply | None:
    """Send ``data`` on a new connection and read until the server closes it. ``hang_up`` closes our side
    once ``data`` is sent (a body shorter than its Content-Length is then never completed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if hang_up:
            writer.write_eof()
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=15)
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
    return parse_reply(raw, method)


# --- credentials ------------------------------------------------------------------------------------------


def _pct(value: str) -> str:
    return quote(value, safe="~")


def _encode_pairs(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_pct(k)}={_pct(v)}" for k, v in pairs)


def rfc5849_signature(method: str, url: str, params: list[tuple[str, str]], keys: tuple[str, str]) -> str:
    """HMAC-SHA1 over RFC 5849's base string, written from the RFC (section 3.4), not from the gateway."""
    pairs = sorted((_pct(k), _pct(v)) for k, v in params if k != "oauth_signature")
    base = "&".join((method.upper(), _pct(url), _pct("&".join(f"{k}={v}" for k, v in pairs))))
    key = f"{_pct(keys[0])}&{_pct(keys[1])}".encode()
    return base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()


@dataclass(frozen=True)
class OAuthPlan:
    """An OAuth 1.0a credential to build once the rest of the request is known."""

    where: str  # header, query or form (form only when the body is form-urlencoded)
    signature: str | None  # None: the right one
    overrides: tuple[tuple[str, str], ...] = ()  # replace or add oauth_* values (empty value: leave out)
    secrets: tuple[str, str] = (CONSUMER.secret, TOKEN.secret)

    def params(self) -> list[tuple[str, str]]:
        values = {
            "oauth_consumer_key": CONSUMER.key,
            "oauth_token": TOKEN.token,
            "oauth_signature_method": "HMAC-SHA1",
            "oauth_timestamp": str(int(time.time())),
            "oauth_nonce": secrets.token_hex(8),
            "oauth_version": "1.0",
        }
        values.update(self.overrides)
        return [(k, v) for k, v in values.items() if v]


@dataclass(frozen=True)
class Credential:
    """What the Authorization header (or the oauth_* parameters) carry: raw header bytes, or an OAuth plan."""

    header: bytes | None = None
    oauth: OAuthPlan | None = None


_GARBAGE_BYTES = st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b)
_KNOWN_TOKENS = st.sampled_from([SEAN_TOKEN, MICK_TOKEN, MARCOS_TOKEN, XDEV_TOKEN])


def _basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


credentials = st.one_of(
    st.just(Credential()),
    # Bearer: seeded tokens, unknown ones, odd spacing and case, non-ASCII bytes.
    _KNOWN_TOKENS.map(lambda t: Credential(b"Bearer " + t.encode())),
    st.text(string.ascii_letters + string.digits + "-._~+/=", min_size=1, max_size=40).map(
        lambda t: Credential(b"Bearer " + t.encode())
    ),
    st.sampled_from([b"Bearer", b"Bearer ", b"bearer  a b", b"BEARER x", b"Bearer\tx"]).map(Credential),
    _GARBAGE_BYTES.map(lambda b: Credential(b"Bearer " + b)),
    # Basic: right and wrong passwords, unknown users, no colon, base64 of non-UTF-8, not base64 at all.
    st.sampled_from([b"marcos:", b"sean:"]).map(lambda user: Credential(_basic(user + PASSWORD.encode()))),
    st.tuples(st.sampled_from(["marcos", "sean", "nobody", ""]), st.text(max_size=12)).map(
        lambda up: Credential(_basic(f"{up[0]}:{up[1]}".encode()))
    ),
    st.binary(max_size=20).map(lambda b: Credential(_basic(b))),
    _GARBAGE_BYTES.map(lambda b: Credential(b"Basic " + b)),
    # Other schemes and plain garbage.
    st.sampled_from([b"Digest x", b"Negotiate", b"x", b" ", b"Basic", b"OAuth"]).map(Credential),
    _GARBAGE_BYTES.map(Credential),
    # OAuth 1.0a: header garbage, signed right, signed wrong, odd or missing oauth_* values.
    _GARBAGE_BYTES.map(lambda b: Credential(b"OAuth " + b)),
    st.builds(
        OAuthPlan,
        where=st.sampled_from(["header", "query", "form"]),
        signature=st.one_of(
            st.none(),
            st.binary(min_size=20, max_size=20).map(lambda b: base64.b64encode(b).decode()),
            st.text(max_size=30),
        ),
        overrides=st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "oauth_consumer_key",
                        "oauth_token",
                        "oauth_signature_method",
                        "oauth_timestamp",
                        "oauth_nonce",
                        "oauth_version",
                        "oauth_callback",
                        "oauth_x",
                    ]
                ),
                st.one_of(
                    st.text(max_size=20),
                    st.sampled_from(["", "0", "-1", "99999999999999", "1e9", "HMAC-SHA256", "PLAINTEXT", "2.0"]),
                    st.integers(min_value=65, max_value=70_000).map(lambda n: "n" * n),  # over-long nonces
                ),
            ),
            max_size=2,
        ).map(tuple),
    ).map(lambda plan: Credential(oauth=plan)),
)

# --- request parts ------------------------------------------------------------------------------------------

PARAM_NAMES = (
    "id", "count", "page", "since_id", "max_id", "cursor", "text", "user_id", "screen_name", "user",
    "include_entities", "suppress_response_codes", "oauth_token", "oauth_signature", "oauth_consumer_key",
)  # fmt: skip
SEEDED_IDS = (SEED_002_ID, SEED_003_XML_ID, SEED_003_JSON_ID, ENTITIES_ID, *PLAIN_IDS, "38895958", "776627022")

values = st.one_of(
    st.sampled_from(SEEDED_IDS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e3",
            "٣٩",
            "３９",
            " 5",
            "5 ",
            "99999999999999999999",
            "9223372036854775808",
            "true",
            "T",
            "false",
            "@theSeanCook",
            "theSeanCook",
            "s0c1alm3dia",
            "a" * 300,
            "\x00",
            "..%2F2%2Fusers",
        ]
    ),
    st.text(max_size=30),
)
params = st.lists(st.tuples(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=10)), values), max_size=6)


def _multipart(pairs: list[tuple[str, str]], boundary: str) -> bytes:
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{quote(k)}"\r\n\r\n'.encode() + v.encode() + b"\r\n"
        for k, v in pairs
    )
    return parts + f"--{boundary}--\r\n".encode()


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=12)
)
_json_keys = st.sampled_from(
    ["event", "type", "message_create", "target", "recipient_id", "message_data", "text", "data", "id"]
) | st.text(max_size=8)
json_documents = st.one_of(
    st.builds(
        lambda kind, recipient, text: {
            "event": {
                "type": kind,
                "message_create": {"target": {"recipient_id": recipient}, "message_data": {"text": text}},
            }
        },
        st.sampled_from(["message_create", "Message_Create", ""]),
        values | st.integers(),
        values | st.none() | st.integers(),
    ),
    st.recursive(
        _json_leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_keys, inner, max_size=4),
        max_leaves=10,
    ),
)


@dataclass(frozen=True)
class Body:
    """A body and its Content-Type; ``form`` are the parameters it carries when form-urlencoded."""

    data: bytes = b""
    content_type: str | None = None
    form: tuple[tuple[str, str], ...] | None = None

    def with_form(self, extra: list[tuple[str, str]]) -> Body:
        form = [*(self.form or ()), *extra]
        return Body(_encode_pairs(form).encode(), self.content_type or FORM, tuple(form))


ODD_CONTENT_TYPES = [
    "", "text/plain", "application/json", "application/xml", "*/*", "multipart/form-data",
    "multipart/form-data; boundary=", "multipart/mixed; boundary=xx", f"{FORM}; charset=klingon",
    f"{FORM}; charset=utf-16", f"{FORM}; charset=latin-1", "application/x-www-form-urlencoded;;;", "a/b; c=\"d",
]  # fmt: skip

bodies = st.one_of(
    st.just(Body()),
    params.map(lambda p: Body(_encode_pairs(p).encode(), FORM, tuple(p))),
    st.tuples(params, st.sampled_from(["xx", "----WebKitFormBoundary7MA4YWxk", "a b"])).map(
        lambda pb: Body(_multipart(pb[0], pb[1]), f"multipart/form-data; boundary={pb[1]}")
    ),
    json_documents.map(lambda d: Body(json.dumps(d).encode(), "application/json")),
    st.tuples(st.binary(max_size=200), st.sampled_from(ODD_CONTENT_TYPES)).map(lambda bc: Body(bc[0], bc[1])),
    st.sampled_from([b"id=\xff\xfe", b"text=caf\xe9&user_id=776627022", b"%", b"id=%zz", b"=&=&"]).map(
        lambda b: Body(b, FORM)
    ),
)

_HEADER_VALUE = st.one_of(
    st.sampled_from(["gzip", "deflate", "br", "identity", "100-continue", "close"]),
    st.text(string.ascii_letters + string.digits + string.punctuation + " \t", max_size=40),
    st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b),
)
HEADER_NAMES = [
    "X-Request-Id", "Content-Type", "Accept", "Accept-Encoding", "X-Forwarded-For", "X-Forwarded-Host",
    "X-Forwarded-Proto", "Origin", "Cookie", "Connection", "Content-Encoding", "Range", "Expect",
]  # fmt: skip


def header_lists(names: list[str]) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    return st.lists(st.tuples(st.sampled_from(names), _HEADER_VALUE), max_size=3)


extra_headers = header_lists(HEADER_NAMES)
# On a path no route takes (or a method its route does not), aiohttp answers an Expect other than
# 100-continue itself, before the gateway sees the request, as it does a head its parser refuses: that
# answer is out of the gateway's reach.
headers_for_any_path = header_lists(HEADER_NAMES[:-1])


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # percent-encoded, no query
    query: tuple[tuple[str, str], ...]
    body: Body
    credential: Credential
    headers: tuple[tuple[str, str | bytes], ...] = ()
    hang_up: bool = False  # announce 10 bytes more than the body has, and close our side after it
    absolute: str | None = None  # a scheme and authority to put in front of the path (absolute-form target)
    raw_query: str = ""  # appended to the target as it is

    def wire(self, host: str) -> bytes:
        query = list(self.query)
        body = self.body
        lines: list[bytes] = []
        if self.credential.header is not None:
            lines.append(b"Authorization: " + self.credential.header)
        plan = self.credential.oauth
        if plan is not None:
            oauth = plan.params()
            where = plan.where if plan.where != "form" or body.form is not None else "header"
            if where == "form":
                body = body.with_form(oauth)
            elif where == "query":
                query += oauth
            # What RFC 5849 signs: the oauth_* values, the query and a form-urlencoded body.
            signed = query + list(body.form or ()) + (oauth if where == "header" else [])
            signature = plan.signature
            if signature is None:
                signature = rfc5849_signature(self.method, f"http://{host}{self.path}", signed, plan.secrets)
            if where == "header":
                fields = ", ".join(f'{_pct(k)}="{_pct(v)}"' for k, v in [*oauth, ("oauth_signature", signature)])
                lines.append(b"Authorization: OAuth " + fields.encode())
            elif where == "query":
                query.append(("oauth_signature", signature))
            else:
                body = body.with_form([("oauth_signature", signature)])
        query_string = "&".join(part for part in (_encode_pairs(query), self.raw_query) if part)
        target = self.path + ("?" + query_string if query_string else "")
        if self.absolute is not None:
            target = self.absolute + target
        if body.content_type is not None:
            lines.append(b"Content-Type: " + body.content_type.encode())
        for name, value in self.headers:
            lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
        length = len(body.data) + (10 if self.hang_up else 0)
        if body.data or self.hang_up or self.method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d" % length)
        head = f"{self.method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
        return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body.data


# --- the oracles -----------------------------------------------------------------------------------------

_TWITTER_PREFIXES = ("/1.1",)
_STATUSNET_PREFIXES = ("/1", "/api")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def dialect_of(path: str) -> str:
    """Whose error shape a path answers in: the mounts' prefixes, v2 under /2/, v1.1 anywhere else."""
    if path.startswith("/2/"):
        return "v2"
    if _under(path, _STATUSNET_PREFIXES):
        return "statusnet"
    return "twitter"


def _legacy_errors(errors: Any) -> bool:
    """Whether ``errors`` is v1.1's list of ``{"code", "message"}`` objects (upstream may say anything there)."""
    return (
        bool(errors)
        and isinstance(errors, list)
        and all(isinstance(e, dict) and set(e) == {"code", "message"} for e in errors)
    )


def check_error_shape(reply: Reply, dialect: str) -> None:
    content_type = reply.headers.get("content-type", "")
    if dialect == "v2":
        # Upstream's own answers pass through as they came; the gateway's own are problem+json. Neither is
        # ever a legacy error body.
        if "json" in content_type:
            document = json.loads(reply.body)
            assert not (
                isinstance(document, dict)
                and ({"error", "request"} <= set(document) or (_legacy_errors(document.get("errors"))))
            ), document
        return
    if "xml" in content_type:
        root = ET.fromstring(reply.body)
        if dialect == "twitter":
            assert root.tag == "errors" and len(root) >= 1, reply.body
            assert all(e.tag == "error" and (e.get("code") or "").isdigit() and e.text for e in root), reply.body
        else:
            assert root.tag == "hash" and [c.tag for c in root] == ["error", "request"], reply.body
        return
    assert content_type.startswith("application/json"), (reply.status, content_type, reply.body[:300])
    document = json.loads(reply.body)
    if dialect == "twitter":
        assert list(document) == ["errors"] and document["errors"], document
        for error in document["errors"]:
            assert isinstance(error["code"], int) and isinstance(error["message"], str) and error["message"], document
    else:
        assert list(document) == ["error", "request"] and isinstance(document["error"], str), document


def check_reply(fuzzed: Fuzzed, call: Call, reply: Reply | None, *, upstream_status: int | None = None) -> None:
    """Every oracle, for one answered (or unanswered) call. ``upstream_status`` is what the emulator was told
    to answer, when it was: the pass-through relays it, a legacy call may then be a 502, 503 or 504."""
    may_fail_upstream = upstream_status is not None
    problems = [r for r in fuzzed.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, "\n".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in problems)
    requested = [r.path for r in fuzzed.emulator.state.requests]
    assert all(p.startswith("/2/") for p in requested), requested
    if not may_fail_upstream:
        breaker = fuzzed.client.server.app[BREAKERS_KEY].for_url(fuzzed.emulator.url)
        assert breaker.state is BreakerState.CLOSED, "a failure was counted against the upstream"
    if call.hang_up:
        return  # the client went away: there is no one to answer
    assert reply is not None, "no answer at all"
    if dialect_of(unquote(call.path)) == "v2":
        failed_upstream = reply.status == upstream_status
    else:
        failed_upstream = may_fail_upstream and reply.status in (502, 503, 504)
    assert reply.status < 500 or failed_upstream, (reply.status, reply.body[:500])
    assert reply.headers.get("x-request-id"), reply.headers
    content_type = reply.headers.get("content-type", "")
    if reply.body:
        if "xml" in content_type:
            ET.fromstring(reply.body)
        elif "json" in content_type:
            json.loads(reply.body)
    if reply.status >= 400 and call.method != "HEAD":
        check_error_shape(reply, dialect_of(unquote(call.path)))


async def start_example(fuzzed: Fuzzed) -> None:
    """Forget the last example: its upstream requests, its log records and, had it opened the breaker (and
    failed for it), the open breaker."""
    fuzzed.emulator.state.requests.clear()
    fuzzed.records.clear()
    breaker = fuzzed.client.server.app[BREAKERS_KEY].for_url(fuzzed.emulator.url)
    if breaker.state is not BreakerState.CLOSED:
        await asyncio.sleep(breaker.retry_after())
        breaker.record(True, breaker.allow())


async def run_call(fuzzed: Fuzzed, call: Call, **oracles: Any) -> Reply | None:
    await start_example(fuzzed)
    reply = await exchange(fuzzed.port, call.wire(fuzzed.host), call.method, hang_up=call.hang_up)
    await fuzzed.settle()
    if call.hang_up:
        await asyncio.sleep(0.01)  # the handler notices the lost connection only on its next read
    check_reply(fuzzed, call, reply, **oracles)
    return reply


# --- strategies of whole calls ----------------------------------------------------------------------------

METHODS = ["GET", "POST", "DELETE", "PUT", "HEAD", "PATCH"]
MOUNTS = DialectRouter(load_config(env={})).mounts
ROUTES = sorted({(prefix + spec.path, spec.methods) for prefix, _, spec in MOUNTS})

# Sent as they are: escapes that decode to no UTF-8 or are no escapes at all.
RAW_ESCAPES = ["%ff", "%FF%FE", "%C3", "%zz", "%", "%00", "%2", "%E2%82", "+", ";", "%3B", "%25"]
id_segments = st.one_of(
    st.sampled_from(SEEDED_IDS), values.map(lambda v: quote(v, safe="")), st.sampled_from(RAW_ESCAPES)
)


raw_queries = st.one_of(
    st.just(""),
    st.lists(st.sampled_from([*RAW_ESCAPES, "id=", "&", "=", "id", "count=%ff", "id=39&id", "?"]), max_size=4).map(
        "".join
    ),
)


@st.composite
def route_paths(draw: st.DrawFn) -> tuple[str, str, bool]:
    """A legacy route's path with its {id} and {fmt} filled in, a method, and whether the route takes it."""
    template, methods = draw(st.sampled_from(ROUTES))
    path = template.replace("{fmt:xml|json}", draw(st.sampled_from(["xml", "json"])))
    segment = draw(id_segments) if "{id}" in path else "-"
    path = path.replace("{id}", segment)
    method = draw(st.sampled_from(methods) | st.sampled_from(METHODS))
    routed = bool(segment) and (method in methods or (method == "HEAD" and "GET" in methods))
    return method, path, routed


@st.composite
def legacy_calls(draw: st.DrawFn) -> Call:
    method, path, routed = draw(route_paths())
    return Call(
        method=method,
        path=path,
        query=tuple(draw(params)),
        body=draw(bodies),
        credential=draw(credentials),
        headers=tuple(draw(extra_headers if routed else headers_for_any_path)),
        raw_query=draw(raw_queries),
        hang_up=draw(st.integers(0, 9)) == 9,
    )


_SEGMENT = st.one_of(
    st.sampled_from(
        [
            "direct_messages",
            "destroy",
            "new",
            "sent",
            "show",
            "events",
            "list",
            "dm_events",
            "users",
            "me",
            "by",
            "username",
            "dm_conversations",
            "with",
            "messages",
            "oauth2",
            "token",
            "..",
            ".",
            "",
            "%2e%2e",
            "%2F",
            "_emulator",
            "reset",
            "1.1",
            "api",
            "2",
        ]
    ),
    st.sampled_from(SEEDED_IDS),
    st.sampled_from(RAW_ESCAPES),
    st.text(max_size=12).map(lambda t: quote(t, safe="")),
)


@st.composite
def any_paths(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "/1.1", "/1", "/api", "/2", "/1.1/direct_messages", "/api/direct_messages"]))
    segments = draw(st.lists(_SEGMENT, max_size=4))
    extension = draw(st.sampled_from(["", ".json", ".xml", ".html", ".JSON", ".json.xml", "."]))
    return "/" + (prefix + "/" + "/".join(segments)).strip("/") + extension


@st.composite
def calls_to_any_path(draw: st.DrawFn) -> Call:
    return Call(
        method=draw(st.sampled_from(METHODS)),
        path=draw(any_paths()),
        query=tuple(draw(params)),
        raw_query=draw(raw_queries),
        body=draw(st.just(Body()) | bodies),
        credential=draw(st.just(Credential()) | credentials),
        headers=tuple(draw(headers_for_any_path)),
    )


V2_PATHS = [
    "/2/dm_events", "/2/dm_events/{id}", "/2/users", "/2/users/me", "/2/users/{id}", "/2/users/by/username/{name}",
    "/2/dm_conversations/with/{id}/messages", "/2/dm_conversations/{id}/messages", "/2/dm_conversations",
    "/2/oauth2/token", "/2/tweets", "/2/", "/2/{id}/../../_emulator/reset", "/2/%2e%2e/_emulator/reset",
]  # fmt: skip
V2_QUERY_NAMES = ("ids", "usernames", "dm_event.fields", "expansions", "user.fields", "max_results",
                  "pagination_token", "event_types", "grant_type", "refresh_token", "client_id")  # fmt: skip


@st.composite
def passthrough_calls(draw: st.DrawFn) -> Call:
    path = draw(st.sampled_from(V2_PATHS))
    path = path.replace("{id}", draw(id_segments)).replace("{name}", draw(id_segments | st.just("theSeanCook")))
    method = draw(st.sampled_from([*METHODS, "OPTIONS"]))
    names = st.sampled_from(V2_QUERY_NAMES) | st.sampled_from(PARAM_NAMES) | st.text(max_size=8)
    query = draw(st.lists(st.tuples(names, values | st.sampled_from(["sender_id,text", "1,2,3", "50"])), max_size=4))
    body = draw(
        bodies
        | st.builds(
            lambda text, participant: Body(
                json.dumps({"text": text, "participant_id": participant}).encode(), "application/json"
            ),
            values,
            values,
        )
    )
    absolute = draw(
        st.none()
        | st.none()
        | st.none()
        | st.sampled_from(["http://127.0.0.1", "x://h", "pany://evil", "http://example.invalid:1"])
    )
    return Call(
        method=method,
        path=path,
        query=tuple(query),
        raw_query=draw(raw_queries),
        body=body,
        credential=draw(credentials),
        headers=tuple(draw(extra_headers)),
        hang_up=draw(st.integers(0, 14)) == 14,
        absolute=absolute,
    )


# --- the tests ---------------------------------------------------------------------------------------------


# Hostile calls that have reached a 500 or a traceback, tried on every run whatever hypothesis draws.
_DESTROY = "/1.1/direct_messages/destroy.json"
_DESTROY_FORM = Body().with_form([("id", PLAIN_IDS[0])])
_MULTIPART = Body(_multipart([("id", PLAIN_IDS[0]), ("user_id", "1")], "xx"), "multipart/form-data; boundary=xx")
LEGACY_EXAMPLES = [
    Call("POST", _DESTROY, (), _DESTROY_FORM, Credential(b"Basic caf\xc3\xa9")),
    Call("POST", _DESTROY, (), _DESTROY_FORM, Credential(b"Basic " + base64.b64encode(b"\xff:\xfe"))),
    Call("POST", _DESTROY, (), _DESTROY_FORM, Credential(b"Bearer t\xe9")),
    Call("POST", _DESTROY, (), _DESTROY_FORM, Credential(oauth=OAuthPlan("header", "\u00e9"))),
    Call("POST", _DESTROY, (), _MULTIPART, Credential(oauth=OAuthPlan("header", None))),
    Call("POST", _DESTROY, (), _DESTROY_FORM,
         Credential(oauth=OAuthPlan("form", None, (("oauth_nonce", "n" * 60_000),)))),
    Call("POST", _DESTROY, (), _DESTROY_FORM, Credential(), hang_up=True),
    Call("POST", "/1.1/direct_messages/events/new.json", (), Body(b'{"event": {', "application/json"), Credential(),
         hang_up=True),
]  # fmt: skip
PASSTHROUGH_EXAMPLES = [
    Call("GET", "/2/users/me", (), Body(), Credential(), absolute="x://h"),
    Call("GET", "/2/users/me", (), Body(), Credential(), absolute="http://127.0.0.1"),
    Call("GET", "/2/users/me", (), Body(), Credential(), absolute="pany://evil"),
    Call("POST", "/2/dm_conversations/with/776627022/messages", (), Body(b'{"text": "hi"}', "application/json"),
         Credential(b"Bearer " + SEAN_TOKEN.encode()), hang_up=True),
]  # fmt: skip


def with_examples(calls: list[Call]) -> Any:
    def decorate(test: Any) -> Any:
        for call in reversed(calls):
            test = example(call=call)(test)
        return test

    return decorate


@SETTINGS
@with_examples(LEGACY_EXAMPLES)
@given(call=legacy_calls())
async def test_any_call_to_a_legacy_route(fuzzed: Fuzzed, call: Call) -> None:
    await run_call(fuzzed, call)


@SETTINGS
@given(call=calls_to_any_path())
async def test_any_path_under_any_prefix(fuzzed: Fuzzed, call: Call) -> None:
    await run_call(fuzzed, call)


@SETTINGS
@with_examples(PASSTHROUGH_EXAMPLES)
@given(call=passthrough_calls())
async def test_any_call_through_the_v2_pass_through(fuzzed: Fuzzed, call: Call) -> None:
    await run_call(fuzzed, call)


# --- request heads aiohttp's own parser refuses --------------------------------------------------------------

SECRET_BEARER = "Bearer secret-token-never-echoed"


@st.composite
def malformed_heads(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """A request head the HTTP parser refuses, carrying a credential that must show up nowhere: its method,
    the path its request line names (empty when the line itself is broken) and its bytes."""
    method, path, _ = draw(route_paths())
    call = Call(method, path, (), Body(), Credential(SECRET_BEARER.encode()))
    lines = call.wire("127.0.0.1").partition(b"\r\n\r\n")[0].split(b"\r\n")
    flaw = draw(st.sampled_from(["bare-lf", "long-header", "control-char", "duplicate", "space-in-target", "fold"]))
    if flaw == "bare-lf":
        return method, path, b"\n".join(lines) + b"\n\n"
    if flaw == "long-header":
        lines.append(b"X-Pad: " + b"p" * draw(st.integers(8200, 20_000)))
    elif flaw == "control-char":
        lines.append(b"X-Odd: a" + draw(st.sampled_from([b"\x00", b"\x01", b"\x7f", b"\x1b", b"\x0b"])) + b"b")
    elif flaw == "duplicate":
        name = draw(st.sampled_from([b"Content-Type", b"Content-Length", b"Host", b"Transfer-Encoding"]))
        value = {b"Content-Length": b"0", b"Transfer-Encoding": b"chunked"}.get(name, b"text/plain")
        lines += [name + b": " + value, name + b": " + value]
    elif flaw == "space-in-target":
        verb, target, version = lines[0].split(b" ")
        lines[0] = b" ".join([verb, target + b" x", version])
        path = ""
    else:
        lines.insert(2, b"X-Folded: a\r\n b")
    return method, path, b"\r\n".join(lines) + b"\r\n\r\n"


@SETTINGS
@given(case=malformed_heads())
async def test_a_head_the_parser_refuses_is_answered_without_secrets_or_traceback(
    fuzzed: Fuzzed, case: tuple[str, str, bytes]
) -> None:
    method, path, data = case
    await start_example(fuzzed)
    reply = await exchange(fuzzed.port, data, method)
    await fuzzed.settle()
    secret = SECRET_BEARER.split()[1]
    assert not any(secret in logging.Formatter().format(record) for record in fuzzed.records)
    problems = [r for r in fuzzed.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, "\n".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in problems)
    assert reply is not None and 400 <= reply.status < 500, reply
    assert secret.encode() not in reply.body
    if path and method != "HEAD":  # an answer to HEAD has no body
        check_error_shape(reply, dialect_of(unquote(path)))
    assert fuzzed.emulator.state.requests == []


# --- whatever v2 answers -------------------------------------------------------------------------------------

V2_ENDPOINTS = [
    ("GET", "/2/dm_events/*"), ("DELETE", "/2/dm_events/*"), ("GET", "/2/dm_events"), ("GET", "/2/users"),
    ("GET", "/2/users/me"), ("GET", "/2/users/by/username/*"), ("GET", "/2/users/*"),
    ("POST", "/2/dm_conversations/with/*/messages"), ("*", "*"),
]  # fmt: skip
V1_DESTROY = Call("POST", "/1.1/direct_messages/destroy.json", (("id", PLAIN_IDS[0]),), Body(), Credential())
GOOD_CALLS = [
    Call("GET", "/1.1/direct_messages/events/show.json", (("id", ENTITIES_ID),), Body(), Credential()),
    Call("GET", f"/1.1/direct_messages/show/{PLAIN_IDS[0]}.json", (), Body(), Credential()),
    Call("GET", "/1.1/direct_messages.json", (("count", "3"),), Body(), Credential()),
    Call("GET", "/1.1/direct_messages/events/list.json", (), Body(), Credential()),
    Call("GET", "/api/direct_messages/sent.xml", (("since_id", "1"),), Body(), Credential()),
    V1_DESTROY,
    Call("DELETE", "/1.1/direct_messages/events/destroy.json", (("id", PLAIN_IDS[1]),), Body(), Credential()),
    Call("POST", f"/1/direct_messages/destroy/{PLAIN_IDS[0]}.xml", (), Body(), Credential()),
    Call("POST", "/1.1/direct_messages/new.json", (),
         Body().with_form([("text", "hi"), ("screen_name", "s0c1alm3dia")]), Credential()),
    Call("POST", "/api/direct_messages/new.xml", (), Body().with_form([("text", "hi"), ("user", "776627022")]),
         Credential()),
    Call(
        "POST",
        "/1.1/direct_messages/events/new.json",
        (),
        Body(json.dumps({"event": {"type": "message_create", "message_create": {
            "target": {"recipient_id": "776627022"}, "message_data": {"text": "hi"}}}}).encode(), "application/json"),
        Credential(),
    ),
    Call("GET", "/2/dm_events", (("dm_event.fields", "id,text,created_at,sender_id,dm_conversation_id,entities"),),
         Body(), Credential(b"Bearer " + SEAN_TOKEN.encode())),
    Call("GET", "/2/users/me", (), Body(), Credential(b"Bearer " + SEAN_TOKEN.encode())),
    Call("POST", "/2/dm_conversations/with/776627022/messages", (),
         Body(b'{"text": "hi"}', "application/json"), Credential(b"Bearer " + SEAN_TOKEN.encode())),
]  # fmt: skip

_V2_KEYS = st.sampled_from(
    ["data", "errors", "includes", "users", "meta", "id", "text", "event_type", "sender_id", "dm_conversation_id",
     "created_at", "entities", "participant_ids", "username", "name", "dm_event_id", "deleted", "title", "detail",
     "type", "status", "result_count", "next_token", "previous_token", "receives_your_dm", "protected"]
)  # fmt: skip
_V2_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(SEEDED_IDS),
    st.sampled_from(["MessageCreate", "ParticipantsJoin", "2023-01-02T03:04:05.000Z", "not a date", ""]),
    st.text(max_size=10),
)
v2_documents = st.recursive(
    _V2_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_V2_KEYS, inner, max_size=5),
    max_leaves=15,
).map(lambda document: document if isinstance(document, dict) else {"data": document})


@pytest.fixture
async def fuzzed_upstream(
    make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Any
) -> AsyncIterator[Fuzzed]:
    """As ``fuzzed``, with the breaker off: here upstream does fail, on purpose."""
    async for value in _fuzzed(
        make_gateway, emulator, store_url=f"sqlite:///{tmp_path}/fuzz.sqlite3", upstream={"breaker_failures": 0}
    ):
        yield value


@SETTINGS
@example(V1_DESTROY, ("DELETE", "/2/dm_events/*"), 200, {"data": None}, None)
@example(GOOD_CALLS[-3], ("GET", "/2/dm_events"), 400, {"errors": True}, None)  # relayed as it came
@given(
    call=st.sampled_from(GOOD_CALLS),
    endpoint=st.sampled_from(V2_ENDPOINTS),
    status=st.sampled_from([200, 201, 204, 400, 401, 403, 404, 409, 429, 500, 503]),
    document=v2_documents,
    times=st.none() | st.just(1),
)
async def test_whatever_v2_answers_is_no_500(
    fuzzed_upstream: Fuzzed, call: Call, endpoint: tuple[str, str], status: int, document: Any, times: int | None
) -> None:
    """An answer the gateway cannot use is the dialect's 502 (and a real upstream failure may be a 503 or
    504), never a 500 or a traceback; the pass-through relays it as it came."""
    fuzzed = fuzzed_upstream
    method, path = endpoint
    fuzzed.emulator.state.faults[:] = [FaultRule(method, path, "status", status, body=document, times=times)]
    await run_call(fuzzed, call, upstream_status=status)


# --- the controls: well-formed calls through the same harness get through -----------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        Credential(),
        Credential(b"Bearer " + SEAN_TOKEN.encode()),
        Credential(_basic(b"sean:" + PASSWORD.encode())),
        *(Credential(oauth=OAuthPlan(where, None)) for where in ("header", "query", "form")),
    ],
    ids=["sidecar", "bearer", "basic", "oauth-header", "oauth-query", "oauth-form"],
)
async def test_the_harness_gets_well_formed_calls_through(fuzzed: Fuzzed, credential: Credential) -> None:
    for call in GOOD_CALLS:
        if call.path.startswith("/2/"):
            continue
        body = call.body if call.body.data or credential.oauth is None else Body(b"", FORM, ())
        reply = await run_call(fuzzed, replace(call, body=body, credential=credential))
        assert reply is not None and reply.status in (200, 204), (call, reply)
        assert fuzzed.emulator.state.requests


# --- what the fuzz tests above found ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/1.1/direct_messages/destroy.json?id=abc",
                     b'{"errors":[{"code":214,"message":"id parameter is invalid."}]}', id="v1.1"),
        pytest.param("DELETE", "/1.1/direct_messages/events/destroy.json",
                     b'{"errors":[{"code":38,"message":"id parameter is missing."}]}', id="events"),
        pytest.param("POST", "/api/direct_messages/destroy/abc.json",
                     b'{"error":"Invalid direct message ID.",'
                     b'"request":"\\/api\\/direct_messages\\/destroy\\/abc.json"}',
                     id="statusnet"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("expect", ["0", "something-else", "100-continue, foo"])
async def test_an_unknown_expectation_on_a_legacy_route_gets_the_calls_own_answer(
    fuzzed: Fuzzed, method: str, path: str, body: bytes, expect: str
) -> None:
    """aiohttp answered any Expect but 100-continue with its own plain-text 417, before the gateway saw the
    request: no dialect shape, no request id. RFC 9110 lets a server ignore an expectation it does not know."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\nExpect: {expect}\r\n\r\n"
    reply = await exchange(fuzzed.port, head.encode(), method)
    assert reply is not None
    assert (reply.status, reply.body) == (400, body)
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.headers.get("x-request-id")
    assert fuzzed.emulator.state.requests == []


async def test_an_unknown_expectation_on_the_pass_through_is_upstreams_to_judge(fuzzed: Fuzzed) -> None:
    """The pass-through forwards the header unchanged, and upstream's answer to it comes back relayed (the
    emulator, an aiohttp server, refuses it as aiohttp does), with the request id of every relayed answer."""
    head = (
        f"GET /2/users/me HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\nExpect: 0\r\n"
        f"Authorization: Bearer {MICK_TOKEN}\r\n\r\n"
    )
    reply = await exchange(fuzzed.port, head.encode(), "GET")
    assert reply is not None and (reply.status, reply.body) == (417, b"Unknown Expect: 0"), reply
    assert reply.headers.get("x-request-id")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "upstream"),
    [
        ("POST", "/1.1/direct_messages/destroy.json", f"id={PLAIN_IDS[0]}".encode(), 200,
         ("DELETE", f"/2/dm_events/{PLAIN_IDS[0]}")),
        ("POST", "/2/dm_conversations/with/776627022/messages", b'{"text": "hello"}', 201,
         ("POST", "/2/dm_conversations/with/776627022/messages")),
    ],
)  # fmt: skip
async def test_expect_100_continue_is_still_answered_before_the_body(
    fuzzed: Fuzzed, method: str, path: str, body: bytes, status: int, upstream: tuple[str, str]
) -> None:
    content_type = FORM if path.startswith("/1.1") else "application/json"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\nExpect: 100-continue\r\n"
        f"Authorization: Bearer {SEAN_TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", fuzzed.port)
    try:
        writer.write(head.encode())
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        reply = parse_reply(await asyncio.wait_for(reader.read(), timeout=10), method)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply is not None and reply.status == status, reply
    assert upstream in [(r.method, r.path) for r in fuzzed.emulator.state.requests]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/1.1/direct_messages/destroy.json"), ("GET", "/api/direct_messages.xml"), ("POST", "/2/users/me")],
)
async def test_a_client_gone_before_its_100_continue_leaves_no_traceback(
    fuzzed: Fuzzed, method: str, path: str
) -> None:
    """Writing the interim 100 to a connection the client had closed failed outside any handler, and aiohttp
    logged that with a traceback at ERROR."""
    await start_example(fuzzed)
    head = f"{method} {path} HTTP/1.1\r\nHost: {fuzzed.host}\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
    assert await exchange(fuzzed.port, head.encode(), method, hang_up=True) is None
    await fuzzed.settle()
    await asyncio.sleep(0.05)
    assert not _problems(fuzzed)


@pytest.mark.parametrize("path", ["/2/dm_events/%0A", "/2/users/by/username/x%0Ay", "/2/%0A/users/me"])
async def test_a_pass_through_path_with_an_encoded_newline_still_goes_upstream(fuzzed: Fuzzed, path: str) -> None:
    """``/2/{tail:.*}`` did not match a path whose decoded form holds a newline: such a request got the v1.1
    dialect's 404 instead of going upstream like every other /2/ path."""
    head = f"GET {path} HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\n"
    reply = await exchange(fuzzed.port, head.encode() + f"Authorization: Bearer {MICK_TOKEN}\r\n\r\n".encode(), "GET")
    assert reply is not None
    assert [(r.method, r.path) for r in fuzzed.emulator.state.requests] == [("GET", unquote(path))]
    assert reply.status in (400, 404), reply  # v2's own refusal, relayed as it came
    assert reply.headers["content-type"].startswith(("application/problem+json", "application/json")), reply
    check_error_shape(reply, "v2")  # in no legacy dialect's shape


def _problems(fuzzed: Fuzzed) -> list[str]:
    records = fuzzed.records
    return [f"{r.name} {r.levelname}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(
    ("method", "path", "content_type", "status", "body"),
    [
        pytest.param("POST", "/1.1/direct_messages/destroy.json", FORM, 400,
                     b'{"errors":[{"code":214,"message":"Bad request."}]}', id="v1.1-form"),
        pytest.param("POST", "/1.1/direct_messages/events/new.json", "application/json", 400,
                     b'{"errors":[{"code":214,"message":"Bad request."}]}', id="events-json"),
        pytest.param("POST", "/api/direct_messages/destroy.xml", "multipart/form-data; boundary=xx", 400,
                     b'<?xml version="1.0" encoding="UTF-8"?>\n<hash>\n <error>Bad request.</error>\n'
                     b' <request>/api/direct_messages/destroy.xml</request>\n</hash>\n', id="statusnet-multipart"),
        pytest.param("GET", "/1.1/direct_messages.json", None, 200, None, id="v1.1-unread-body"),
    ],
)  # fmt: skip
async def test_a_body_that_does_not_decode_as_its_content_encoding_is_400_without_traceback(
    fuzzed: Fuzzed, method: str, path: str, content_type: str | None, status: int, body: bytes | None, encoding: str
) -> None:
    """aiohttp decodes a gzip or deflate request body as it arrives; one that does not decode made reading
    the form or JSON fail with an error the gateway did not expect (500 and a traceback), and a body left
    unread made aiohttp log a traceback at ERROR when it drained it after the answer."""
    await start_example(fuzzed)
    garbage = b"id=1583890000000000003&text=not compressed at all"
    head = f"{method} {path} HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\nContent-Encoding: {encoding}\r\n"
    head += f"Content-Type: {content_type}\r\n" if content_type else ""
    head += f"Content-Length: {len(garbage)}\r\n\r\n"
    reply = await exchange(fuzzed.port, head.encode() + garbage, method)
    await fuzzed.settle()
    await asyncio.sleep(0.05)  # what aiohttp logs once the answer is sent
    assert reply is not None and reply.status == status, reply
    if body is not None:
        assert reply.body == body
        assert fuzzed.emulator.state.requests == []
    assert reply.headers.get("x-request-id")
    assert not _problems(fuzzed)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_still_reads_on_a_legacy_route(fuzzed: Fuzzed, encoding: str) -> None:
    await start_example(fuzzed)
    form = f"id={PLAIN_IDS[1]}".encode()
    data = gzip.compress(form) if encoding == "gzip" else zlib.compress(form)
    head = (
        f"POST /1.1/direct_messages/destroy.json HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\n"
        f"Content-Encoding: {encoding}\r\nContent-Type: {FORM}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    reply = await exchange(fuzzed.port, head.encode() + data, "POST")
    assert reply is not None and reply.status == 200, reply
    assert json.loads(reply.body)["id_str"] == PLAIN_IDS[1]
    assert not _problems(fuzzed)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_pass_through_body_reaches_upstream_whole(fuzzed: Fuzzed, encoding: str) -> None:
    """aiohttp hands the handler the decoded body, which the pass-through forwarded under the client's
    Content-Encoding and Content-Length: upstream got plain bytes labelled compressed, of the wrong length."""
    await start_example(fuzzed)
    text = "a compressed hello " * 20
    document = json.dumps({"text": text}).encode()
    data = gzip.compress(document) if encoding == "gzip" else zlib.compress(document)
    head = (
        f"POST /2/dm_conversations/with/776627022/messages HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\n"
        f"Authorization: Bearer {SEAN_TOKEN}\r\nContent-Encoding: {encoding}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    reply = await exchange(fuzzed.port, head.encode() + data, "POST")
    await fuzzed.settle()
    assert reply is not None and reply.status == 201, reply
    event_id = json.loads(reply.body)["data"]["dm_event_id"]
    assert fuzzed.emulator.state.events[event_id]["text"] == text
    assert not _problems(fuzzed)


async def test_a_pass_through_body_that_does_not_decode_is_400_and_no_upstream_failure(fuzzed: Fuzzed) -> None:
    """Its decoding failed while the body streamed upstream: that was answered 502, as if upstream could not
    be reached, and counted against the breaker that every caller shares."""
    await start_example(fuzzed)
    garbage = b'{"text": "not compressed at all"}'
    head = (
        f"POST /2/dm_conversations/with/776627022/messages HTTP/1.1\r\nHost: {fuzzed.host}\r\nConnection: close\r\n"
        f"Authorization: Bearer {SEAN_TOKEN}\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(garbage)}\r\n\r\n"
    )
    reply = await exchange(fuzzed.port, head.encode() + garbage, "POST")
    await fuzzed.settle()
    assert reply is not None and reply.status == 400, reply
    assert reply.headers["content-type"] == "application/problem+json"
    assert json.loads(reply.body)["status"] == 400
    breaker = fuzzed.client.server.app[BREAKERS_KEY].for_url(fuzzed.emulator.url)
    assert breaker.state is BreakerState.CLOSED
    assert not _problems(fuzzed)
