"""``dm-gateway demo``: the emulator and the gateway in one process: legacy lists and sends, and every legacy
destroy form, shown.

The gateway runs exactly as ``serve`` builds it, on the embedded default store (SQLite, in a temporary
directory), with the emulator standing in for X API v2. Before it starts, the emulator's seeded OAuth 1.0a
application and access token and one HTTP Basic user are registered in that store, as
``dm-gateway credentials`` would register them. Each call prints its request (credentials shortened or
redacted: no secret is ever printed), one line with a ✓ or ✗, the status and what the answer shows (the
message, or the error in the calling dialect's shape), then the body pretty-printed and shortened, so that no
line is wider than 110 characters. The exit status is non-zero if any answer differs from what a legacy client
expects.

Then a legacy client that has nothing but its own consumer key and secret (one X does not know, registered
``--via-upstream-app``) logs a user in through the gateway with a PIN, X's login run with the emulator's app
as the operator's own, and deletes a DM with the token it got; its consumer key never reaches X.
Last, on a second, public gateway (no sidecar: /connect is for a gateway people reach) sharing the store, a
StatusNet user connects their X account at /connect (invite mode, as an operator would run it): the invite,
"Sign in with X", the emulator's consent page approved as theSeanCook, the password form, and then their
unmodified client's Basic call listing their direct messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import aiohttp
import orjson
from aiohttp import web
from authlib.oauth1 import ClientAuth

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token, hash_password
from gateway.config import load_config
from gateway.emulator import (
    APP_CONSUMER_KEY,
    APP_CONSUMER_SECRET,
    EMULATOR_OAUTH2_CLIENT_ID,
    EMULATOR_OAUTH2_CLIENT_SECRET,
    EmulatorServer,
)
from gateway.emulator.state import EmulatorState
from gateway.onboarding import create_invite
from gateway.store.factory import open_store

SIDECAR_TOKEN = "emulator-token-theSeanCook"  # the gateway acts for theSeanCook unless a client says otherwise
MARCOS_TOKEN = "emulator-token-marcosgdf"

# The emulator's seeded OAuth 1.0a application and theSeanCook's access token for it
# (gateway/emulator/seed.json), registered in the demo's store so the gateway can verify and re-sign.
CONSUMER = Consumer("emulator-consumer", "emulator-consumer-secret")
SEAN_OAUTH_TOKEN = Token("38895958-emulatortoken", CONSUMER.key, "emulator-token-secret-sean")
# A StatusNet user who signs in with HTTP Basic; the gateway acts for them with their v2 grant.
BASIC_USERNAME = "marcos"
BASIC_PASSWORD = "demo password for marcos"
# A legacy client's own consumer, which X does not know: its users log in and act through the operator's X
# app (the emulator's seeded one). The user who logs in, and a message of theirs to delete.
LEGACY_CONSUMER = Consumer("legacy-client-2009", "legacy client secret, baked into the app", via_upstream_app=True)
LOGIN_SCREEN_NAME = "s0c1alm3dia"
LOGIN_DELETES = "240251665733795841"
_PIN = re.compile(r'<code id="oauth_pin">([0-9]+)</code>')
# The StatusNet user who connects at /connect, and the password they choose there.
CONNECT_USERNAME = "sean"
CONNECT_PASSWORD = "demo password for sean"
# What a forger signs with instead of the consumer secret.
FORGED_CONSUMER_SECRET = "a guess at the consumer secret"

Auth = Literal["none", "bearer", "oauth1", "forged-oauth1", "basic"]


@dataclass(frozen=True)
class DemoCall:
    title: str
    method: str
    path: str
    expect: int
    form: dict[str, str] | None = None
    # "none": the sidecar credential acts; "bearer": the client's own v2 token (MARCOS_TOKEN);
    # "oauth1": signed by the registered application; "forged-oauth1": signed with a wrong consumer
    # secret; "basic": BASIC_USERNAME and BASIC_PASSWORD.
    auth: Auth = "none"
    code: int | None = None  # the v1.1 error code the body must carry
    reaches_v2: bool = True  # False: must be refused before any request reaches X API v2


CALLS = (
    DemoCall(
        "Twitter v1.1 classic inbox, the two newest messages (read from v2 and learned)",
        "GET", "/1.1/direct_messages.json?count=2", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic send, by screen name: checked, sent once, read back",
        "POST", "/1.1/direct_messages/new.json", 200, form={"screen_name": "s0c1alm3dia", "text": "Still here <3"},
    ),
    DemoCall(
        "StatusNet XML sent messages, the newest one",
        "GET", "/api/direct_messages/sent.xml?count=1", 200,
    ),
    DemoCall(
        "Twitter v1.1 events list, at most three events a page, with the cursor of the next page",
        "GET", "/1.1/direct_messages/events/list.json?count=3", 200,
    ),
    DemoCall(
        "StatusNet send without text: the historic 406, nothing sent",
        "POST", "/api/direct_messages/new.xml", 406, form={"user": "s0c1alm3dia", "text": ""}, reaches_v2=False,
    ),
    DemoCall(
        "Twitter v1.1 classic, id in the query string (the v1.1 docs example)",
        "POST", "/1.1/direct_messages/destroy.json?id=240251665733795841", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic, id in the form body, include_entities=false",
        "POST", "/1.1/direct_messages/destroy.json", 200, form={"id": "1583890000000000004", "include_entities": "false"},
    ),
    DemoCall(
        "Twitter v1.1 events: 204, no body",
        "DELETE", "/1.1/direct_messages/events/destroy.json?id=1583890000000000003", 204,
    ),
    DemoCall(
        "Twitter v1.1 classic, signed with OAuth 1.0a by a registered application, verified and re-signed",
        "POST", "/1.1/direct_messages/destroy.json?id=1583890000000000001", 200, auth="oauth1",
    ),
    DemoCall(
        "Twitter v1.1 classic, a forged OAuth 1.0a signature: refused before it reaches X API v2",
        "POST", "/1.1/direct_messages/destroy.json?id=1583890000000000007", 401, auth="forged-oauth1",
        code=32, reaches_v2=False,
    ),
    DemoCall(
        "StatusNet XML, id in the path, the client's own v2 bearer token passed through",
        "POST", "/api/direct_messages/destroy/39.xml", 200, auth="bearer",
    ),
    DemoCall(
        "StatusNet JSON, id in the path, a registered user signing in with HTTP Basic",
        "DELETE", "/api/direct_messages/destroy/38.json", 200, auth="basic",
    ),
    DemoCall(
        "Twitter v1 XML, destroy.xml?id=, text that needs escaping",
        "POST", "/1/direct_messages/destroy.xml?id=1583890000000000002", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic, the first call retried after a lost response: the same answer again",
        "POST", "/1.1/direct_messages/destroy.json?id=240251665733795841", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic, a message X API v2 does not know: the legacy error",
        "POST", "/1.1/direct_messages/destroy.json?id=1583890000099999999", 404,
    ),
    DemoCall(
        "StatusNet XML, a malformed id: refused before it reaches X API v2",
        "POST", "/api/direct_messages/destroy/12ab.xml", 400, reaches_v2=False,
    ),
)  # fmt: skip


async def run_demo(*, port: int = 0, keep_running: bool = False) -> int:
    # The emulator's access log would bury the calls this command is here to show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dm-gateway-demo-") as workdir, socket.socket() as listening:
        # The public gateway's port is bound first: /connect's public URL (X's redirect back) must name it
        # before the gateway is built.
        listening.bind(("127.0.0.1", 0))
        public = f"http://127.0.0.1:{listening.getsockname()[1]}"
        async with EmulatorServer() as emulator:
            store = {"url": f"sqlite:///{workdir}/demo.sqlite3"}
            # A sidecar in front of one application, as `serve` builds it with [auth] sidecar = true ...
            config = load_config(
                env={},
                overrides={
                    "server": {"port": port},
                    "upstream": {
                        "base_url": emulator.url,
                        "bearer_token": SIDECAR_TOKEN,
                        "oauth1_consumer_key": APP_CONSUMER_KEY,
                        "oauth1_consumer_secret": APP_CONSUMER_SECRET,
                    },
                    "store": store,
                    "auth": {"sidecar": True},
                },
            )
            # ... and, on the same store, a public gateway whose users connect themselves at /connect.
            public_config = load_config(
                env={},
                overrides={
                    "upstream": {
                        "base_url": emulator.url,
                        "oauth2_client_id": EMULATOR_OAUTH2_CLIENT_ID,
                        "oauth2_client_secret": EMULATOR_OAUTH2_CLIENT_SECRET,
                        "oauth2_authorize_url": emulator.url + "/i/oauth2/authorize",
                    },
                    "store": store,
                    "onboarding": {"enabled": True, "public_url": public, "mode": "invite"},
                },
            )
            invite_url = await _register_credentials(config.store.url, public)
            runner = web.AppRunner(create_app(config), access_log=None)
            public_runner = web.AppRunner(create_app(public_config), access_log=None)
            await runner.setup()
            await public_runner.setup()
            try:
                await web.TCPSite(runner, config.server.host, config.server.port).start()
                await web.SockSite(public_runner, listening).start()
                base = f"http://{config.server.host}:{runner.addresses[0][1]}"
                print(f"X API v2 emulator on {emulator.url}; gateway on {base}")
                print(f"SQLite store in {workdir}, holding:")
                print(f"  OAuth 1.0a consumer {CONSUMER.key} with token {SEAN_OAUTH_TOKEN.token}")
                print(f"  Basic user {BASIC_USERNAME}")
                print(
                    f"  legacy consumer {LEGACY_CONSUMER.key} (--via-upstream-app, through the app {APP_CONSUMER_KEY})"
                )
                print("Each call: its request, a ✓ (or ✗) line with the answer's status and what it shows, and the")
                print("body, pretty-printed and shortened. Credentials are shortened or redacted.\n")
                failures = await _run_calls(base, emulator.state)
                print(f"{len(CALLS) - failures} of {len(CALLS)} calls answered as a legacy client expects.\n")
                login_problems = await _run_login(base, emulator.state)
                if login_problems:
                    failures += 1
                    print(f"!! {'; '.join(login_problems)}")
                else:
                    print("A client with only its consumer key logged in and deleted a DM.")

                print(f"A public gateway without the sidecar, on the same store, serves /connect on {public}")
                failures += await _connect(public, invite_url, emulator.state)
                if keep_running:
                    await _serve_until_interrupted(base)
            finally:
                await public_runner.cleanup()
                await runner.cleanup()
    return 1 if failures else 0


async def _register_credentials(store_url: str, public_url: str) -> str:
    """What an operator does with ``dm-gateway credentials`` before ``serve``: the gateway opens the same
    store afterwards and finds them there. Returns the URL of an invite to /connect."""
    store = await open_store(store_url)
    try:
        await store.put_consumer(CONSUMER)
        await store.put_consumer(LEGACY_CONSUMER)
        await store.put_token(SEAN_OAUTH_TOKEN)
        grant = OAuth2Grant(MARCOS_TOKEN)
        await store.put_user(BasicUser(BASIC_USERNAME, hash_password(BASIC_PASSWORD), grant))
        return await create_invite(store, None, public_url, 3600)
    finally:
        await store.close()


class _Page(HTMLParser):
    """What the demo's "browser" needs of a page: its links by id, its inputs' values, its title."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {key: value or "" for key, value in attrs}
        if tag == "a" and "id" in named:
            self.links[named["id"]] = named.get("href", "")
        elif tag == "input" and "name" in named:
            self.inputs[named["name"]] = named.get("value", "")
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


