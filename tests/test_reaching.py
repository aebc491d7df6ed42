"""Reaching the gateway with an unmodified client: as its HTTP proxy, by the path forms old libraries call,
with v2 calls signed with OAuth 1.0a, and over HTTPS for names clients hard-code (``dm-gateway tls init``).

Trust: an absolute-form request target (``POST http://api.twitter.com/1.1/... HTTP/1.1``) names a host of
the client's choosing. A signature over it is accepted (it proves the client holds the secrets), but the
request only ever goes to ``upstream.base_url``: the tests run a second server the target names and check
that it never hears of anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import oauthlib.oauth1
import orjson
import pytest
import requests
from aiohttp import web
from requests_oauthlib import OAuth1

from gateway.app import create_app
from gateway.auth.credentials import Consumer, Token
from gateway.cli import main
from gateway.config import ConfigError, load_config, with_overrides
from gateway.emulator import EmulatorServer
from gateway.store.base import StoreError
from gateway.store.factory import open_store
from gateway.tls import server_tls_context
from tests.conftest import PLAIN_IDS, SEED_002_ID, store_of
from tests.packages import installed_package
from tests.test_auth import CONSUMER, SEAN, add_credentials, auth_config
from tests.test_hostile_passthrough import Names, calls, evil, names, problem_of, raw  # noqa: F401 - fixtures

SEAN_ID = "38895958"
CLASSIC = "/1.1/direct_messages/destroy.json"
UNKNOWN = Consumer("not-registered-here", "its-secret")
TWEEPY_4 = "tweepy==4.14.0"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    store = await open_store(f"sqlite:///{tmp_path}/reach.sqlite3")
    await add_credentials(store)
    yield store
    await store.close()


@pytest.fixture
async def client(aiohttp_client: Any, emulator: EmulatorServer, store: Any) -> Any:
    return await aiohttp_client(create_app(auth_config(emulator), store=store))


def oauth_header(method: str, url: str, consumer: Consumer = CONSUMER, token: Token = SEAN, **kw: Any) -> str:
    """The Authorization header a client signing ``url`` sends (oauthlib, as requests-oauthlib signs)."""
    signer = oauthlib.oauth1.Client(consumer.key, consumer.secret, token.token, token.secret, **kw)
    _, headers, _ = signer.sign(url, http_method=method)
    return headers["Authorization"]


def oauth_lines(emulator: EmulatorServer) -> list[str]:
    return [r.headers.get("Authorization", "") for r in emulator.state.requests]


def v1_error(body: bytes) -> int:
    return orjson.loads(body)["errors"][0]["code"]


# --- 1. the gateway as a client's HTTP proxy: absolute-form targets ------------------------------------


async def test_requests_with_the_gateway_as_its_http_proxy_destroys(client: Any, emulator: EmulatorServer) -> None:
    """What ``proxies={"http": gateway}`` makes requests (and tweepy's session) send: ``POST
    http://api.twitter.com/1.1/... HTTP/1.1``, signed for that URL. Nothing is ever sent to that host (it
    does not even resolve here): the message is deleted at the upstream."""
    proxy = f"http://{client.server.host}:{client.server.port}"
    auth = OAuth1(CONSUMER.key, CONSUMER.secret, SEAN.token, SEAN.secret)
    response = await asyncio.to_thread(
        requests.post, f"http://api.twitter.com{CLASSIC}", params={"id": SEED_002_ID}, auth=auth,
        proxies={"http": proxy}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["id_str"] == SEED_002_ID
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)
    assert calls(emulator)[-1] == ("DELETE", f"/2/dm_events/{SEED_002_ID}")
    assert all(line.startswith("OAuth ") for line in oauth_lines(emulator))


async def test_a_signature_over_a_host_of_the_clients_choosing_never_reaches_that_host(
    client: Any, emulator: EmulatorServer, evil: EmulatorServer
) -> None:
    target = f"http://127.0.0.1:{evil.port}{CLASSIC}?id={SEED_002_ID}"
    status, _, body = await raw(
        client, f"POST {target} HTTP/1.1", f"Authorization: {oauth_header('POST', target)}", "Content-Length: 0"
    )
    assert status == 200, body
    assert orjson.loads(body)["id_str"] == SEED_002_ID
    assert evil.state.requests == []
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)


@pytest.mark.parametrize(
    "signed_for",
    [
        "http://api.twitter.com/1.1/direct_messages/new.json",  # another path
        "http://api.twitter.com/1.1/direct_messages/destroy.json?id=1",  # other parameters
        "ftp://api.twitter.com/1.1/direct_messages/destroy.json",
    ],
)
async def test_an_absolute_form_target_with_a_signature_for_anything_else_is_refused(
    client: Any, emulator: EmulatorServer, signed_for: str
) -> None:
    target = signed_for.replace("/new.json", "/destroy.json").split("?")[0]
    signed_url = signed_for if "?" in signed_for else f"{signed_for}?id={SEED_002_ID}"
    status, _, body = await raw(
        client,
        f"POST {target}?id={SEED_002_ID} HTTP/1.1",
        f"Authorization: {oauth_header('POST', signed_url)}",
        "Content-Length: 0",
    )
    assert status == 401, body
    assert v1_error(body) == 32
    assert emulator.state.requests == []


# --- 2. POST|DELETE /1.1/direct_messages/destroy/ID.json -----------------------------------------------


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_the_path_form_destroy_deletes(client: Any, emulator: EmulatorServer, method: str) -> None:
    path = f"/1.1/direct_messages/destroy/{SEED_002_ID}.json"
    url = str(client.make_url(path))
    response = await client.request(method, path, headers={"Authorization": oauth_header(method, url)})
    assert response.status == 200, await response.text()
    assert orjson.loads(await response.read())["id_str"] == SEED_002_ID
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/1.1/direct_messages/destroy/abc.json", 400, 214),
        ("/1.1/direct_messages/destroy/1.2.json", 400, 214),
        ("/1.1/direct_messages/destroy/123456789012345678901234567890.json", 400, 214),
        (f"/1.1/direct_messages/destroy/{SEED_002_ID}.json?id={PLAIN_IDS[0]}", 400, 214),
        ("/1.1/direct_messages/destroy/%00.json", 400, 214),
    ],
)
async def test_the_path_form_refuses_what_is_not_one_id(
    client: Any, emulator: EmulatorServer, path: str, status: int, code: int
) -> None:
    url = str(client.make_url(path))
    response = await client.post(path, headers={"Authorization": oauth_header("POST", url)})
    body = await response.read()
    assert (response.status, v1_error(body)) == (status, code), body
    assert emulator.state.requests == []
    assert not emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)


async def test_the_path_form_takes_no_get(client: Any, emulator: EmulatorServer) -> None:
    path = f"/1.1/direct_messages/destroy/{SEED_002_ID}.json"
    response = await client.get(path, headers={"Authorization": oauth_header("GET", str(client.make_url(path)))})
    assert response.status in (404, 405)
    assert "errors" in orjson.loads(await response.read())
    assert emulator.state.requests == []


# --- 3. v2 pass-through signed with OAuth 1.0a ---------------------------------------------------------


async def test_a_v2_call_signed_for_the_gateway_is_verified_and_re_signed(
    client: Any, emulator: EmulatorServer
) -> None:
    url = str(client.make_url("/2/users/me?user.fields=id,username"))
    header = oauth_header("GET", url)
    response = await client.get("/2/users/me?user.fields=id,username", headers={"Authorization": header})
    assert response.status == 200, await response.text()
    assert (await response.json())["data"]["id"] == SEAN_ID
    (sent,) = oauth_lines(emulator)
    assert sent.startswith("OAuth ") and sent != header  # signed again, for the upstream's URL
    assert f'oauth_consumer_key="{CONSUMER.key}"' in sent and 'oauth_token="38895958-emulatortoken"' in sent


async def test_a_v2_call_signed_in_the_query_goes_upstream_signed_in_the_header(
    client: Any, emulator: EmulatorServer
) -> None:
    url = str(client.make_url("/2/users/me?user.fields=id"))
    signer = oauthlib.oauth1.Client(
        CONSUMER.key, CONSUMER.secret, SEAN.token, SEAN.secret, signature_type=oauthlib.oauth1.SIGNATURE_TYPE_QUERY
    )
    signed_url, _, _ = signer.sign(url, http_method="GET")
    response = await client.get(signed_url.removeprefix(f"http://{client.server.host}:{client.server.port}"))
    assert response.status == 200, await response.text()
    (request,) = emulator.state.requests
    assert request.query == {"user.fields": "id"}  # the client's oauth_ parameters stay here
    assert request.headers["Authorization"].startswith("OAuth ")


async def test_an_absolute_form_v2_call_signed_for_x_is_verified_and_re_signed(
    client: Any, emulator: EmulatorServer, evil: EmulatorServer
) -> None:
    """A client that uses the gateway as its proxy for http://api.x.com signed that URL."""
    target = f"http://127.0.0.1:{evil.port}/2/users/me"
    status, _, body = await raw(client, f"GET {target} HTTP/1.1", f"Authorization: {oauth_header('GET', target)}")
    assert status == 200, body
    assert orjson.loads(body)["data"]["id"] == SEAN_ID
    assert evil.state.requests == [] and calls(emulator) == [("GET", "/2/users/me")]


