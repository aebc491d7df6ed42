"""/connect without a browser: the whole flow against the emulator's consent page and token endpoint, followed
by hand, and every way a step is refused (nothing stored, nothing sent to X)."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import html5lib
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password, verify_password
from gateway.config import ConfigError, load_config
from gateway.emulator import EMULATOR_OAUTH2_CLIENT_ID, EMULATOR_OAUTH2_CLIENT_SECRET, EmulatorServer
from gateway.keys import STORE_KEY
from gateway.onboarding import COOKIE, create_invite
from tests.conftest import GatewayTestServer

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect_config(
    emulator: EmulatorServer,
    port: int,
    *,
    mode: str = "open",
    store_url: str = "memory",
    secret: str | None = EMULATOR_OAUTH2_CLIENT_SECRET,
    env: dict[str, str] | None = None,
    public_url: str | None = None,
) -> Any:
    return load_config(
        env=env or {},
        overrides={
            "upstream": {
                "base_url": emulator.url,
                "timeout": 2.0,
                "retry_backoff": 0.002,
                "oauth2_client_id": EMULATOR_OAUTH2_CLIENT_ID,
                "oauth2_client_secret": secret,
                "oauth2_authorize_url": emulator.url + "/i/oauth2/authorize",
            },
            "store": {"url": store_url},
            "onboarding": {"enabled": True, "public_url": public_url or f"http://127.0.0.1:{port}", "mode": mode},
        },
    )


@pytest.fixture
def make_connect(aiohttp_client: Any, emulator: EmulatorServer) -> Any:
    async def make(**options: Any) -> TestClient:
        port = free_port()
        app = create_app(connect_config(emulator, port, **options))
        return await aiohttp_client(GatewayTestServer(app, host="127.0.0.1", port=port))

    return make


def valid_html(text: str) -> Any:
    """The page parsed by html5lib's strict parser, which raises on any HTML parse error."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


def form_fields(text: str) -> dict[str, str]:
    document = valid_html(text)
    return {el.get("name"): el.get("value", "") for el in document.iter("input") if el.get("name")}


def upstream_calls(emulator: EmulatorServer) -> list[str]:
    """What reached X's API (its token endpoint included); the consent page is the browser's, not ours."""
    return [f"{r.method} {r.path}" for r in emulator.state.requests if r.path.startswith("/2/")]


def new_browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def authorize(http: aiohttp.ClientSession, client: TestClient, query: str = "") -> str:
    """From the landing page to X's answer: the callback URL the emulator redirects the browser to."""
    landing = await http.get(client.make_url("/connect" + query))
    assert landing.status == 200, await landing.text()
    start_href = valid_html(await landing.text()).find(".//a[@id='sign-in']").get("href")
    start = await http.get(client.make_url(start_href), allow_redirects=False)
    assert start.status == 302
    location = start.headers["Location"]
    consent = await http.get(location)
    assert consent.status == 200, await consent.text()
    fields = form_fields(await consent.text())
    fields.update(screen_name="theSeanCook", approve="1")
    fields.pop("cancel", None)
    approved = await http.post(location.split("?")[0], data=fields, allow_redirects=False)
    assert approved.status == 302, await approved.text()
    return approved.headers["Location"]


async def sign_in(http: aiohttp.ClientSession, client: TestClient, query: str = "") -> dict[str, str]:
    """Through X and back: the fields of the finish form."""
    callback = await http.get(await authorize(http, client, query))
    text = await callback.text()
    assert callback.status == 200, text
    return form_fields(text)


async def finish(http: aiohttp.ClientSession, client: TestClient, fields: dict[str, str], **changes: str) -> Any:
    form = {"csrf_token": fields["csrf_token"], "username": fields["username"], "password": PASSWORD,
            "password_confirm": PASSWORD, **changes}  # fmt: skip
    return await http.post(client.make_url("/connect/finish"), data=form)


async def list_dms(client: TestClient, username: str, password: str) -> Any:
    """An unmodified StatusNet-style call: HTTP Basic on /api/direct_messages.json."""
    headers = {"Authorization": aiohttp.encode_basic_auth(username, password)}
    return await client.get("/api/direct_messages.json", headers=headers)