async def _connect(base: str, invite_url: str, upstream: EmulatorState) -> int:
    """The /connect flow, step by step as a browser takes it, then the user's StatusNet client at work."""
    problems: list[str] = []
    print("== A StatusNet user connects their X account at /connect")
    print(f"$ dm-gateway credentials invite\n{invite_url.split('=')[0]}=…  (the invite, shortened)")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:

        async def step(method: str, url: str, shown: str, expect: int, **data: str) -> tuple[str, str]:
            async with browser.request(method, url, data=data or None, allow_redirects=False) as resp:
                text = await resp.text()
                location = resp.headers.get("Location", "")
                title = _Page(text).title.strip() if text else ""
                print(f"> {method} {shown}\n< {resp.status} {resp.reason}" + (f"  ({title})" if title else ""))
                if resp.status != expect:
                    problems.append(f"{shown}: expected {expect}")
            return text, location

        landing, _ = await step("GET", invite_url, "/connect?invite=…", 200)
        start = _Page(landing).links.get("sign-in", "/connect/start")
        _, authorize_url = await step("GET", base + start, "/connect/start?invite=…  (Sign in with X)", 302)
        print(f"< Location: {authorize_url.split('?')[0]}?response_type=code&code_challenge_method=S256&…")
        consent, _ = await step("GET", authorize_url, "X's consent page", 200)
        fields = {**_Page(consent).inputs, "screen_name": "theSeanCook", "approve": "1"}
        _, callback = await step("POST", authorize_url.split("?")[0], "X's consent page: approved", 302, **fields)
        before = len(upstream.requests)
        form, _ = await step("GET", callback, "/connect/callback?state=…&code=…", 200)
        print("(the gateway asked X: " + ", ".join(f"{r.method} {r.path}" for r in upstream.requests[before:]) + ")")
        answer = {"csrf_token": _Page(form).inputs.get("csrf_token", ""), "username": CONNECT_USERNAME,
                  "password": CONNECT_PASSWORD, "password_confirm": CONNECT_PASSWORD}  # fmt: skip
        await step("POST", base + "/connect/finish", f"/connect/finish  username={CONNECT_USERNAME}&password=…", 200,
                   **answer)  # fmt: skip
    pair = base64.b64encode(f"{CONNECT_USERNAME}:{CONNECT_PASSWORD}".encode()).decode("ascii")
    print(f"\n== {CONNECT_USERNAME}'s StatusNet client, unmodified, lists their direct messages")
    print(f"> GET /api/direct_messages.json?count=1\n> Authorization: Basic …  ({CONNECT_USERNAME}, redacted)")
    path = "/api/direct_messages.json?count=1"
    async with (
        aiohttp.ClientSession() as client,
        client.get(base + path, headers={"Authorization": f"Basic {pair}"}) as resp,
    ):
        body = await resp.read()
        content_type = resp.headers.get("Content-Type", "")
    print(_summary_line(resp.status == 200, resp.status, "GET", path, content_type, body))
    print("\n".join(_body_lines(content_type, body)))
    if resp.status != 200:
        problems.append("the connected user's StatusNet call: expected 200")
    for problem in problems:
        print(f"!! {problem}")
    print("The user connected and their client works." if not problems else "")
    return 1 if problems else 0