@pytest.mark.parametrize("who", ["unknown consumer", "unknown token", "signed for another URL", "long nonce"])
async def test_a_v2_signature_the_gateway_cannot_verify_goes_upstream_untouched(
    client: Any, emulator: EmulatorServer, who: str
) -> None:
    url = str(client.make_url("/2/users/me"))
    if who == "unknown consumer":
        header = oauth_header("GET", url, consumer=UNKNOWN)
    elif who == "unknown token":
        header = oauth_header("GET", url, token=Token("no-such-token", CONSUMER.key, "s"))
    elif who == "long nonce":
        header = oauth_header("GET", url, nonce="n" * 65)
    else:
        header = oauth_header("GET", "https://api.x.com/2/users/me")
    response = await client.get("/2/users/me", headers={"Authorization": header})
    assert response.status == 401  # the emulator's answer: it cannot verify them either
    assert oauth_lines(emulator) == [header]


async def test_a_replayed_v2_call_is_refused_without_going_upstream(client: Any, emulator: EmulatorServer) -> None:
    url = str(client.make_url("/2/users/me"))
    header = oauth_header("GET", url)
    first = await client.get("/2/users/me", headers={"Authorization": header})
    assert first.status == 200
    again = await client.get("/2/users/me", headers={"Authorization": header})
    assert again.status == 401
    problem_of(again.status, {k.lower(): v for k, v in again.headers.items()}, await again.read())
    assert calls(emulator) == [("GET", "/2/users/me")]