async def test_the_whole_flow_then_a_statusnet_client_lists_dms(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect()
    async with new_browser() as http:
        landing = await http.get(client.make_url("/connect"))
        valid_html(await landing.text())
        assert landing.headers["Referrer-Policy"] == "no-referrer"
        callback_url = await authorize(http, client)
        cookie = next(c for c in http.cookie_jar if c.key == COOKIE)
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
        callback = await http.get(callback_url)
        page = await callback.text()
        fields = form_fields(page)
        assert fields["username"] == "theSeanCook" and fields["csrf_token"]
        # The code went to the token endpoint with the PKCE verifier, which the emulator checked.
        assert upstream_calls(emulator) == ["POST /2/oauth2/token", "GET /2/users/me"]
        done = await finish(http, client, fields, username="sean")
        done_text = await done.text()
        assert done.status == 200, done_text
        assert f"{client.make_url('/api')}".replace("localhost", "127.0.0.1") in done_text
        valid_html(done_text)
    user = await client.server.app[STORE_KEY].get_user("sean")
    assert user is not None and verify_password(PASSWORD, user.password_hash)
    assert user.grant.refresh_token and user.grant.expires_at and user.grant.user_id
    for secret in (user.grant.access_token, user.grant.refresh_token):
        assert secret not in page and secret not in done_text and secret not in callback_url
    answer = await list_dms(client, "sean", PASSWORD)
    assert answer.status == 200, await answer.text()
    assert isinstance(await answer.json(), list) and await answer.json()


async def test_a_forged_state_is_refused_and_nothing_reaches_x(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect()
    async with new_browser() as http:
        callback_url = await authorize(http, client)
        parts = urlsplit(callback_url)
        query = dict(parse_qsl(parts.query))
        query["state"] = "forged" + query["state"][6:]
        answer = await http.get(client.make_url("/connect/callback"), params=query)
        assert answer.status == 400
        valid_html(await answer.text())
    assert upstream_calls(emulator) == []
    assert await client.server.app[STORE_KEY].list_credentials() == []


async def test_a_callback_without_the_cookie_is_refused(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect()
    async with new_browser() as http:
        callback_url = await authorize(http, client)
    async with new_browser() as other:  # the code and state, in a browser that never began the sign-in
        answer = await other.get(callback_url)
        assert answer.status == 400
        assert "no sign-in in progress" in (await answer.text()).lower()
    assert upstream_calls(emulator) == []


async def test_the_finish_form_replayed_from_another_session_is_refused(
    make_connect: Any, emulator: EmulatorServer
) -> None:
    client = await make_connect()
    async with new_browser() as victim, new_browser() as attacker:
        victims_form = await sign_in(victim, client)
        await sign_in(attacker, client)
        calls = upstream_calls(emulator)
        # The victim's form (its CSRF token) sent with the attacker's session, and with none at all.
        refused = await finish(attacker, client, victims_form, username="mallory")
        assert refused.status == 400
        valid_html(await refused.text())
        async with new_browser() as cookieless:
            assert (await finish(cookieless, client, victims_form, username="mallory")).status == 400
        assert upstream_calls(emulator) == calls
    assert await client.server.app[STORE_KEY].list_credentials() == []


async def test_the_form_again_with_its_reason(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect()
    store = client.server.app[STORE_KEY]
    other = OAuth2Grant(access_token="someone-elses", refresh_token="r", user_id="999")
    await store.put_user(BasicUser("taken", hash_password("whatever1"), other))
    async with new_browser() as http:
        fields = await sign_in(http, client)
        calls = upstream_calls(emulator)
        for changes, reason in (
            ({"username": "taken"}, "taken by another account"),
            ({"password": "short", "password_confirm": "short"}, "at least 8 characters"),
            ({"password_confirm": PASSWORD + "!"}, "passwords differ"),
            ({"username": "a:b"}, "without spaces or colons"),
        ):
            answer = await finish(http, client, fields, **changes)
            text = await answer.text()
            assert answer.status == 422 and reason in text, text
            assert form_fields(text)["csrf_token"] == fields["csrf_token"]
        assert upstream_calls(emulator) == calls
        assert [e.key for e in await store.list_credentials()] == ["taken"]
        assert (await store.get_user("taken")).grant.access_token == "someone-elses"
        # The same session can still finish once the form is right.
        assert (await finish(http, client, fields, username="sean")).status == 200


async def test_invites_expire_and_are_spent(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect(mode="invite")
    store = client.server.app[STORE_KEY]
    public = str(client.make_url("")).rstrip("/")
    async with new_browser() as http:
        for query in ("", "?invite=made-up"):
            answer = await http.get(client.make_url("/connect" + query))
            assert answer.status == 403
            valid_html(await answer.text())
            assert (await http.get(client.make_url("/connect/start" + query), allow_redirects=False)).status == 403
        expired = await create_invite(store, None, public, 0.05)
        time.sleep(0.1)  # noqa: ASYNC251 - the store's expiry is on the wall clock
        assert (await http.get(expired)).status == 403
        invite_url = await create_invite(store, None, public, 60)
        query = "?" + urlsplit(invite_url).query
        first = await sign_in(http, client, query)
        assert (await finish(http, client, first, username="sean")).status == 200
        assert (await http.get(invite_url)).status == 403  # spent with its user
    async with new_browser() as late:
        # A second sign-in begun before the invite was spent cannot finish with it.
        second_url = await create_invite(store, None, public, 60)
        form = await sign_in(late, client, "?" + urlsplit(second_url).query)
        await store.take_pending(_invite_key(second_url))
        answer = await finish(late, client, form, username="mick")
        assert answer.status == 403
    assert await store.get_user("mick") is None
    assert [e.key for e in await store.list_credentials()] == ["sean"]
    assert not any("/connect" in c for c in upstream_calls(emulator))


def _invite_key(url: str) -> str:
    from gateway.onboarding import invite_key

    return invite_key(dict(parse_qsl(urlsplit(url).query))["invite"])


async def test_the_same_x_account_updates_its_user(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect(store_url="sqlite:///:memory:")
    store = client.server.app[STORE_KEY]
    for password in (PASSWORD, PASSWORD + " two"):
        async with new_browser() as http:
            fields = await sign_in(http, client)
            assert (await finish(http, client, fields, username="sean", password=password,
                                 password_confirm=password)).status == 200  # fmt: skip
    assert verify_password(PASSWORD + " two", (await store.get_user("sean")).password_hash)
    assert (await list_dms(client, "sean", PASSWORD)).status == 401
    assert (await list_dms(client, "sean", PASSWORD + " two")).status == 200


async def test_a_public_client_without_a_secret(make_connect: Any, emulator: EmulatorServer) -> None:
    # The token request then names the client in its form instead of HTTP Basic.
    client = await make_connect(secret=None)
    async with new_browser() as http:
        callback_url = await authorize(http, client)
        answer = await http.get(callback_url)
        assert answer.status == 502  # the emulator's client has a secret: the exchange without it is refused
        valid_html(await answer.text())
    assert upstream_calls(emulator) == ["POST /2/oauth2/token"]
    assert await client.server.app[STORE_KEY].list_credentials() == []


def test_config_refuses_onboarding_without_what_it_needs() -> None:
    with pytest.raises(ConfigError, match=r"onboarding.public_url"):
        load_config(env={}, overrides={"onboarding": {"enabled": True}, "upstream": {"oauth2_client_id": "c"}})
    with pytest.raises(ConfigError, match=r"upstream.oauth2_client_id"):
        load_config(env={}, overrides={"onboarding": {"enabled": True, "public_url": "https://dm.example"}})
    with pytest.raises(ConfigError, match=r"auth.sidecar do not go together"):
        load_config(env={}, overrides={
            "onboarding": {"enabled": True, "public_url": "http://127.0.0.1:1"},
            "upstream": {"oauth2_client_id": "c", "bearer_token": "t"}, "auth": {"sidecar": True},
        })  # fmt: skip
    with pytest.raises(ConfigError, match=r"onboarding.mode"):
        load_config(env={}, overrides={"onboarding": {"mode": "closed"}})
    with pytest.raises(ConfigError, match=r"upstream.oauth2_authorize_url"):
        load_config(env={}, overrides={"upstream": {"oauth2_authorize_url": "ftp://x"}})


async def test_the_pkce_verifier_is_checked_by_x(make_connect: Any, emulator: EmulatorServer) -> None:
    from gateway.onboarding import _session_key, seal_record, unseal_record

    client = await make_connect()
    store = client.server.app[STORE_KEY]
    async with new_browser() as http:
        callback_url = await authorize(http, client)
        key = _session_key(next(c for c in http.cookie_jar if c.key == COOKIE).value)
        record = unseal_record(await store.get_pending(key), None)
        record["verifier"] = "a" * 64  # not the verifier whose challenge X was shown
        await store.put_pending(key, seal_record(record, None), time.time() + 60)
        answer = await http.get(callback_url)
        assert answer.status == 502
    assert upstream_calls(emulator) == ["POST /2/oauth2/token"]
    assert await store.list_credentials() == []


async def test_pending_records_expire_and_are_taken_once(shared_store: Any) -> None:
    await shared_store.put_pending("connect:a", b"\xffsealed", time.time() + 60)
    assert await shared_store.get_pending("connect:a") == b"\xffsealed"
    assert await shared_store.take_pending("connect:a") == b"\xffsealed"
    assert await shared_store.take_pending("connect:a") is None
    assert await shared_store.get_pending("connect:a") is None
    await shared_store.put_pending("connect:b", b"x", time.time() + 0.05)
    time.sleep(0.1)  # noqa: ASYNC251 - expiry is on the wall clock
    assert await shared_store.get_pending("connect:b") is None
    assert await shared_store.take_pending("connect:b") is None


async def test_a_flow_begun_on_one_replica_finishes_on_another(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Any
) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    path = tmp_path / "shared.sqlite3"
    public_port = free_port()  # replicas share one public URL (a load balancer's); each listens on its own
    replicas = []
    for port in (public_port, free_port()):
        env = {"DMGW_STORE_ENCRYPTION_KEY": key}
        config = connect_config(emulator, public_port, store_url=f"sqlite:///{path}", env=env)
        replicas.append(await aiohttp_client(GatewayTestServer(create_app(config), host="127.0.0.1", port=port)))
    first, second = replicas
    async with new_browser() as http:
        callback = urlsplit(await authorize(http, first))
        raw = path.read_bytes() + (tmp_path / "shared.sqlite3-wal").read_bytes()
        assert b"verifier" not in raw  # sealed with the store's key
        page = await http.get(second.make_url(f"{callback.path}?{callback.query}"))  # the cookie goes along
        fields = form_fields(await page.text())
        assert (await finish(http, first, fields, username="sean")).status == 200
    assert (await list_dms(second, "sean", PASSWORD)).status == 200


def test_credentials_invite_prints_a_url_to_hand_out(tmp_path: Any, capsys: Any) -> None:
    import asyncio

    from gateway.cli import main
    from gateway.store.factory import open_store

    config = tmp_path / "gateway.toml"
    store_url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    config.write_text(f'[store]\nurl = "{store_url}"\n[onboarding]\npublic_url = "https://dm.example.org/"\n')
    assert main(["credentials", "invite", "--config", str(config), "--expires-in", "600"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("https://dm.example.org/connect?invite=")

    async def live() -> bool:
        store = await open_store(store_url)
        try:
            return await store.get_pending(_invite_key(url)) is not None
        finally:
            await store.close()

    assert asyncio.run(live())
    config.write_text(f'[store]\nurl = "{store_url}"\n')
    assert main(["credentials", "invite", "--config", str(config)]) != 0
    assert "onboarding.public_url" in capsys.readouterr().err


async def test_hostile_requests_get_pages_not_errors(make_connect: Any, emulator: EmulatorServer) -> None:
    client = await make_connect(mode="invite")
    cases = [
        ("GET", "/connect?invite=" + "x" * 5000, {}, None, 403),
        ("GET", "/connect/callback?state=%00&code=c", {"Cookie": f"{COOKIE}=" + "y" * 300}, None, 400),
        ("GET", "/connect/callback?state=s&code=c", {"Cookie": f"{COOKIE}=unknown"}, None, 400),
        ("POST", "/connect/finish", {"Cookie": f"{COOKIE}=unknown", "Content-Type": "text/plain"}, b"x", 400),
        ("POST", "/connect/finish", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=" + b"z" * 70000, 400),
    ]
    for method, path, headers, body, status in cases:
        answer = await client.request(method, path, headers=headers, data=body)
        assert answer.status == status, (path, await answer.text())
        valid_html(await answer.text())
    assert upstream_calls(emulator) == []
    assert await client.server.app[STORE_KEY].list_credentials() == []


async def test_the_cookie_is_secure_behind_an_https_public_url(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    config = connect_config(emulator, 443, public_url="https://dm.example.org")
    client = await aiohttp_client(GatewayTestServer(create_app(config)))
    answer = await client.get("/connect/start", allow_redirects=False)
    assert answer.status == 302
    cookie = answer.cookies[COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/connect"
    location = urlsplit(answer.headers["Location"])
    query = dict(parse_qsl(location.query))
    assert query["redirect_uri"] == "https://dm.example.org/connect/callback"
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert query["scope"] == "dm.read dm.write users.read tweet.read offline.access"
    assert cookie.value not in answer.headers["Location"] and "code_verifier" not in query