async def _run_calls(base: str, upstream: EmulatorState) -> int:
    failures = 0
    async with aiohttp.ClientSession() as session:
        for call in CALLS:
            url = base + call.path
            headers, shown_headers = _credentials(call, url)
            print(f"== {call.title}")
            shown_body = "" if call.form is None else "  " + "&".join(f"{k}={v}" for k, v in call.form.items())
            print(_fit(f"> {call.method} {call.path}{shown_body}"))
            for line in shown_headers:
                print(_fit(f"> {line}"))
            upstream_before = len(upstream.requests)
            async with session.request(call.method, url, data=call.form, headers=headers) as resp:
                body = await resp.read()
                content_type = resp.headers.get("Content-Type", "")
            problems = []
            if resp.status != call.expect:
                problems.append(f"expected {call.expect}")
            if call.code is not None and _v1_1_error_code(body) != call.code:
                problems.append(f"expected error code {call.code}")
            sent = upstream.requests[upstream_before:]
            notes = []
            if not call.reaches_v2:
                if sent:
                    problems.append("expected no request to X API v2")
                else:
                    notes.append("(nothing reached X API v2)")
            if call.auth == "oauth1":
                resigned = [r for r in sent if r.method == "DELETE" and _signed_by_sean(r.headers)]
                if resigned:
                    shown = _shorten_oauth(resigned[0].headers["Authorization"])
                    notes += [f"(X API v2 got DELETE {resigned[0].path}, re-signed:", f" {shown})"]
                else:
                    problems.append("expected X API v2 to get the delete re-signed with the same OAuth 1.0a token")
            print(_summary_line(not problems, resp.status, call.method, call.path, content_type, body))
            for line in _body_lines(content_type, body) + notes:
                print(_fit(line))
            if problems:
                failures += 1
                print(f"!! {'; '.join(problems)}")
            print()
    return failures