async def test_a_stale_v2_call_is_refused_without_going_upstream(client: Any, emulator: EmulatorServer) -> None:
    url = str(client.make_url("/2/users/me"))
    header = oauth_header("GET", url, timestamp=str(int(time.time()) - 3600))
    response = await client.get("/2/users/me", headers={"Authorization": header})
    assert response.status == 401
    assert emulator.state.requests == []


async def test_a_v2_call_while_the_credential_store_fails_is_a_v2_503(
    client: Any, emulator: EmulatorServer, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(key: str) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(store, "get_consumer", unavailable)
    url = str(client.make_url("/2/users/me"))
    response = await client.get("/2/users/me", headers={"Authorization": oauth_header("GET", url)})
    assert response.status == 503
    problem_of(503, {k.lower(): v for k, v in response.headers.items()}, await response.read())
    assert emulator.state.requests == []


async def test_a_v2_send_signed_with_oauth1_is_learned(client: Any, emulator: EmulatorServer) -> None:
    path = "/2/dm_conversations/with/776627022/messages"
    url = str(client.make_url(path))
    response = await client.post(
        path, data=b'{"text":"signed and learned"}',
        headers={"Authorization": oauth_header("POST", url), "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status == 201, await response.text()
    event_id = (await response.json())["data"]["dm_event_id"]
    store = store_of(client)
    for _ in range(200):
        if await store.get_message(event_id) is not None:
            break
        await asyncio.sleep(0.02)
    learned = await store.get_message(event_id)
    assert learned is not None and learned.text == "signed and learned"


# --- 4. tls init, TLS versions, both listeners ---------------------------------------------------------


def tls_init(out: Path, *hosts: str, capsys: Any) -> str:
    assert main(["tls", "init", *(a for h in hosts for a in ("--host", h)), "--out", str(out)]) == 0
    return capsys.readouterr().out


def test_tls_init_prints_the_config_and_reuses_its_ca(tmp_path: Path, capsys: Any) -> None:
    from cryptography import x509

    printed = tls_init(tmp_path / "tls", "api.twitter.com", "upload.twitter.com", "127.0.0.1", capsys=capsys)
    assert f'tls_cert = "{tmp_path}/tls/cert.pem"' in printed and f'tls_key = "{tmp_path}/tls/key.pem"' in printed
    assert "tls_port" in printed and "NODE_EXTRA_CA_CERTS" in printed and "keytool" in printed
    assert oct((tmp_path / "tls/key.pem").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "tls/ca-key.pem").stat().st_mode & 0o777) == "0o600"
    ca = (tmp_path / "tls/ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "tls/cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.twitter.com", "upload.twitter.com"]
    # Again, with one more name: the same CA, which clients already trust, signs the new certificate.
    again = tls_init(tmp_path / "tls", "api.twitter.com", "stream.twitter.com", capsys=capsys)
    assert "reused the CA" in again and (tmp_path / "tls/ca.pem").read_bytes() == ca
    context = ssl.create_default_context(cafile=str(tmp_path / "tls/ca.pem"))
    assert context.get_ca_certs()  # and cert.pem verifies against it (below, in a real handshake)
    assert "PRIVATE KEY" not in printed + again


def test_tls_init_refuses_a_ca_without_its_key(tmp_path: Path, capsys: Any) -> None:
    tls_init(tmp_path / "tls", "localhost", capsys=capsys)
    (tmp_path / "tls/ca-key.pem").unlink()
    (tmp_path / "tls/key.pem").unlink()
    assert main(["tls", "init", "--host", "localhost", "--out", str(tmp_path / "tls")]) == 1
    assert "holds a CA that cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "tls/key.pem").exists()


@pytest.mark.parametrize("host", ["bad host", "*.twitter.com", "api.twitter.com:443", "-x.com", ""])
def test_tls_init_refuses_what_is_not_a_name(tmp_path: Path, capsys: Any, host: str) -> None:
    assert main(["tls", "init", f"--host={host}", "--out", str(tmp_path / "tls")]) == 1
    assert "is not a DNS name or an IP address" in capsys.readouterr().err
    assert not (tmp_path / "tls" / "key.pem").exists()


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"tls_min_version": "1.4"}, "server.tls_min_version must be one of 1.0, 1.1, 1.2, 1.3"),
        ({"tls_min_version": "TLSv1"}, "server.tls_min_version must be one of"),
        ({"tls_port": 8443}, "server.tls_port needs server.tls_cert and server.tls_key"),
        ({"tls_port": 70000, "tls": True}, "server.tls_port must be between 0 and 65535"),
        ({"tls_port": 8080, "tls": True}, "server.tls_port must differ from server.port"),
        ({"tls_port": "8443", "tls": True}, "server.tls_port must be an integer"),
    ],
)
def test_tls_settings_are_checked(tmp_path: Path, capsys: Any, server: dict[str, Any], message: str) -> None:
    values = dict(server)
    if values.pop("tls", False):
        tls_init(tmp_path / "tls", "localhost", capsys=capsys)
        values |= {"tls_cert": str(tmp_path / "tls/cert.pem"), "tls_key": str(tmp_path / "tls/key.pem")}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(env={}, overrides={"server": values})


