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
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.auth.credentials import Consumer, Token
from gateway.store.factory import open_store
from tests.conftest import PLAIN_IDS, SEED_002_ID
from tests.packages import installed_package
from tests.test_auth import CONSUMER, SEAN

TWEEPY_37 = "tweepy==3.7.0"


@pytest.fixture(scope="session")
def tweepy37(request: pytest.FixtureRequest) -> Path:
    """tweepy 3.7.0 from PyPI in its own directory; its dependencies are the ones tweepy 3.10 brought."""
    return installed_package(request, TWEEPY_37)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, port: int, ca_bundle: Path) -> None:
        self.host = f"127.0.0.1:{port}"
        self.ca_bundle = ca_bundle


@asynccontextmanager
async def serving_over_tls(
    tmp_path: Path, config: str, *, env: dict[str, str] | None = None, secrets: Iterable[str] = ()
) -> AsyncIterator[Served]:
    """``dm-gateway serve`` in a process of its own, over HTTPS with a trustme CA (``ca.pem`` in ``tmp_path``),
    the ``[server]`` section given and ``config`` (the other sections) after it; ``env`` adds to an environment
    without the caller's ``DMGW_`` variables. SIGTERM must end it with status 0, nothing of ``secrets`` on its
    stderr."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (tmp_path / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = _free_port()
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(
        f'[server]\nport = {port}\nadmin_port = 0\ntls_cert = "{tmp_path}/cert.pem"\ntls_key = "{tmp_path}/key.pem"\n'
        + config
    )
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("DMGW_")} | (env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
        env=process_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_until_serving(port, tmp_path / "ca.pem", process)
        yield Served(port, tmp_path / "ca.pem")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    for secret in secrets:
        assert secret not in stderr.decode()


@pytest.fixture
async def served(emulator, tmp_path) -> AsyncIterator[Served]:
    store_url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    store = await open_store(store_url)
    await store.put_consumer(Consumer(CONSUMER.key, CONSUMER.secret))
    await store.put_token(Token(SEAN.token, SEAN.consumer_key, SEAN.secret))
    await store.close()
    config = f'[upstream]\nbase_url = "{emulator.url}"\n[store]\nurl = "{store_url}"\n'
    async with serving_over_tls(tmp_path, config, secrets=(CONSUMER.secret, SEAN.secret)) as served:
        yield served


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

TWEEPY_37_SCRIPT = (
    CLIENT_SETUP
    + """
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
)

TWEEPY_310_SCRIPT = (
    CLIENT_SETUP
    + """
try:
    result = api.destroy_direct_message(message_id)
    outcome = {"result": result, "status": api.last_response.status_code, "api_code": None}
except tweepy.TweepError as error:
    outcome = {"result": None, "status": error.response.status_code, "api_code": error.api_code}
print(json.dumps({"version": tweepy.__version__, **outcome}))
"""
)

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


# --- Send, list, read and destroy: the whole life of a message through one unmodified client ----------

TWEEPY_37_ROUND_TRIP = (
    CLIENT_SETUP
    + """
sent = api.send_direct_message(screen_name="s0c1alm3dia", text="from tweepy 3.7 <&>")
newest_sent = api.sent_direct_messages(count=1)
shown = api.get_direct_message(sent.id_str)
inbox = api.direct_messages(count=200)
destroyed = api.destroy_direct_message(sent.id_str)
after = api.sent_direct_messages(count=200)
try:
    api.send_direct_message(screen_name="s0c1alm3dia", text="")
    empty = None
except tweepy.TweepError as error:
    empty = error.api_code
print(json.dumps({
    "sent": [sent.id_str, sent.text, sent.sender.screen_name, sent.recipient.screen_name],
    "newest_sent": [dm.id_str for dm in newest_sent],
    "shown": [shown.id_str, shown.text, shown.created_at.isoformat() == sent.created_at.isoformat()],
    "inbox": [[dm.id_str, dm.sender_screen_name, dm.recipient_screen_name] for dm in inbox],
    "destroyed": [destroyed.id_str, destroyed.text, destroyed.recipient.id],
    "after": [dm.id_str for dm in after],
    "empty": empty,
}))
"""
)