async def _run_login(base: str, upstream: EmulatorState) -> list[str]:
    """A legacy client logs a user in through the gateway by PIN, then deletes a DM with its new token.
    Returns what went wrong (nothing when all is well)."""
    print("== Log in through the gateway: a client with only its own consumer key, one X does not know")
    consumer = LEGACY_CONSUMER
    async with aiohttp.ClientSession() as session:
        # 1. A request token, with oob: the user will be shown a PIN.
        signer = _LegacyClientAuth(consumer.key, consumer.secret, redirect_uri="oob")
        request_token = await _signed_post(session, base, "/oauth/request_token", signer)
        if "oauth_token" not in request_token:
            return ["expected a request token"]
        # 2. The user's browser: the gateway sends it to X's page, where the user approves and gets a PIN.
        authorize = f"{base}/oauth/authorize?oauth_token={request_token['oauth_token']}"
        print(f"> GET /oauth/authorize?oauth_token={_short(request_token['oauth_token'])}")
        async with session.get(authorize, allow_redirects=False) as resp:
            location = resp.headers.get("Location", "")
            print(f"< {resp.status} {resp.reason}  Location: {location.split('?')[0]}?oauth_token=…")
        x_page = urlsplit(location)
        x_token = dict(parse_qsl(x_page.query)).get("oauth_token", "")
        approve = x_page._replace(path="/oauth/authorize", query="").geturl()
        async with session.post(approve, data={"oauth_token": x_token, "screen_name": LOGIN_SCREEN_NAME}) as resp:
            pin = _PIN.search(await resp.text())
        if pin is None:
            return ["expected X's page to show a PIN"]
        print(f"(on X's page {LOGIN_SCREEN_NAME} approves the app and is shown the PIN {pin.group(1)})")
        # 3. The PIN for an access token: the gateway's own, mapped to the X token of the operator's app.
        signer = _LegacyClientAuth(
            consumer.key, consumer.secret, request_token["oauth_token"], request_token["oauth_token_secret"],
            verifier=pin.group(1),
        )  # fmt: skip
        access = await _signed_post(session, base, "/oauth/access_token", signer)
        if access.get("screen_name") != LOGIN_SCREEN_NAME:
            return [f"expected an access token for {LOGIN_SCREEN_NAME}"]
        # 4. A DM call signed with the legacy consumer and that token.
        path = f"/1.1/direct_messages/destroy.json?id={LOGIN_DELETES}"
        signer = _LegacyClientAuth(consumer.key, consumer.secret, access["oauth_token"], access["oauth_token_secret"])
        _, headers, _ = signer.sign("POST", base + path, {}, b"")
        print(f"> POST {path}\n> Authorization: {_shorten_oauth(headers['Authorization'])}")
        before = len(upstream.requests)
        async with session.post(base + path, headers=headers) as resp:
            body = await resp.read()
            content_type = resp.headers.get("Content-Type", "")
            status = resp.status
    print(_summary_line(status == 200, status, "POST", path, content_type, body))
    print("\n".join(_body_lines(content_type, body)))
    problems = [] if status == 200 else ["expected the destroy to answer 200"]
    deletes = [r for r in upstream.requests[before:] if r.method == "DELETE"]
    if deletes:
        shown = _shorten_oauth(deletes[0].headers.get("Authorization", ""))
        print(f"(X API v2 got DELETE {deletes[0].path}, signed by the operator's app:\n {shown})")
    else:
        problems.append("expected X API v2 to get the delete")
    if any(consumer.key in f"{r.path}{r.query}{r.headers}" for r in upstream.requests):
        problems.append("the legacy consumer key reached X")
    else:
        print(f"(the consumer key {consumer.key} never reached X)")
    print()
    return problems