async def test_the_certificates_names_are_signed_base_urls(
    aiohttp_client: Any, emulator: EmulatorServer, store: Any, tmp_path: Path, capsys: Any
) -> None:
    """Behind a TLS terminator the gateway sees plain HTTP; a client signed https://api.twitter.com/..."""
    tls_init(tmp_path / "tls", "api.twitter.com", capsys=capsys)
    tls = {"tls_cert": str(tmp_path / "tls/cert.pem"), "tls_key": str(tmp_path / "tls/key.pem")}
    client = await aiohttp_client(create_app(with_overrides(auth_config(emulator), server=tls), store=store))
    path = f"{CLASSIC}?id={SEED_002_ID}"
    elsewhere = oauth_header("POST", f"https://elsewhere.example{path}")
    refused = await client.post(path, headers={"Authorization": elsewhere})
    assert refused.status == 401 and emulator.state.requests == []
    answer = await client.post(path, headers={"Authorization": oauth_header("POST", f"https://api.twitter.com{path}")})
    assert answer.status == 200, await answer.text()
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _handshake(port: int, ca: Path, version: ssl.TLSVersion) -> str:
    """Connect with a client that speaks only ``version``; the version agreed, or the error's name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, OSError) as exc:
        return type(exc).__name__


def _local_openssl_speaks(version: ssl.TLSVersion, ca_dir: Path) -> bool:
    """Whether this machine's OpenSSL can do ``version`` at all (with security level 0), both ends."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = server.maximum_version = version
    try:
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.load_cert_chain(ca_dir / "cert.pem", ca_dir / "key.pem")
    except ssl.SSLError:
        return False
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result: list[str] = []

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    result.append(str(tls.version()))
            except (ssl.SSLError, OSError):
                result.append("failed")

        import threading

        thread = threading.Thread(target=accept)
        thread.start()
        agreed = _handshake(port, ca_dir / "ca.pem", version)
        thread.join(5)
    return agreed.startswith("TLS")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(("setting", "version"), [("1.0", ssl.TLSVersion.TLSv1), ("1.1", ssl.TLSVersion.TLSv1_1)])
