"""Secrets at rest and around the command line, as someone who can read the disk, Redis or ``ps`` would look
for them: store files owner-only, credential secrets encrypted with ``store.encryption_key``, check-config
failing as serve would, and a Server header that names no versions."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, OAuth2Grant, hash_password
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from tests.conftest import PLAIN_IDS, REDIS_URL, SEED_002_ID, SEED_003_XML_ID, redis_namespace
from tests.test_auth import CONSUMER, SEAN, auth_config, basic, send, signed
from tests.test_cli import free_port

KEY = Fernet.generate_key().decode()
PASSWORD = "correct horse battery staple"
MARCOS_GRANT = OAuth2Grant("emulator-token-marcosgdf")
# Expired, so the first call refreshes it and the store is written again with the new pair.
SEAN_GRANT = OAuth2Grant("emulator-oauth2-access-theSeanCook", "emulator-oauth2-refresh-theSeanCook", 1.0)
SECRETS = (CONSUMER.secret, SEAN.secret, MARCOS_GRANT.access_token, SEAN_GRANT.access_token, SEAN_GRANT.refresh_token)

CLASSIC = "/1.1/direct_messages/destroy.json"
EVENTS = "/1.1/direct_messages/events/destroy.json"


# --- Backends, and what an attacker reading them sees ---------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
async def location(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(backend, where): a SQLite file's path, or a Redis key prefix of the test's own."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "secrets.sqlite3")
        return
    request.getfixturevalue("redis_url")
    async with redis_namespace(REDIS_URL) as prefix:
        yield "redis", prefix


@asynccontextmanager
async def store_at(where: tuple[str, str], key: str | None) -> AsyncIterator[Any]:
    backend, place = where
    if backend == "sqlite":
        store: Any = await SQLiteStore.open(place, encryption_key=key)
    else:
        store = await RedisStore.open(REDIS_URL, prefix=place, encryption_key=key)
    try:
        yield store
    finally:
        await store.close()


async def raw_bytes(where: tuple[str, str]) -> bytes:
    """Everything the backend holds, as stored: the SQLite file with its log, or every Redis value."""
    backend, place = where
    if backend == "sqlite":
        # A test's few small reads: blocking the loop for them is harmless.
        return b"".join(
            Path(name).read_bytes()  # noqa: ASYNC240
            for name in (place, place + "-wal")
            if Path(name).exists()  # noqa: ASYNC240
        )
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        parts = []
        async for name in client.scan_iter(match=place + "*"):
            kind = await client.type(name)
            if kind == b"string":
                parts.append(await client.get(name))
            elif kind == b"hash":
                parts += [k + b"=" + v for k, v in (await client.hgetall(name)).items()]
            elif kind == b"zset":  # the size indexes: message and user ids
                parts += list(await client.zrange(name, 0, -1))
            else:
                parts += list(await client.smembers(name))
        return b"\n".join(parts)
    finally:
        await client.aclose()


async def raw_rows(where: tuple[str, str]) -> bytes:
    """The credentials as the backend holds them now: the SQLite rows (bytes as stored, text as UTF-8), or every
    Redis value."""
    if where[0] == "redis":
        return await raw_bytes(where)
    fields = [value for rows in sqlite_rows(where[1]).values() for row in rows for value in row]
    return b"\n".join(value if isinstance(value, bytes) else str(value).encode() for value in fields)


def sqlite_rows(path: str) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {
            "consumers": db.execute("SELECT key, secret FROM consumers ORDER BY key").fetchall(),
            "tokens": db.execute("SELECT token, secret FROM tokens ORDER BY token").fetchall(),
            "basic_users": db.execute("SELECT username, password_hash, grant_record FROM basic_users").fetchall(),
        }


async def register(store: Any) -> None:
    await store.put_consumer(CONSUMER)
    await store.put_token(SEAN)
    await store.put_user(BasicUser("marcos", hash_password(PASSWORD), MARCOS_GRANT))
    await store.put_user(BasicUser("sean", hash_password(PASSWORD), SEAN_GRANT))


def in_clear(data: bytes, secrets: tuple[str, ...]) -> list[str]:
    return [secret for secret in secrets if secret.encode() in data]


async def authenticate_every_way(client: Any, emulator: Any) -> None:
    """A signed OAuth 1.0a destroy, a Basic one, and a Basic one whose expired grant is refreshed: each must
    reach v2 with the credential the store held."""
    response = await send(client, signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}"))
    assert response.status == 200, await response.text()
    sent = next(r for r in emulator.state.requests if r.method == "DELETE").headers["Authorization"]
    assert 'oauth_token="38895958-emulatortoken"' in sent
    assert emulator.state.is_deleted_for(SEED_002_ID, "38895958")  # v2 verified the re-signed call

    response = await client.post(
        f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", headers=basic("marcos", PASSWORD)
    )
    assert response.status == 200, await response.text()
    assert emulator.state.requests[-1].headers["Authorization"] == f"Bearer {MARCOS_GRANT.access_token}"

    response = await client.delete(f"{EVENTS}?id={PLAIN_IDS[0]}", headers=basic("sean", PASSWORD))
    assert response.status == 204, await response.text()
    assert emulator.state.token_refreshes == 1


# --- 1. Store files are owner-only ----------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Any:
    """The most permissive umask: only the mode a file is created with keeps others out."""
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def modes(directory: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in sorted(directory.iterdir())}


async def test_a_new_sqlite_store_and_its_log_files_are_owner_only(
    make_gateway, emulator, tmp_path, open_umask
) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    client = await make_gateway(store_url=f"sqlite:///{directory}/gateway.sqlite3")
    opened = modes(directory)
    assert "gateway.sqlite3" in opened and set(opened.values()) == {0o600}, opened
    # Traffic that writes: a destroy learns its message and records the deletion.
    response = await client.post(f"{CLASSIC}?id={SEED_002_ID}")
    assert response.status == 200, await response.text()
    assert [r.method for r in emulator.state.requests if r.method == "DELETE"] == ["DELETE"]
    assert modes(directory) == {"gateway.sqlite3": 0o600, "gateway.sqlite3-shm": 0o600, "gateway.sqlite3-wal": 0o600}
    await client.close()  # the deletion record is written after the answer; closing waits for it
    with sqlite3.connect(directory / "gateway.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM messages WHERE deletions IS NOT NULL").fetchone() == (1,)


async def test_a_store_file_open_to_others_is_warned_about_once_at_start(tmp_path, caplog) -> None:
    path = tmp_path / "old.sqlite3"
    store = await SQLiteStore.open(str(path))
    await store.put_consumer(CONSUMER)
    await store.close()
    path.chmod(0o644)  # as an older gateway left it
    caplog.set_level(logging.WARNING, logger="gateway.store")
    store = await SQLiteStore.open(str(path))
    try:
        assert await store.get_consumer(CONSUMER.key) == CONSUMER
    finally:
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"store file {path} has mode 0644: others than its owner may read it; chmod 600 it"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # warned about, not changed behind the operator's back


# --- 2. Credential secrets are encrypted with the store's key -------------------------------------------


async def test_with_a_key_no_credential_secret_is_stored_in_clear(aiohttp_client, emulator, location) -> None:
    async with store_at(location, KEY) as store:
        await register(store)
        client = await aiohttp_client(create_app(auth_config(emulator), store=store))
        await authenticate_every_way(client, emulator)
        refreshed = (await store.get_user("sean")).grant
        assert refreshed.access_token != SEAN_GRANT.access_token and refreshed.refresh_token
        secrets = (*SECRETS, refreshed.access_token, refreshed.refresh_token)
        # Not in the rows, nor anywhere in the SQLite file and its log (old versions of pages included).
        assert in_clear(await raw_bytes(location), secrets) == []
        assert in_clear(await raw_rows(location), secrets) == []
        if location[0] == "sqlite":
            rows = sqlite_rows(location[1])
            assert [secret[:1] for _, secret in rows["consumers"] + rows["tokens"]] == [b"\xff", b"\xff"]  # sealed
            assert [hashed.split("$")[0] for _, hashed, _ in rows["basic_users"]] == ["scrypt", "scrypt"]
            grants = [orjson.loads(grant) for _, _, grant in rows["basic_users"]]
            assert all("access_token_enc" in grant and "access_token" not in grant for grant in grants)


async def test_secrets_stored_in_clear_before_the_key_still_work_and_are_sealed_when_rewritten(
    aiohttp_client, emulator, location
) -> None:
    async with store_at(location, None) as store:
        await register(store)
    assert in_clear(await raw_rows(location), SECRETS) == list(SECRETS)  # what a store without a key holds
    async with store_at(location, KEY) as store:
        client = await aiohttp_client(create_app(auth_config(emulator), store=store))
        await authenticate_every_way(client, emulator)
        # The refresh rewrote sean's grant; the operator registers the consumer and token again.
        await store.put_consumer(CONSUMER)
        await store.put_token(SEAN)
        assert in_clear(await raw_rows(location), SECRETS) == [MARCOS_GRANT.access_token]
        assert await store.get_token(SEAN.token) == SEAN


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "it is encrypted and no store.encryption_key is configured"),
        (Fernet.generate_key().decode(), "it does not open with the configured key"),
    ],
    ids=["no key", "another key"],
)
async def test_an_encrypted_secret_without_its_key_is_a_clear_error_and_nothing_goes_upstream(
    aiohttp_client, emulator, location, caplog, key, reason
) -> None:
    async with store_at(location, KEY) as store:
        await register(store)
    async with store_at(location, key) as store:
        client = await aiohttp_client(create_app(auth_config(emulator), store=store))
        response = await send(client, signed(client, "POST", f"{CLASSIC}?id={SEED_002_ID}"))
        assert response.status == 503
        assert orjson.loads(await response.read())["errors"][0]["code"] == 130
        response = await client.post(
            f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", headers=basic("marcos", PASSWORD)
        )
        assert response.status == 503
        assert "<hash>" in await response.text()  # StatusNet's own error shape
        assert emulator.state.requests == []
    said = caplog.text
    assert "the secret of consumer 'emulator-consumer' cannot be read" in said
    assert "the upstream grant of user 'marcos' cannot be read" in said
    assert f"cannot be read: {reason}" in said
    assert "Traceback" not in said
    assert in_clear(said.encode(), SECRETS) == []


# --- 3. Secrets on the command line can come from stdin -------------------------------------------------


def run_credentials(*args: str, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("DMGW_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "credentials", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env={**base, **env},
    )  # fmt: skip


def test_secrets_read_from_stdin_are_sealed_with_the_configured_key(tmp_path) -> None:
    db = tmp_path / "cli.sqlite3"
    store, env = ["--store", f"sqlite:///{db}"], {"DMGW_STORE_ENCRYPTION_KEY": KEY}
    steps = [
        (["add-consumer", CONSUMER.key, "-"], f"{CONSUMER.secret}\n"),
        (["add-token", CONSUMER.key, SEAN.token, "-"], f"{SEAN.secret}\n"),
        (
            ["add-user", "sean", "--upstream-refresh-token", "-", "--password-stdin", "--upstream-bearer", "-"],
            f"{SEAN_GRANT.refresh_token}\n{PASSWORD}\n{SEAN_GRANT.access_token}\n",
        ),
    ]
    for args, stdin in steps:
        result = run_credentials(*store, *args, stdin=stdin, env=env)
        assert result.returncode == 0, result.stderr
        assert in_clear((result.stdout + result.stderr).encode(), (*SECRETS, PASSWORD)) == []
    data = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert in_clear(data, (*SECRETS, PASSWORD)) == []

    async def read() -> tuple[Any, ...]:
        opened = await SQLiteStore.open(str(db), encryption_key=KEY)
        try:
            return (
                await opened.get_consumer(CONSUMER.key),
                await opened.get_token(SEAN.token),
                await opened.get_user("sean"),
            )
        finally:
            await opened.close()

    consumer, token, user = asyncio.run(read())
    assert (consumer, token) == (CONSUMER, SEAN)
    assert (user.grant.access_token, user.grant.refresh_token) == (SEAN_GRANT.access_token, SEAN_GRANT.refresh_token)

    # Listing needs no secret in clear but reads the grants: without the key it says why it cannot.
    result = run_credentials(*store, "list", stdin="", env={})
    assert result.returncode == 1 and result.stdout == ""
    assert one_line(result.stderr) == (
        "dm-gateway credentials: sqlite: the upstream grant of user 'sean' cannot be read: "
        "it is encrypted and no store.encryption_key is configured"
    )
    result = run_credentials(*store, "list", stdin="", env=env)
    assert result.returncode == 0 and "user     sean" in result.stdout, result.stderr


# --- 4. check-config fails as serve would ---------------------------------------------------------------


def dm_gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("DMGW_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def tls_pair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("problem", ["key of another certificate", "key not PEM", "certificate not PEM"])
def test_a_tls_pair_serve_cannot_use_fails_check_config_too(tmp_path, problem) -> None:
    cert, key = tls_pair(tmp_path, "one")
    other_cert, other_key = tls_pair(tmp_path, "two")
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not PEM\n")
    cert, key, expected = {
        "key of another certificate": (
            cert,
            other_key,
            "server.tls_key is not the key of the certificate in server.tls_cert",
        ),
        "key not PEM": (cert, junk, f"server.tls_key: '{junk}' is not a PEM private key"),
        "certificate not PEM": (junk, key, f"server.tls_cert: '{junk}' is not a PEM certificate"),
    }[problem]
    config = tmp_path / "tls.toml"
    config.write_text(
        f"[server]\ntls_cert = '{cert}'\ntls_key = '{key}'\nport = 0\nadmin_port = 0\n[store]\nurl = 'memory'\n"
    )
    for command in ("check-config", "serve"):
        result = dm_gateway(command, "--config", str(config))
        assert result.returncode == 2, (command, result.stderr)
        assert one_line(result.stderr) == f"dm-gateway: configuration error: {expected}", command
    assert dm_gateway("check-config", "--config", str(config).replace("tls.toml", "x")).returncode == 2
    config.write_text(f"[server]\ntls_cert = '{other_cert}'\ntls_key = '{other_key}'\n[store]\nurl = 'memory'\n")
    assert dm_gateway("check-config", "--config", str(config)).returncode == 0


def test_an_unreachable_redis_fails_check_config(tmp_path) -> None:
    config = tmp_path / "redis.toml"
    config.write_text(f"[store]\nurl = 'redis://127.0.0.1:{free_port()}/0'\n")
    result = dm_gateway("check-config", "--config", str(config))
    assert result.returncode == 1  # as serve: a store that cannot be opened
    assert one_line(result.stderr).startswith("dm-gateway: cannot start: redis: ConnectionError")


def test_check_config_opens_the_sqlite_file_but_never_creates_it(tmp_path) -> None:
    config = tmp_path / "sqlite.toml"
    db = tmp_path / "not-yet.sqlite3"
    config.write_text(f"[store]\nurl = 'sqlite:///{db}'\n")
    result = dm_gateway("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr  # serve would create it
    assert not db.exists()

    db.write_bytes(b"not a database at all" * 300)
    db.chmod(0o600)
    result = dm_gateway("check-config", "--config", str(config))
    assert result.returncode == 1
    assert one_line(result.stderr) == f"dm-gateway: cannot start: sqlite: {db}: file is not a database"


def test_a_sqlite_store_in_a_missing_directory_is_refused_and_never_created(tmp_path) -> None:
    missing = tmp_path / "typo" / "deeper"
    config = tmp_path / "missing.toml"
    config.write_text(f"[store]\nurl = 'sqlite:///{missing}/gateway.sqlite3'\n[server]\nport = 0\nadmin_port = 0\n")
    expected = f"dm-gateway: configuration error: store.url: the directory '{missing}' does not exist (the gateway never creates it)"
    for args in (["check-config"], ["serve"], ["credentials", "list"]):
        result = dm_gateway(*args, "--config", str(config))
        assert result.returncode == 2, (args, result.stderr)
        assert one_line(result.stderr) == expected, args
    assert not (tmp_path / "typo").exists()


# --- 5. The Server header names no versions -------------------------------------------------------------


async def raw_exchange(port: int, request: bytes) -> tuple[str, dict[str, str]]:
    """The status line and headers of the answer to ``request``, sent as bytes on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    status, *lines = head.decode("latin-1").strip().split("\r\n")
    return status, {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


async def test_the_server_header_names_no_versions_on_either_listener(tmp_path) -> None:
    port, admin_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--port", str(port), "--admin-port", str(admin_port),
        "--store", "memory", "--upstream", "http://127.0.0.1:9",
        env={name: value for name, value in os.environ.items() if not name.startswith("DMGW_")},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                await raw_exchange(admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                break
            except OSError:
                await asyncio.sleep(0.05)
        requests = {
            (
                port,
                "401",
            ): b"POST /1.1/direct_messages/destroy.json?id=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            (port, "404"): b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
            (port, "400"): b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            (admin_port, "200"): b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            (admin_port, "404"): b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
            (admin_port, "400"): b"NOT-HTTP\r\n\r\n",
        }
        for (listener, status), request in requests.items():
            status_line, headers = await raw_exchange(listener, request)
            assert status_line.split()[1] == status, (listener, status_line)
            assert headers["server"] == "legacy-dm-gateway", (listener, status, headers)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