async def _signed_post(session: aiohttp.ClientSession, base: str, path: str, signer: ClientAuth) -> dict[str, str]:
    """POST a login call signed by ``signer``, printed with its secrets redacted; its form-encoded answer."""
    _, headers, _ = signer.sign("POST", base + path, {}, b"")
    print(f"> POST {path}\n" + _fit(f"> Authorization: {_shorten_oauth(headers['Authorization'])}"))
    async with session.post(base + path, headers=headers) as resp:
        text = await resp.text()
        answer = dict(parse_qsl(text)) if resp.status == 200 else {}
        shown = "&".join(f"{k}={_redacted(k, v)}" for k, v in answer.items())
        print(f"< {resp.status} {resp.reason}  {resp.headers.get('Content-Type', '')}")
        print(shown or text)
    return answer


def _redacted(key: str, value: str) -> str:
    """A value of a login answer as printed: a secret never, a token cut short."""
    if "secret" in key:
        return "…"
    return _short(value) if key.endswith("token") else value


def _short(token: str) -> str:
    """A token name cut short: it changes on every run."""
    return token[:10] + "…"


def _credentials(call: DemoCall, url: str) -> tuple[dict[str, str], list[str]]:
    """The headers a legacy client sends for ``call``, and how to print them without any secret."""
    if call.auth == "bearer":
        shown = "Authorization: Bearer …  (the client's own v2 token, redacted)"
        return {"Authorization": f"Bearer {MARCOS_TOKEN}"}, [shown]
    if call.auth == "basic":
        pair = base64.b64encode(f"{BASIC_USERNAME}:{BASIC_PASSWORD}".encode()).decode("ascii")
        shown = f"Authorization: Basic …  ({BASIC_USERNAME} and a password, redacted)"
        return {"Authorization": f"Basic {pair}"}, [shown]
    if call.auth in ("oauth1", "forged-oauth1"):
        consumer_secret = CONSUMER.secret if call.auth == "oauth1" else FORGED_CONSUMER_SECRET
        signer = _LegacyClientAuth(CONSUMER.key, consumer_secret, SEAN_OAUTH_TOKEN.token, SEAN_OAUTH_TOKEN.secret)
        _, signed, _ = signer.sign(call.method, url, {}, b"")
        authorization = signed["Authorization"]
        return {"Authorization": authorization}, [f"Authorization: {_shorten_oauth(authorization)}"]
    return {}, []