async def test_tls_min_version_lets_an_old_client_in(
    tmp_path: Path, capsys: Any, setting: str, version: ssl.TLSVersion
) -> None:
    tls_init(tmp_path / "tls", "localhost", capsys=capsys)
    if not _local_openssl_speaks(version, tmp_path / "tls"):
        pytest.skip(f"this machine's OpenSSL cannot do TLS {setting} at all (see docs/CLIENTS.md)")
    tls = {"tls_cert": str(tmp_path / "tls/cert.pem"), "tls_key": str(tmp_path / "tls/key.pem")}
    results = {}
    for minimum in (setting, "1.2"):
        config = load_config(env={}, overrides={"server": {**tls, "tls_min_version": minimum}})
        app = web.Application()
        runner = web.AppRunner(app)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls_context(config)).start()
        try:
            results[minimum] = await asyncio.to_thread(_handshake, port, tmp_path / "tls/ca.pem", version)
            modern = ssl.TLSVersion.TLSv1_2
            results["modern"] = await asyncio.to_thread(_handshake, port, tmp_path / "tls/ca.pem", modern)
        finally:
            await runner.cleanup()
    assert results[setting] == {"1.0": "TLSv1", "1.1": "TLSv1.1"}[setting]
    assert results["1.2"].startswith("SSL")  # the default keeps them out

    assert results["modern"] == "TLSv1.2"


# --- 5. dm-gateway serve: tls init's pair on tls_port, plain HTTP on port, tweepy 4 over both ---------


@pytest.fixture(scope="session")
def tweepy4(request: pytest.FixtureRequest) -> Path:
    """tweepy 4 from PyPI in its own directory; its dependencies are the ones tweepy 3.10 brought."""
    return installed_package(request, TWEEPY_4)


# The client as an operator leaves it: tweepy 4's Client with OAuth 1.0a user context, talking to
# https://api.twitter.com. The first lines stand in for the hosts file and the port forward (api.twitter.com
# and port 443 are the gateway's tls_port here); the CA comes from REQUESTS_CA_BUNDLE.
TWEEPY_4_SCRIPT = """
import json, socket, sys
tls_port, plain_port, consumer_key, consumer_secret, token, token_secret = sys.argv[1:7]
real = socket.getaddrinfo
def hosts_file(host, port, *args, **kwargs):
    if host == "api.twitter.com":
        return real("127.0.0.1", int(tls_port) if int(port) == 443 else int(plain_port), *args, **kwargs)
    return real(host, port, *args, **kwargs)
socket.getaddrinfo = hosts_file
import tweepy
client = tweepy.Client(
    consumer_key=consumer_key, consumer_secret=consumer_secret, access_token=token, access_token_secret=token_secret
)
me = client.get_me(user_auth=True)
events = client.get_direct_message_events(user_auth=True, dm_event_fields=["text"])
print(json.dumps({"version": tweepy.__version__, "me": me.data.username, "texts": [e.text for e in events.data]}))
"""


