"""load_config: defaults, file, environment and flags in that order; every bad value stops start-up."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    ENV_STORE_ENCRYPTION_KEY,
    ENV_UPSTREAM_BEARER,
    AuthConfig,
    Config,
    ConfigError,
    RoutesConfig,
    ServerConfig,
    StoreConfig,
    UpstreamConfig,
    load_config,
    store_location,
)


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    """The message of the ConfigError that load_config raises; it must be a single line."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    message = str(info.value)
    assert message.strip()
    assert "\n" not in message and "\r" not in message, message
    return message


# Defaults and precedence ------------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    config = load_config(env={})
    assert config == Config()
    assert config.server == ServerConfig(host="127.0.0.1", port=8080, max_body_bytes=64 * 1024)
    assert config.upstream.base_url == "https://api.x.com"
    assert config.upstream.bearer_token is None
    assert config.upstream.connect_timeout == 3.0
    assert config.upstream.timeout == 10.0
    assert config.store.url == "sqlite:///dm-gateway.sqlite3"
    assert config.routes == RoutesConfig(v1_1=("/1.1",), statusnet=("/1", "/api"))


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == Config()


def test_file_overrides_every_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
host = "0.0.0.0"
port = 9000
max_body_bytes = 2048

[upstream]
base_url = "http://127.0.0.1:8090"
connect_timeout = 1
timeout = 2.5
max_response_bytes = 4096
oauth2_client_id = "client"
oauth2_client_secret = "client-secret"
token_url = "http://127.0.0.1:8091/oauth2/token"

[store]
url = "memory"

[routes]
v1_1 = ["/twitter/1.1", ""]
statusnet = ["/statusnet/api"]