class _LegacyClientAuth(ClientAuth):
    """authlib's OAuth 1.0a signer, with the protocol parameters in the order Twitter's documentation shows
    them (``oauth_consumer_key`` first). The order never changes the signature."""

    def get_oauth_params(self, nonce: str, timestamp: str) -> list[tuple[str, str]]:
        return sorted(super().get_oauth_params(nonce, timestamp))


_OAUTH_PARAMETER = re.compile(r'(oauth_[a-z_]+)="([^"]*)"')
_OAUTH_SHOWN = ("oauth_callback", "oauth_consumer_key", "oauth_token", "oauth_verifier")


def _shorten_oauth(authorization: str) -> str:
    """The header as sent, with only what says who signs: the consumer key, and the token cut short; the
    signature, nonce and timestamp, which change on every run, are left out."""
    parameters = dict(_OAUTH_PARAMETER.findall(authorization))
    shown = [f'{name}="{_short_if_token(name, parameters[name])}"' for name in _OAUTH_SHOWN if name in parameters]
    return "OAuth " + ", ".join(shown) + ", …"


def _short_if_token(name: str, value: str) -> str:
    return _cut(value, 16) if name == "oauth_token" else value


def _signed_by_sean(headers: dict[str, str]) -> bool:
    authorization = headers.get("Authorization", "")
    return authorization.startswith("OAuth ") and f'oauth_token="{SEAN_OAUTH_TOKEN.token}"' in authorization


