"""Real legacy client libraries, unmodified, against ``dm-gateway serve`` over HTTPS.

tweepy 3.x hard-codes https:// and signs OAuth 1.0a itself (through requests-oauthlib). So the gateway
runs as an operator runs it, ``dm-gateway serve`` with ``[server] tls_cert`` / ``tls_key`` from a trustme
CA, with the clients' consumer and token registered in its store, in front of the emulator. Each client
runs in its own process: tweepy 3.10 (DELETE direct_messages/events/destroy.json) is a test extra;
tweepy 3.7 (the classic POST direct_messages/destroy.json) cannot share a virtualenv with 3.10, so it is
installed once, unmodified from PyPI, into pytest's cache directory and put first on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.auth.credentials import Consumer, Token
from gateway.store.base import open_store
from tests.conftest import PLAIN_IDS, SEED_002_ID
from tests.test_auth import CONSUMER, SEAN

TWEEPY_37 = "tweepy==3.7.0"


@pytest.fixture(scope="session")
def tweepy37(request: pytest.FixtureRequest) -> Path:
    """tweepy 3.7.0 from PyPI in its own directory; its dependencies are the ones tweepy 3.10 brought."""
    target = Path(request.config.cache.mkdir("tweepy-3.7.0"))
    if not (target / "tweepy" / "__init__.py").exists():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), TWEEPY_37],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            message = f"cannot install {TWEEPY_37} from the package index: {result.stderr.strip()[-500:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, port: int, ca_bundle: Path) -> None:
        self.host = f"127.0.0.1:{port}"
        self.ca_bundle = ca_bundle


@pytest.fixture
async def served(emulator, tmp_path) -> AsyncIterator[Served]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (tmp_path / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    store_url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    store = await open_store(store_url)
    await store.put_consumer(Consumer(CONSUMER.key, CONSUMER.secret))
    await store.put_token(Token(SEAN.token, SEAN.consumer_key, SEAN.secret))
    await store.close()

    port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nport = {port}\nadmin_port = 0\ntls_cert = "{tmp_path}/cert.pem"\ntls_key = "{tmp_path}/key.pem"\n'
        f'[upstream]\nbase_url = "{emulator.url}"\n[store]\nurl = "{store_url}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMGW_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_until_serving(port, tmp_path / "ca.pem", process)
        yield Served(port, tmp_path / "ca.pem")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    for secret in (CONSUMER.secret, SEAN.secret):
        assert secret not in stderr.decode()


async def _wait_until_serving(port: int, ca: Path, process: Any) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if process.returncode is not None:
                pytest.fail(f"dm-gateway serve exited: {(await process.stderr.read()).decode()}")
            try:
                async with session.get(f"https://127.0.0.1:{port}/", ssl=context) as response:
                    assert response.status == 404  # served, in a legacy error shape
                    return
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    pytest.fail("dm-gateway serve never answered over TLS")


async def run_client(served: Served, script: str, *args: str, pythonpath: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(served.ca_bundle), "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, served.host, *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


CLIENT_SETUP = """
import json, sys, tweepy
host, message_id, consumer_key, consumer_secret, token, token_secret = sys.argv[1:7]
auth = tweepy.OAuthHandler(consumer_key, consumer_secret)
auth.set_access_token(token, token_secret)
api = tweepy.API(auth, host=host, api_root="/1.1")
"""

TWEEPY_37_SCRIPT = CLIENT_SETUP + """
dm = api.destroy_direct_message(message_id)
again = api.destroy_direct_message(message_id).id_str  # retried after a lost response: the same answer
try:
    api.destroy_direct_message("1583890000099999999")
    unknown = None
except tweepy.TweepError as error:
    unknown = error.api_code
print(json.dumps({
    "version": tweepy.__version__, "id": dm.id, "id_str": dm.id_str, "text": dm.text,
    "sender": dm.sender.screen_name, "recipient": dm.recipient.screen_name, "recipient_id": dm.recipient.id,
    "created_at": dm.created_at.isoformat(), "hashtags": dm.entities["hashtags"], "again": again,
    "unknown": unknown,
}))
"""

TWEEPY_310_SCRIPT = CLIENT_SETUP + """
try:
    result = api.destroy_direct_message(message_id)
    outcome = {"result": result, "status": api.last_response.status_code, "api_code": None}
except tweepy.TweepError as error:
    outcome = {"result": None, "status": error.response.status_code, "api_code": error.api_code}
print(json.dumps({"version": tweepy.__version__, **outcome}))
"""

SEAN_ARGS = (CONSUMER.key, CONSUMER.secret, SEAN.token, SEAN.secret)


async def test_tweepy_3_7_classic_destroy_over_https(served, emulator, tweepy37) -> None:
    result = await run_client(served, TWEEPY_37_SCRIPT, SEED_002_ID, *SEAN_ARGS, pythonpath=tweepy37)
    assert result == {
        "version": "3.7.0",
        "id": 240251665733795841,
        "id_str": SEED_002_ID,
        "text": "hello, tworld.",
        "sender": "s0c1alm3dia",
        "recipient": "theSeanCook",
        "recipient_id": 38895958,
        "created_at": "2012-08-28T00:57:15",
        "hashtags": [],
        "again": SEED_002_ID,  # a retry gets the first answer again
        "unknown": 34,  # a message v2 does not know: v1.1's code 34
    }
    assert emulator.state.is_deleted_for(SEED_002_ID, "38895958")
    deletes = [r for r in emulator.state.requests if r.method == "DELETE"]
    assert len(deletes) == 2 and all(r.headers["Authorization"].startswith("OAuth ") for r in deletes)
    assert all(r.headers["Authorization"].startswith("OAuth ") for r in emulator.state.requests)


async def test_tweepy_3_10_events_destroy_over_https(served, emulator) -> None:
    result = await run_client(served, TWEEPY_310_SCRIPT, PLAIN_IDS[0], *SEAN_ARGS)
    assert result == {"version": "3.10.0", "result": None, "status": 204, "api_code": None}
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], "38895958")


async def test_tweepy_3_10_with_a_wrong_secret_is_refused_before_upstream(served, emulator) -> None:
    args = (CONSUMER.key, CONSUMER.secret, SEAN.token, "not-the-token-secret")
    result = await run_client(served, TWEEPY_310_SCRIPT, PLAIN_IDS[0], *args)
    assert result == {"version": "3.10.0", "result": None, "status": 401, "api_code": 32}
    assert emulator.state.requests == []