async def test_tweepy_3_7_sends_lists_reads_and_destroys(served, emulator, tweepy37) -> None:
    result = await run_client(served, TWEEPY_37_ROUND_TRIP, "-", *SEAN_ARGS, pythonpath=tweepy37)
    new_id = result["sent"][0]
    assert emulator.state.events[new_id]["text"] == "from tweepy 3.7 <&>"
    assert result["sent"] == [new_id, "from tweepy 3.7 <&>", "theSeanCook", "s0c1alm3dia"]
    assert result["newest_sent"] == [new_id]
    assert result["shown"] == [new_id, "from tweepy 3.7 <&>", True]
    # Sean's inbox: every one-to-one message sent to him, newest first; his own and group messages are not.
    assert result["inbox"] == [
        ["1583890000000000007", "", "theSeanCook"],
        ["1583890000000000004", "s0c1alm3dia", "theSeanCook"],
        ["1583890000000000001", "XDevelopers", "theSeanCook"],
        [SEED_002_ID, "s0c1alm3dia", "theSeanCook"],
    ]
    assert result["destroyed"] == [new_id, "from tweepy 3.7 <&>", 776627022]
    assert new_id not in result["after"] and result["after"][0] == PLAIN_IDS[0]
    assert result["empty"] == 38
    assert emulator.state.is_deleted_for(new_id, "38895958")
    # The message was learned when it was sent: its destroy asked v2 for nothing but the delete.
    event_reads = [r for r in emulator.state.requests if r.method == "GET" and r.path == f"/2/dm_events/{new_id}"]
    assert len(event_reads) == 2  # the read-back after the send, and show (which always asks v2)
    sends = [r for r in emulator.state.requests if r.method == "POST"]
    assert len(sends) == 1


TWEEPY_310_ROUND_TRIP = (
    CLIENT_SETUP
    + """
sent = api.send_direct_message(recipient_id="776627022", text="from tweepy 3.10 #legacy")
shown = api.get_direct_message(sent.id)
listed = [dm.id for dm in tweepy.Cursor(api.list_direct_messages, count=2).items()]
api.destroy_direct_message(sent.id)
after = [dm.id for dm in tweepy.Cursor(api.list_direct_messages, count=50).items()]
print(json.dumps({
    "sent": [sent.id, sent.type, sent.message_create["target"]["recipient_id"], sent.message_create["sender_id"],
             sent.message_create["message_data"]["text"]],
    "timestamp_is_ms": sent.created_timestamp.isdigit() and len(sent.created_timestamp) == 13,
    "shown": [shown.id, shown.created_timestamp == sent.created_timestamp],
    "listed": listed,
    "after": after,
}))
"""
)


async def test_tweepy_3_10_sends_pages_through_events_and_destroys(served, emulator) -> None:
    result = await run_client(served, TWEEPY_310_ROUND_TRIP, "-", *SEAN_ARGS)
    new_id = result["sent"][0]
    assert result["sent"] == [new_id, "message_create", "776627022", "38895958", "from tweepy 3.10 #legacy"]
    assert result["timestamp_is_ms"] is True
    assert result["shown"] == [new_id, True]
    # tweepy's cursor follows next_cursor page by page (count=2): every one-to-one message Sean can see,
    # newest first, once each; the group message and the join event are not legacy DMs.
    one_to_one = [
        new_id, "1583890000000000007", "1583890000000000004", "1583890000000000003",
        "1583890000000000002", "1583890000000000001", SEED_002_ID,
    ]  # fmt: skip
    assert result["listed"] == one_to_one
    assert result["after"] == one_to_one[1:]
    pages = [r for r in emulator.state.requests if r.method == "GET" and r.path == "/2/dm_events"]
    assert any("pagination_token" in r.query for r in pages)