def _v1_1_error_code(body: bytes) -> int | None:
    try:
        return orjson.loads(body)["errors"][0]["code"]
    except (orjson.JSONDecodeError, LookupError, TypeError):
        return None


async def _serve_until_interrupted(base: str) -> None:
    print(f"\nStill serving on {base}. Try:")
    print(f"  curl -X POST '{base}/1.1/direct_messages/destroy.json?id=1583890000000000007'")
    print("Press Ctrl-C to stop.")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


# How an answer is shown: one summary line, then the body pretty-printed and shortened. No printed line is
# wider than WIDTH; a body shows at most BODY_LINES lines, nested objects folded and long strings cut.
WIDTH = 110
BODY_LINES = 12
_LONG_STRING = 60
_INLINE = 70  # a nested object or list whose compact form fits in this is shown whole, on one line


def _summary_line(ok: bool, status: int, method: str, path: str, content_type: str, body: bytes) -> str:
    """``✓ 200 POST /path  what the answer shows``, no wider than WIDTH: a message's text is cut to fit."""
    head = f"{'✓' if ok else '✗'} {status} {method} {path.split('?')[0]}  "
    what, text = _what(content_type, body)
    if text is None:
        return _fit(head + what)
    room = max(WIDTH - len(head) - len(what) - 2, 12)
    return _fit(f'{head}{what}"{_cut(text, room)}"')


def _what(content_type: str, body: bytes) -> tuple[str, str | None]:
    """What an answer shows, in words (the message or messages, the page of events, or the dialect's error),
    and the text of the message it shows if any, apart so that the summary can cut it to fit."""
    if not body:
        return "no body", None
    try:
        if "json" in content_type:
            return _what_json(orjson.loads(body))
        if "xml" in content_type:
            return _what_xml(ElementTree.fromstring(body))
    except (orjson.JSONDecodeError, ElementTree.ParseError):
        pass
    return f"{len(body)} bytes of {content_type or 'unknown type'}", None


def _message(sender: object, recipient: object, text: object) -> tuple[str, str]:
    return f"message from {sender or 'an account that is gone'} to {recipient}: ", str(text)


def _messages(count: int, newest: tuple[str, str | None]) -> tuple[str, str | None]:
    if count == 0:
        return "no messages", None
    what, text = newest
    if count == 1:
        return "1 " + what, text
    return f"{count} messages, the newest {what.removeprefix('message ')}", text


def _what_json(value: object) -> tuple[str, str | None]:
    if isinstance(value, list):
        return _messages(len(value), _what_json(value[0]) if value else ("", None))
    if not isinstance(value, dict):
        return "a JSON value", None
    if isinstance(value.get("errors"), list) and value["errors"]:
        error = value["errors"][0]
        return f"the dialect's error: {str(error.get('message', '')).rstrip('.')} ({error.get('code')})", None
    if "error" in value:
        return f"the dialect's error: {value['error']}", None
    if isinstance(value.get("events"), list):
        more = ", and the cursor of the next page" if value.get("next_cursor") else ""
        return f"{len(value['events'])} message events{more}", None
    if "text" in value:
        sender, recipient = value.get("sender_screen_name"), value.get("recipient_screen_name")
        return _message(sender, recipient, value["text"])
    return "a JSON object", None