async def test_tls_init_served_by_serve_on_tls_port_and_port_trusted_by_tweepy_4(
    emulator: EmulatorServer, tmp_path: Path, capsys: Any, tweepy4: Path
) -> None:
    printed = tls_init(tmp_path / "tls", "api.twitter.com", "upload.twitter.com", capsys=capsys)
    config_lines = printed[printed.index("[server]") : printed.index("# tls_min_version")].splitlines()
    port, tls_port = _free_port(), _free_port()
    config_lines = [line.replace("tls_port = 443", f"tls_port = {tls_port}").split("#")[0] for line in config_lines]
    store_url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    store = await open_store(store_url)
    await add_credentials(store)
    await store.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        "\n".join(config_lines)
        + f'\nport = {port}\nadmin_port = 0\n[upstream]\nbase_url = "{emulator.url}"\n[store]\nurl = "{store_url}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMGW_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_until_serving(port, process)
        client_env = {
            **os.environ, "REQUESTS_CA_BUNDLE": str(tmp_path / "tls/ca.pem"), "PYTHONPATH": str(tweepy4),
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }  # fmt: skip
        script = await asyncio.create_subprocess_exec(
            sys.executable, "-c", TWEEPY_4_SCRIPT, str(tls_port), str(port),
            CONSUMER.key, CONSUMER.secret, SEAN.token, SEAN.secret,
            env=client_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(script.communicate(), 60)
        assert script.returncode == 0, stderr.decode()
        result = json.loads(stdout)
        assert result["version"] == "4.14.0" and result["me"] == "theSeanCook"
        assert "second message" in result["texts"]
        # Plain HTTP on server.port at the same time.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/1.1/direct_messages.json") as response,
        ):
            assert response.status == 401  # served, in v1.1's shape: no credentials
            assert (await response.json())["errors"][0]["code"] == 32
        assert [r.headers["Authorization"].startswith("OAuth ") for r in emulator.state.requests] == [True, True]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr_bytes = await asyncio.wait_for(process.communicate(), 15)
    log = stderr_bytes.decode()
    assert process.returncode == 0, log
    assert f"https://127.0.0.1:{tls_port}" in log and f"http://127.0.0.1:{port}" in log
    for secret in (CONSUMER.secret, SEAN.secret):
        assert secret not in log


async def _wait_until_serving(port: int, process: Any) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if process.returncode is not None:
                pytest.fail(f"dm-gateway serve exited: {(await process.stderr.read()).decode()}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/"):
                    return
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    pytest.fail("dm-gateway serve never answered")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_workers_serve_port_and_tls_port_at_once(emulator: EmulatorServer, tmp_path: Path, capsys: Any) -> None:
    """Under --workers every worker listens on both; an old TLS minimum is warned about once, at start."""
    from tests.test_workers import start_workers

    tls_init(tmp_path / "tls", "localhost", capsys=capsys)
    tls_port = _free_port()
    extra = (
        f'[server]\ntls_cert = "{tmp_path}/tls/cert.pem"\ntls_key = "{tmp_path}/tls/key.pem"\n'
        f'tls_port = {tls_port}\ntls_min_version = "1.1"\n'
    )
    process, port, _ = await start_workers(emulator, tmp_path, 2, extra)
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "tls/ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(6):
                async with session.get(f"https://localhost:{tls_port}/1.1/no-such-call.json", ssl=context) as response:
                    assert response.status == 404
                async with session.get(f"http://127.0.0.1:{port}/1.1/no-such-call.json") as response:
                    assert response.status == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert log.count(f"listening on http://127.0.0.1:{port} and https://127.0.0.1:{tls_port}") == 2
    assert log.count("server.tls_min_version 1.1") == 1 and "WARNING" in log
