"""The dm-gateway command as an operator meets it: real processes, real ports, one-line failures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.demo import (
    BASIC_PASSWORD,
    BASIC_USERNAME,
    CALLS,
    CONNECT_PASSWORD,
    CONSUMER,
    LEGACY_CONSUMER,
    MARCOS_TOKEN,
    SEAN_OAUTH_TOKEN,
)
from tests.conftest import SEAN_TOKEN, SEED_002_ID

CLI = [sys.executable, "-m", "gateway"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_config_accepts_the_example_file() -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    result = run_cli("check-config", "--config", str(example))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[server]\nport = 70000\n", "server.port must be between 0 and 65535"),
        ("[upstream]\nbase_url = 'api.x.com'\n", "upstream.base_url must be an http(s) URL"),
        ("[store]\nurl = 'postgres://x'\n", "store.url must be"),
        ("[sever]\nport = 1\n", "unknown section [sever]"),
        ("[routes]\nv1_1 = ['/x']\nstatusnet = ['/x']\n", "prefix '/x' is used by both"),
        ("not toml at all = = =", "not valid TOML"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, content, message) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    for command in ("check-config", "serve"):
        result = run_cli(command, "--config", str(path))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (command, result.stderr)


def test_sidecar_credential_needs_explicit_enabling_and_loopback(tmp_path) -> None:
    env = {**os.environ, "DMGW_UPSTREAM_BEARER": SEAN_TOKEN}
    result = run_cli("check-config", env=env)
    assert result.returncode == 2 and "auth.sidecar is false" in result.stderr
    config = tmp_path / "open.toml"
    config.write_text("[server]\nhost = '0.0.0.0'\n[auth]\nsidecar = true\n")
    result = run_cli("check-config", "--config", str(config), env=env)
    assert result.returncode == 2 and "server.host must be loopback" in result.stderr


def test_serve_refuses_a_bad_flag_value_before_listening() -> None:
    result = run_cli("serve", "--upstream", "ftp://example.invalid", "--store", "memory")
    assert result.returncode == 2
    assert "upstream.base_url" in result.stderr


async def test_serve_runs_in_front_of_an_upstream_and_stops_on_sigterm(emulator, tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "DMGW_UPSTREAM_BEARER": SEAN_TOKEN}
    config = tmp_path / "sidecar.toml"
    config.write_text("[auth]\nsidecar = true\n")
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--config", str(config), "--port", str(port), "--admin-port", "0", "--upstream", emulator.url,
        "--store", f"sqlite:///{tmp_path}/serve.sqlite3",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.post(
                        f"http://127.0.0.1:{port}/1.1/direct_messages/destroy.json?id={SEED_002_ID}"
                    ) as response:
                        assert response.status == 200
                        assert (await response.json())["id_str"] == SEED_002_ID
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("dm-gateway serve never answered")
        assert (tmp_path / "serve.sqlite3").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr
    log = stderr.decode()
    # The access log: one bare JSON object per line, among the other log lines.
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    destroys = [entry for entry in access if entry["path"] == "/1.1/direct_messages/destroy.json"]
    assert [(e["method"], e["status"], e["dialect"]) for e in destroys] == [("POST", 200, "twitter_v1")]
    assert SEAN_TOKEN not in log and f"id={SEED_002_ID}" not in log  # no credentials, no query strings


def test_demo_shows_every_form_working() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = out.splitlines()
    # Readable on a terminal: no line wider than 110 characters, every body shortened.
    assert [line for line in lines if len(line) > 110] == []
    assert "more lines)" in out
    # One summary line per call: a ✓, the status each form must answer, and its path.
    summaries = [line for line in lines if line.startswith(("✓ ", "✗ "))]
    for call in CALLS:
        assert any(line.startswith(f"✓ {call.expect} {call.method} {call.path.split('?')[0]}  ") for line in summaries)
    assert not any(line.startswith("✗") for line in summaries)
    assert "16 of 16 calls answered as a legacy client expects." in out
    # What each answer shows: the message deleted, or the error in the calling dialect's shape.
    destroyed = (
        '✓ 200 POST /1.1/direct_messages/destroy.json  message from s0c1alm3dia to theSeanCook: "hello, tworld."'
    )
    assert destroyed in lines
    assert "✓ 204 DELETE /1.1/direct_messages/events/destroy.json  no body" in lines
    assert (
        "✓ 404 POST /1.1/direct_messages/destroy.json  the dialect's error: Sorry, that page does not exist (34)"
        in lines
    )
    assert "✓ 406 POST /api/direct_messages/new.xml  the dialect's error: No message text!" in lines
    assert "<text>Tags &lt;b&gt;&amp;amp;" in out
    # A legacy client's OAuth 1.0a signature, verified, and the same token re-signed for v2.
    signed = out.split("> POST /1.1/direct_messages/destroy.json?id=1583890000000000001\n", 1)[1]
    assert signed.startswith('> Authorization: OAuth oauth_consumer_key="emulator-consumer", oauth_token="38895958-')
    resigned = signed.split("(X API v2 got DELETE /2/dm_events/1583890000000000001, re-signed:\n", 1)[1]
    assert resigned.startswith(' OAuth oauth_consumer_key="emulator-consumer", oauth_token="38895958-')
    # A forged signature: the legacy 401, code 32, and nothing sent upstream.
    forged = out.split("a forged OAuth 1.0a signature", 1)[1].split("\n== ", 1)[0]
    assert (
        "✓ 401 POST /1.1/direct_messages/destroy.json  the dialect's error: Could not authenticate you (32)" in forged
    )
    assert '"code": 32' in forged
    assert "(nothing reached X API v2)" in forged
    # HTTP Basic and the client's own bearer token, shown redacted.
    assert "> DELETE /api/direct_messages/destroy/38.json\n> Authorization: Basic …  (marcos" in out
    assert "> POST /api/direct_messages/destroy/39.xml\n> Authorization: Bearer …  (" in out
    basic_pair = base64.b64encode(f"{BASIC_USERNAME}:{BASIC_PASSWORD}".encode()).decode()
    # A client with only its consumer key logs in through the gateway by PIN and deletes a DM.
    login = out.split("== Log in through the gateway", 1)[1]
    request_token = f'> Authorization: OAuth oauth_callback="oob", oauth_consumer_key="{LEGACY_CONSUMER.key}"'
    assert "> POST /oauth/request_token\n" + request_token in login
    assert "oauth_token_secret=…&oauth_callback_confirmed=true" in login
    assert "s0c1alm3dia approves the app and is shown the PIN " in login
    assert "&oauth_token_secret=…&user_id=776627022&screen_name=s0c1alm3dia" in login
    assert destroyed in login
    operator = login.split("(X API v2 got DELETE /2/dm_events/240251665733795841, signed by the operator's app:\n", 1)
    assert operator[1].startswith(' OAuth oauth_consumer_key="emulator-consumer", oauth_token="776627022-')
    assert f"(the consumer key {LEGACY_CONSUMER.key} never reached X)" in login
    assert "A client with only its consumer key logged in and deleted a DM.\n" in out
    secrets = (CONSUMER.secret, SEAN_OAUTH_TOKEN.secret, BASIC_PASSWORD, basic_pair, MARCOS_TOKEN, SEAN_TOKEN)
    for secret in (*secrets, LEGACY_CONSUMER.secret):
        assert secret not in out and secret not in result.stderr
    # A StatusNet user connects at /connect, then their client lists their messages with the new password.
    connect = out.split("== A StatusNet user connects their X account at /connect", 1)[1]
    assert "(the gateway asked X: POST /2/oauth2/token, GET /2/users/me)" in connect
    assert "< 200 OK  (Connected · DM gateway)" in connect
    assert "✓ 200 GET /api/direct_messages.json  1 message from an account that is gone to theSeanCook: " in connect
    assert '"text": "from a vanished account",' in connect
    assert lines[-1] == "The user connected and their client works."
    assert CONNECT_PASSWORD not in out and "invite=" + "…" in connect


async def test_emulator_command_serves_v2(tmp_path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *CLI, "emulator", "--port", str(port), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        assert f"http://127.0.0.1:{port}" in line.decode()
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {SEAN_TOKEN}"}
            async with session.delete(f"http://127.0.0.1:{port}/2/dm_events/{SEED_002_ID}", headers=headers) as resp:
                assert resp.status == 200
                assert await resp.json() == {"data": {"deleted": True}}
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0