def _what_xml(root: ElementTree.Element) -> tuple[str, str | None]:
    if root.tag == "hash" and root.find("error") is not None:
        return f"the dialect's error: {root.findtext('error')}", None
    if root.tag == "direct_message":
        fields = ("sender_screen_name", "recipient_screen_name", "text")
        return _message(*(root.findtext(field) for field in fields))
    if root.tag == "direct-messages":
        return _messages(len(root), _what_xml(root[0]) if len(root) else ("", None))
    return f"an XML <{root.tag}>", None


def _body_lines(content_type: str, body: bytes) -> list[str]:
    """The body pretty-printed (JSON and XML indented, nested objects folded), at most BODY_LINES lines,
    each indented two spaces and no wider than WIDTH."""
    if not body:
        return []
    try:
        if "json" in content_type:
            lines = _json_lines(orjson.loads(body), 0, expand=True)
        elif "xml" in content_type:
            declaration = ['<?xml version="1.0" encoding="UTF-8"?>'] if body.startswith(b"<?xml") else []
            lines = declaration + _xml_lines(ElementTree.fromstring(body), 0, expand=True)
        else:
            lines = body.decode("utf-8", "replace").splitlines()
    except (orjson.JSONDecodeError, ElementTree.ParseError):
        lines = body.decode("utf-8", "replace").splitlines()
    if len(lines) > BODY_LINES:
        left_out = len(lines) - (BODY_LINES - 1)
        lines = [*lines[: BODY_LINES - 1], f"… ({left_out} more lines)"]
    return [_fit("  " + line) for line in lines]


def _cut(text: str, limit: int = _LONG_STRING) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(line: str) -> str:
    return _cut(line, WIDTH)


def _json_lines(value: object, depth: int, *, expand: bool) -> list[str]:
    """``value`` as indented JSON lines. What ``expand`` opens: the top, a list in the top object, the objects
    of a top list. Any other object or list is shown on one line when short, else folded to ``{… n keys}``."""
    pad = "  " * (depth + 1)
    if isinstance(value, str):
        return [json.dumps(_cut(value), ensure_ascii=False)]
    if not isinstance(value, (dict, list)) or not value:
        return [json.dumps(value)]
    if not expand:
        compact = json.dumps(value, ensure_ascii=False)
        if len(compact) <= _INLINE:
            return [compact]
        return [f"{{… {len(value)} keys}}" if isinstance(value, dict) else f"[… {len(value)} items]"]
    if isinstance(value, dict):
        items = [(json.dumps(key) + ": ", member) for key, member in value.items()]
        open_, close, open_children = "{", "}", False
    else:
        items = [("", member) for member in value]
        open_, close, open_children = "[", "]", depth == 0
    lines = [open_]
    for index, (prefix, member) in enumerate(items):
        shown = _json_lines(member, depth + 1, expand=open_children or (depth == 0 and isinstance(member, list)))
        comma = "," if index < len(items) - 1 else ""
        lines.append(pad + prefix + shown[0] + ("" if len(shown) > 1 else comma))
        lines.extend(shown[1:-1])
        if len(shown) > 1:
            lines.append(shown[-1] + comma)
    lines.append("  " * depth + close)
    return lines


def _xml_lines(element: ElementTree.Element, depth: int, *, expand: bool) -> list[str]:
    """``element`` as indented XML lines, its text escaped and cut; an element with children opens when
    ``expand`` (the root, and the items of a list) and is folded to ``<sender>… 27 elements</sender>`` else."""
    pad = " " * depth
    attributes = "".join(f' {name}="{value}"' for name, value in element.attrib.items())
    tag = element.tag + attributes
    if len(element) == 0:
        text = element.text or ""
        return [f"{pad}<{tag}>{escape(_cut(text))}</{element.tag}>" if text else f"{pad}<{tag}/>"]
    if not expand:
        return [f"{pad}<{tag}>… {len(element)} elements</{element.tag}>"]
    is_list = element.get("type") == "array"
    lines = [f"{pad}<{tag}>"]
    for child in element:
        lines.extend(_xml_lines(child, depth + 1, expand=is_list))
    lines.append(f"{pad}</{element.tag}>")
    return lines