[auth]
timestamp_window = 120
trusted_proxies = ["10.0.0.0/8", "::1"]
public_base_urls = ["https://api.twitter.com"]
""",
    )
    config = load_config(path, env={})
    assert config.server == ServerConfig(host="0.0.0.0", port=9000, max_body_bytes=2048)
    assert config.upstream == UpstreamConfig(
        base_url="http://127.0.0.1:8090",
        connect_timeout=1.0,
        timeout=2.5,
        max_response_bytes=4096,
        oauth2_client_id="client",
        oauth2_client_secret="client-secret",
        token_url="http://127.0.0.1:8091/oauth2/token",
    )
    assert config.upstream.oauth2_token_url == "http://127.0.0.1:8091/oauth2/token"
    assert config.auth == AuthConfig(
        sidecar=False,
        timestamp_window=120,
        trusted_proxies=("10.0.0.0/8", "::1"),
        public_base_urls=("https://api.twitter.com",),
    )
    # An integer timeout becomes a float.
    assert type(config.upstream.connect_timeout) is float
    assert config.store == StoreConfig(url="memory")
    assert config.routes == RoutesConfig(v1_1=("/twitter/1.1", ""), statusnet=("/statusnet/api",))
    # Lists become tuples, so the frozen config really is immutable.
    assert isinstance(config.routes.v1_1, tuple)


def test_a_partial_section_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nport = 9001\n"), env={})
    assert config.server.port == 9001
    assert config.server.host == ServerConfig().host
    assert config.upstream == UpstreamConfig()


def test_environment_bearer_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstream]\nbearer_token = "from-file"\n[auth]\nsidecar = true\n')
    assert load_config(path, env={}).upstream.bearer_token == "from-file"
    config = load_config(path, env={ENV_UPSTREAM_BEARER: "from-env"})
    assert config.upstream.bearer_token == "from-env"


def test_empty_environment_bearer_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstream]\nbearer_token = "from-file"\n[auth]\nsidecar = true\n')
    assert load_config(path, env={ENV_UPSTREAM_BEARER: ""}).upstream.bearer_token == "from-file"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_UPSTREAM_BEARER, "from-process-env")
    assert load_config(overrides={"auth": {"sidecar": True}}).upstream.bearer_token == "from-process-env"
    monkeypatch.delenv(ENV_UPSTREAM_BEARER)
    assert load_config().upstream.bearer_token is None


def test_flags_beat_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9000\n[upstream]\nbearer_token = "from-file"\n[auth]\nsidecar = true\n')
    config = load_config(
        path,
        env={ENV_UPSTREAM_BEARER: "from-env"},
        overrides={"server": {"port": 9100}, "upstream": {"bearer_token": "from-flag"}},
    )
    assert config.server.port == 9100
    assert config.upstream.bearer_token == "from-flag"


def test_flags_left_unset_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nhost = "10.0.0.1"\nport = 9000\n')
    config = load_config(path, env={}, overrides={"server": {"host": None, "port": None}})
    assert (config.server.host, config.server.port) == ("10.0.0.1", 9000)


def test_bearer_token_never_appears_in_repr(tmp_path: Path) -> None:
    secret = "s3cr3t-bearer-AAAAAAAAAAAAAAAAAAAA"
    config = load_config(write(tmp_path, f'[upstream]\nbearer_token = "{secret}"\n[auth]\nsidecar = true\n'), env={})
    assert config.upstream.bearer_token == secret
    assert secret not in repr(config)
    assert secret not in repr(config.upstream)
    assert secret not in str(config)
    env_config = load_config(env={ENV_UPSTREAM_BEARER: secret}, overrides={"auth": {"sidecar": True}})
    assert secret not in repr(env_config)


def test_port_boundaries_are_accepted() -> None:
    assert load_config(env={}, overrides={"server": {"port": 0}}).server.port == 0
    assert load_config(env={}, overrides={"server": {"port": 65535}}).server.port == 65535


def test_base_url_with_a_bare_trailing_slash_is_accepted() -> None:
    config = load_config(env={}, overrides={"upstream": {"base_url": "https://api.x.com/"}})
    assert config.upstream.base_url == "https://api.x.com/"


def test_empty_prefix_mounts_a_family_at_the_root() -> None:
    config = load_config(env={}, overrides={"routes": {"statusnet": [""], "v1_1": ["/1.1"]}})
    assert config.routes.statusnet == ("",)


# Files that cannot be read ----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(path=missing)
    assert str(missing) in message


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    message = config_error(path=tmp_path)
    assert str(tmp_path) in message


@pytest.mark.parametrize(
    "text",
    [
        "[server\nport = 1\n",
        "[server]\nport = \n",
        "[server]\nport = 1\nport = 2\n",
        "just words\n",
    ],
    ids=["unclosed-table", "missing-value", "duplicate-key", "not-toml"],
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path=path)
    assert str(path) in message
    assert "TOML" in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    message = config_error(path=path)
    assert str(path) in message


# Bad values: each a one-line ConfigError naming the key ------------------------------------------------


def test_unknown_section_in_file(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "[logging]\nlevel = 'debug'\n"))
    assert "logging" in message


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "server = 8080\n"))
    assert "server" in message


def test_unknown_section_in_flags() -> None:
    message = config_error(overrides={"sever": {"port": 9000}})
    assert "sever" in message


@pytest.mark.parametrize("section", ["server", "upstream", "store", "routes"])
def test_unknown_key_in_file(tmp_path: Path, section: str) -> None:
    message = config_error(path=write(tmp_path, f"[{section}]\nbogus_key = 1\n"))
    assert f"{section}.bogus_key" in message


def test_unknown_key_in_flags() -> None:
    message = config_error(overrides={"server": {"prot": 1}})
    assert "server.prot" in message


WRONG_TYPES = [
    ("server", "port", "true"),  # bool is an int subclass in Python; must still be refused
    ("server", "port", "false"),
    ("server", "port", '"8080"'),
    ("server", "port", "80.5"),
    ("server", "max_body_bytes", "true"),
    ("server", "host", "127"),
    ("server", "host", "['a']"),
    ("upstream", "base_url", "1"),
    ("upstream", "bearer_token", "123"),
    ("upstream", "bearer_token", "false"),
    ("upstream", "timeout", "true"),
    ("upstream", "timeout", '"10"'),
    ("upstream", "connect_timeout", "false"),
    ("upstream", "max_response_bytes", "1.5e6"),
    ("upstream", "max_response_bytes", "true"),
    ("store", "url", "true"),
    ("routes", "v1_1", '"/1.1"'),
    ("routes", "statusnet", "[1]"),
    ("routes", "statusnet", '["/1", true]'),
]


@pytest.mark.parametrize(("section", "key", "value"), WRONG_TYPES)
def test_wrong_type_in_file(tmp_path: Path, section: str, key: str, value: str) -> None:
    message = config_error(path=write(tmp_path, f"[{section}]\n{key} = {value}\n"))
    assert f"{section}.{key}" in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "port", True),
        ("server", "port", "8080"),
        ("upstream", "timeout", False),
        ("routes", "v1_1", "/1.1"),
        ("store", "url", 5),
    ],
)
def test_wrong_type_in_flags(section: str, key: str, value: Any) -> None:
    message = config_error(overrides={section: {key: value}})
    assert f"{section}.{key}" in message


@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_port_out_of_range(port: int) -> None:
    message = config_error(overrides={"server": {"port": port}})
    assert "server.port" in message
    assert str(port) in message


def test_empty_host() -> None:
    assert "server.host" in config_error(overrides={"server": {"host": ""}})


def test_tiny_body_limit() -> None:
    assert "server.max_body_bytes" in config_error(overrides={"server": {"max_body_bytes": 10}})


@pytest.mark.parametrize("key", ["keepalive_timeout", "client_timeout", "shutdown_timeout"])
@pytest.mark.parametrize("value", [0, -1.5, math.inf, math.nan, True, "30"])
def test_server_timeouts_must_be_positive_finite_numbers(key: str, value: Any) -> None:
    assert f"server.{key}" in config_error(overrides={"server": {key: value}})


def test_server_timeouts_and_workers_are_read_from_the_file(tmp_path: Path) -> None:
    text = "[server]\nkeepalive_timeout = 5\nclient_timeout = 2.5\nshutdown_timeout = 45\nworkers = 3\n[store]\nurl = 'sqlite:///x.db'\n"
    server = load_config(write(tmp_path, text), env={}).server
    assert (server.keepalive_timeout, server.client_timeout, server.shutdown_timeout, server.workers) == (
        5.0,
        2.5,
        45.0,
        3,
    )


@pytest.mark.parametrize("workers", [0, -1, 65, 1.5, "2"])
def test_workers_out_of_range(workers: Any) -> None:
    assert "server.workers" in config_error(overrides={"server": {"workers": workers}})


def test_several_workers_need_a_shared_store_and_a_fixed_port() -> None:
    sqlite = {"url": "sqlite:///shared.sqlite3"}
    assert load_config(env={}, overrides={"server": {"workers": 4}, "store": sqlite}).server.workers == 4
    assert load_config(env={}, overrides={"server": {"workers": 1}, "store": {"url": "memory"}}).server.workers == 1
    message = config_error(overrides={"server": {"workers": 2}, "store": {"url": "memory"}})
    assert "server.workers" in message and "memory" in message
    message = config_error(overrides={"server": {"workers": 2, "port": 0}, "store": sqlite})
    assert "server.workers" in message and "server.port" in message


def test_several_workers_need_so_reuseport(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    message = config_error(overrides={"server": {"workers": 2}, "store": {"url": "sqlite:///shared.sqlite3"}})
    assert "SO_REUSEPORT" in message


def test_tiny_response_limit() -> None:
    assert "upstream.max_response_bytes" in config_error(overrides={"upstream": {"max_response_bytes": 0}})


@pytest.mark.parametrize(
    "url",
    [
        "api.x.com",
        "//api.x.com",
        "ftp://api.x.com",
        "https://",
        "https:///path-only",
        "",
        "https://api.x.com/2",
        "https://api.x.com/2/",
        "https://api.x.com?x=1",
        "https://api.x.com#frag",
        "https://api.x.com:99999",
        "https://api.x.com:abc",
        "https://user:secret@api.x.com",
    ],
)
def test_bad_base_url(url: str) -> None:
    assert "upstream.base_url" in config_error(overrides={"upstream": {"base_url": url}})


@pytest.mark.parametrize("key", ["timeout", "connect_timeout"])
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf])
def test_timeouts_must_be_positive_and_finite(key: str, value: float) -> None:
    assert f"upstream.{key}" in config_error(overrides={"upstream": {key: value}})


@pytest.mark.parametrize("literal", ["nan", "inf", "-inf", "0", "-3"])
def test_non_positive_or_non_finite_timeout_in_file(tmp_path: Path, literal: str) -> None:
    message = config_error(path=write(tmp_path, f"[upstream]\ntimeout = {literal}\n"))
    assert "upstream.timeout" in message


@pytest.mark.parametrize("token", ["", " ", "\t", "  \t "])
def test_blank_bearer_in_file(tmp_path: Path, token: str) -> None:
    message = config_error(path=write(tmp_path, f'[upstream]\nbearer_token = "{token}"\n'))
    assert "upstream.bearer_token" in message


def test_blank_bearer_from_environment() -> None:
    message = config_error(env={ENV_UPSTREAM_BEARER: "   "})
    assert "upstream.bearer_token" in message


def test_blank_bearer_message_does_not_echo_the_value() -> None:
    # Nothing to leak for a blank one, but the message must not dump the upstream section either.
    message = config_error(overrides={"upstream": {"bearer_token": " "}})
    assert "UpstreamConfig" not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///", "sqlite://relative.db", "sqlite:relative.db", "", "Memory", "postgres://x",
        "redis://", "redis://:6379/0", "redis://localhost:port/0", "redis://localhost:0/0",
        "redis://localhost:99999/0", "redis://localhost:6379/zero", "redis://localhost:6379/0?prefix=x",
        "redis:localhost", "REDIS://localhost",
    ],
)  # fmt: skip
def test_bad_store_url(url: str) -> None:
    assert "store.url" in config_error(overrides={"store": {"url": url}})


def test_bad_redis_store_url_does_not_echo_its_password() -> None:
    message = config_error(overrides={"store": {"url": "redis://:hunter2-SECRET@localhost:nope/0"}})
    assert "store.url" in message and "hunter2-SECRET" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory", ("memory", "")),
        ("memory://", ("memory", "")),
        ("sqlite:///dm.sqlite3", ("sqlite", "dm.sqlite3")),
        ("sqlite:////var/lib/dm.sqlite3", ("sqlite", "/var/lib/dm.sqlite3")),
        ("redis://localhost:6379", ("redis", "redis://localhost:6379")),
        ("redis://127.0.0.1:6379/0", ("redis", "redis://127.0.0.1:6379/0")),
        ("redis://cache.internal/3", ("redis", "redis://cache.internal/3")),
        ("redis://:pw@[::1]:6380/15", ("redis", "redis://:pw@[::1]:6380/15")),
        ("rediss://user:pw@redis.example:6380/1", ("redis", "rediss://user:pw@redis.example:6380/1")),
    ],
)
def test_store_location(url: str, expected: tuple[str, str]) -> None:
    assert store_location(url) == expected
    assert load_config(env={}, overrides={"store": {"url": url}}).store.url == url


@pytest.mark.parametrize(
    ("family", "prefixes"),
    [
        ("v1_1", ["/1.1/"]),
        ("v1_1", ["1.1"]),
        ("statusnet", ["api"]),
        ("statusnet", ["/"]),
        ("statusnet", ["/a//b"]),
        ("v1_1", ["/{version}"]),
        ("v1_1", ["/1.1{"]),
        ("statusnet", ["/api}"]),
        ("statusnet", ["/api?x"]),
        ("statusnet", ["/a#b"]),
        ("statusnet", ["/a b"]),
        ("statusnet", ["/a%2F"]),
    ],
)
def test_bad_route_prefix(family: str, prefixes: list[str]) -> None:
    message = config_error(overrides={"routes": {family: prefixes}})
    assert f"routes.{family}" in message
    assert repr(prefixes[0]) in message


@pytest.mark.parametrize(
    ("v1_1", "statusnet"),
    [(["/1.1"], ["/1.1"]), (["/x", "/1.1"], ["/1", "/x"]), ([""], [""])],
    ids=["same", "one-of-several", "both-root"],
)
def test_prefix_shared_by_two_families(v1_1: list[str], statusnet: list[str]) -> None:
    message = config_error(overrides={"routes": {"v1_1": v1_1, "statusnet": statusnet}})
    assert message.startswith("routes")
    assert "v1_1" in message and "statusnet" in message


def test_prefix_repeated_within_a_family() -> None:
    message = config_error(overrides={"routes": {"statusnet": ["/api", "/api"]}})
    assert "routes" in message and "'/api'" in message


def test_file_route_errors_are_caught_too(tmp_path: Path) -> None:
    path = write(tmp_path, '[routes]\nv1_1 = ["/1.1/"]\n')
    assert "routes.v1_1" in config_error(path=path)


# Store retention, encryption key and memory bounds -------------------------------------------------------

FERNET_KEY = "PzN5Yk0tSGVsbG8tVGhpcy1Jcy1BLVRlc3QtS2V5MTI="  # urlsafe base64 of 32 bytes


def test_store_defaults() -> None:
    store = load_config(env={}).store
    assert store.message_retention == 30 * 24 * 3600 == 2592000
    assert store.user_max_age == 7 * 24 * 3600 == 604800
    assert store.encryption_key is None
    assert store.memory_max_entries == 100_000
    assert store.memory_max_bytes == 64 * 1024 * 1024


def test_store_keys_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[store]\nmessage_retention = 3600\nuser_max_age = 60\nmemory_max_entries = 10\n"
        f'memory_max_bytes = 4096\nencryption_key = "{FERNET_KEY}"\n',
    )
    store = load_config(path, env={}).store
    assert (store.message_retention, store.user_max_age) == (3600, 60)
    assert (store.memory_max_entries, store.memory_max_bytes) == (10, 4096)
    assert store.encryption_key == FERNET_KEY


def test_environment_encryption_key_overrides_the_file(tmp_path: Path) -> None:
    other = "QW5vdGhlci0zMi1ieXRlLWtleS1mb3ItdGhlLXRlc3Q="
    path = write(tmp_path, f'[store]\nencryption_key = "{FERNET_KEY}"\n')
    assert load_config(path, env={ENV_STORE_ENCRYPTION_KEY: other}).store.encryption_key == other
    assert load_config(path, env={ENV_STORE_ENCRYPTION_KEY: ""}).store.encryption_key == FERNET_KEY
    assert load_config(env={ENV_STORE_ENCRYPTION_KEY: other}).store.encryption_key == other


def test_process_environment_sets_the_encryption_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_STORE_ENCRYPTION_KEY, FERNET_KEY)
    assert load_config().store.encryption_key == FERNET_KEY


def test_encryption_key_never_appears_in_repr() -> None:
    config = load_config(env={ENV_STORE_ENCRYPTION_KEY: FERNET_KEY})
    assert FERNET_KEY not in repr(config) and FERNET_KEY not in str(config.store)


@pytest.mark.parametrize(
    "key",
    [
        "not-a-key-SECRETISH",
        FERNET_KEY[:-4],  # 29 bytes
        FERNET_KEY[:-1] + "!",  # not base64
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",  # 39 bytes
        "",
        " ",
    ],
)
def test_a_bad_encryption_key_is_refused_without_echoing_it(key: str) -> None:
    message = config_error(overrides={"store": {"encryption_key": key}})
    assert "store.encryption_key" in message and "Fernet" in message
    if key.strip():
        assert key not in message


def test_a_bad_encryption_key_from_the_environment_is_refused() -> None:
    message = config_error(env={ENV_STORE_ENCRYPTION_KEY: "short-SECRET"})
    assert ENV_STORE_ENCRYPTION_KEY in message and "short-SECRET" not in message


@pytest.mark.parametrize("key", ["message_retention", "user_max_age", "memory_max_entries", "memory_max_bytes"])
@pytest.mark.parametrize("value", [0, -1])
def test_store_numbers_must_be_positive(key: str, value: int) -> None:
    assert f"store.{key}" in config_error(overrides={"store": {key: value}})


@pytest.mark.parametrize("key", ["message_retention", "user_max_age", "memory_max_entries", "memory_max_bytes"])
def test_store_numbers_must_be_integers(key: str) -> None:
    assert f"store.{key} must be an integer" in config_error(overrides={"store": {key: "30d"}})
    assert load_config(env={}, overrides={"store": {key: 1}}).store == StoreConfig(**{key: 1})
