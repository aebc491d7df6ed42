"""Configuration: one TOML file, a few environment variables, command-line flags on top.

Everything becomes frozen dataclasses at start-up. Every bad value, unknown key or conflicting route stops
start-up with a one-line ``ConfigError`` that names the key, so an operator never meets it at request time.
Precedence, lowest first: built-in defaults, the file, the environment, command-line flags.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_UPSTREAM_BEARER = "DMGW_UPSTREAM_BEARER"
ENV_STORE_ENCRYPTION_KEY = "DMGW_STORE_ENCRYPTION_KEY"
ENV_UPSTREAM_OAUTH1_CONSUMER_SECRET = "DMGW_UPSTREAM_OAUTH1_CONSUMER_SECRET"

DIALECT_FAMILIES = ("v1_1", "statusnet")


class ConfigError(ValueError):
    """A configuration problem, worded as one line for the operator."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024
    tls_cert: str | None = None
    tls_key: str | None = None
    # With tls_cert/tls_key: the port that serves HTTPS while server.port keeps serving plain HTTP; unset,
    # server.port itself serves HTTPS.
    tls_port: int | None = None
    # The oldest TLS version accepted: "1.2" (default) or "1.3"; "1.0" and "1.1" for old clients, with a warning.
    tls_min_version: str = "1.2"
    # The admin listener (status page, health, metrics): plain HTTP, loopback by default; port 0 = any free port.
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    # Slow clients: seconds a connection may wait for a complete request head (a new connection, an idle
    # keep-alive one, or one still sending headers), and seconds a request body may take once its head is in.
    keepalive_timeout: float = 15.0
    client_timeout: float = 30.0
    # Seconds requests in flight get to finish after SIGTERM before they are cut.
    shutdown_timeout: float = 30.0
    # Processes serving the public port (see gateway/workers.py); 1 serves from this process alone.
    workers: int = 1


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str = "https://api.x.com"
    bearer_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 3.0
    timeout: float = 10.0
    max_response_bytes: int = 4 * 1024 * 1024
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    # The operator's own X app (OAuth 1.0a): what consumers registered --via-upstream-app log in and act through.
    oauth1_consumer_key: str | None = None
    oauth1_consumer_secret: str | None = field(default=None, repr=False)
    # X's OAuth 2.0 authorization page, where /connect sends a user to sign in and approve the gateway.
    oauth2_authorize_url: str = "https://x.com/i/oauth2/authorize"
    # Retries of idempotent calls (GET, DELETE) after the first attempt, and the seconds they may take in
    # all, counted from the start of the legacy call; the jittered backoff doubles from retry_backoff.
    retries: int = 2
    retry_budget: float = 10.0
    retry_backoff: float = 0.1
    # Consecutive failures that open the circuit breaker of the upstream host, and seconds until it lets
    # one probe through; 0 failures turns the breaker off.
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    # The most of those failures taken from any one caller (credential, or client address without one),
    # so that one caller cannot open the breaker for everyone; 0 takes every failure from anyone.
    breaker_failures_per_caller: int = 2

    @property
    def oauth2_token_url(self) -> str:
        return self.token_url or self.base_url.rstrip("/") + "/2/oauth2/token"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///dm-gateway.sqlite3"
    # Seconds a learned message (and its deletion record) is kept: v2 keeps DM events 30 days.
    message_retention: int = 30 * 24 * 3600
    # Seconds a learned v2 user is trusted before it is fetched again.
    user_max_age: int = 7 * 24 * 3600
    # A Fernet key (urlsafe base64 of 32 bytes): DM text and credential secrets are encrypted at rest in SQLite
    # and Redis.
    encryption_key: str | None = field(default=None, repr=False)
    # Bounds of the "memory" backend: cached entries, and their approximate encoded size in bytes.
    memory_max_entries: int = 100_000
    memory_max_bytes: int = 64 * 1024 * 1024
    # Seconds a recorded deletion answers the deleting caller's retried destroy as the first call was.
    tombstone_window: int = 24 * 3600


@dataclass(frozen=True, slots=True)
class RoutesConfig:
    """Path prefixes per dialect family; "" mounts a family at the root."""

    v1_1: tuple[str, ...] = ("/1.1",)
    statusnet: tuple[str, ...] = ("/1", "/api")
    # Families whose clients are shown small ids in place of v2's 64-bit ones (gateway/small_ids.py).
    small_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How legacy callers are authenticated (see gateway/auth/inbound.py)."""

    sidecar: bool = False
    sidecar_hosts: tuple[str, ...] = ()
    timestamp_window: int = 300
    trusted_proxies: tuple[str, ...] = ()
    public_base_urls: tuple[str, ...] = ()
    max_failed_logins: int = 10
    failed_login_window: int = 60


#: The avatar Twitter showed, and its API named, for a user who never set one.
DEFAULT_PROFILE_IMAGE_URL = "https://abs.twimg.com/sticky/default_profile_images/default_profile_normal.png"


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """What the legacy bodies say where v2 says nothing."""

    # The profile_image_url of a user without one (no image, or a deleted or suspended account): the
    # historic APIs always sent an avatar URL, never null.
    default_profile_image_url: str = DEFAULT_PROFILE_IMAGE_URL


ONBOARDING_MODES = ("invite", "open")
DEFAULT_ONBOARDING_SCOPES = ("dm.read", "dm.write", "users.read", "tweet.read", "offline.access")


@dataclass(frozen=True, slots=True)
class OnboardingConfig:
    """The /connect pages on the public listener, where StatusNet users connect their X account themselves."""

    enabled: bool = False
    # Where users reach this gateway, e.g. "https://dm.example.org": the callback X redirects to is this
    # plus /connect/callback, and clients are told this plus /api.
    public_url: str | None = None
    scopes: tuple[str, ...] = DEFAULT_ONBOARDING_SCOPES
    # "invite": /connect/start needs a one-time invite (dm-gateway credentials invite); "open": anyone.
    mode: str = "invite"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    routes: RoutesConfig = field(default_factory=RoutesConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    onboarding: OnboardingConfig = field(default_factory=OnboardingConfig)


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "store": StoreConfig,
    "routes": RoutesConfig,
    "auth": AuthConfig,
    "render": RenderConfig,
    "onboarding": OnboardingConfig,
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build and validate the configuration. ``overrides`` is ``{section: {key: value}}`` from flags."""
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        raw = _read_file(Path(path))
    bearer = env.get(ENV_UPSTREAM_BEARER)
    if bearer:
        raw.setdefault("upstream", {})["bearer_token"] = bearer
    oauth1_secret = env.get(ENV_UPSTREAM_OAUTH1_CONSUMER_SECRET)
    if oauth1_secret:
        raw.setdefault("upstream", {})["oauth1_consumer_secret"] = oauth1_secret
    encryption_key = env.get(ENV_STORE_ENCRYPTION_KEY)
    if encryption_key:
        raw.setdefault("store", {})["encryption_key"] = encryption_key
    for section, values in (overrides or {}).items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        for key, value in values.items():
            if value is not None:
                raw.setdefault(section, {})[key] = value
    config = Config(**{name: _build_section(name, raw.get(name, {})) for name in _SECTIONS})
    _validate(config)
    return config


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 at byte {exc.start})") from None
    for name, section in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
    return data


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(known)})")
        converted[key] = _convert(f"{name}.{key}", known[key].type, value)
    return cls(**converted)


def _convert(key: str, annotation: Any, value: Any) -> Any:
    kind = str(annotation)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind in ("int", "int | None"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _validate(config: Config) -> None:
    server, upstream = config.server, config.upstream
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"server.port must be between 0 and 65535, got {server.port}")
    if not server.host:
        raise ConfigError("server.host must not be empty")
    if not 0 <= server.admin_port <= 65535:
        raise ConfigError(f"server.admin_port must be between 0 and 65535, got {server.admin_port}")
    if not server.admin_host:
        raise ConfigError("server.admin_host must not be empty")
    if server.admin_port != 0 and server.admin_port == server.port:
        raise ConfigError(f"server.admin_port must differ from server.port, both are {server.port}")
    for key in ("keepalive_timeout", "client_timeout", "shutdown_timeout"):
        if not 0 < getattr(server, key) < math.inf:  # also refuses nan
            raise ConfigError(f"server.{key} must be a positive finite number, got {getattr(server, key)}")
    _validate_workers(config)
    if server.max_body_bytes < 1024:
        raise ConfigError(f"server.max_body_bytes must be at least 1024, got {server.max_body_bytes}")
    _check_url("upstream.base_url", upstream.base_url, path_allowed=False)
    if upstream.token_url is not None:
        _check_url("upstream.token_url", upstream.token_url, path_allowed=True)
    for key in ("connect_timeout", "timeout"):
        if not 0 < getattr(upstream, key) < math.inf:  # also refuses nan
            raise ConfigError(f"upstream.{key} must be a positive finite number, got {getattr(upstream, key)}")
    _validate_resilience(upstream)
    if upstream.max_response_bytes < 1024:
        raise ConfigError("upstream.max_response_bytes must be at least 1024")
    if upstream.bearer_token is not None and not upstream.bearer_token.strip():
        raise ConfigError("upstream.bearer_token must not be blank")
    for key in ("oauth1_consumer_key", "oauth1_consumer_secret"):
        value = getattr(upstream, key)
        if value is not None and not value.strip():
            raise ConfigError(f"upstream.{key} must not be blank")
    if (upstream.oauth1_consumer_key is None) != (upstream.oauth1_consumer_secret is None):
        raise ConfigError(
            "upstream.oauth1_consumer_key and upstream.oauth1_consumer_secret (or "
            f"{ENV_UPSTREAM_OAUTH1_CONSUMER_SECRET}) go together: set both or neither"
        )
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError("server.tls_cert and server.tls_key go together: set both or neither")
    for key in ("tls_cert", "tls_key"):
        value = getattr(server, key)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"server.{key}: no such file {value!r}")
    _validate_tls_listener(server)
    _validate_store(config.store)
    _validate_routes(config.routes)
    _validate_auth(config)
    _validate_render(config.render)
    _validate_onboarding(config)


def _validate_render(render: RenderConfig) -> None:
    url = render.default_profile_image_url
    # Written into every body as is: printable ASCII, no space, so that XML and JSON carry it unchanged.
    if not (url.isascii() and url.isprintable()) or " " in url or len(url) > 1024:
        raise ConfigError("render.default_profile_image_url must be a URL of at most 1024 printable ASCII characters")
    _check_url("render.default_profile_image_url", url, path_allowed=True)


def _validate_onboarding(config: Config) -> None:
    onboarding, upstream = config.onboarding, config.upstream
    _check_url("upstream.oauth2_authorize_url", upstream.oauth2_authorize_url, path_allowed=True)
    if onboarding.mode not in ONBOARDING_MODES:
        raise ConfigError(f"onboarding.mode must be one of {', '.join(ONBOARDING_MODES)}, got {onboarding.mode!r}")
    if not onboarding.scopes or not all(re.fullmatch(r"[A-Za-z0-9._:-]+", scope) for scope in onboarding.scopes):
        raise ConfigError(f"onboarding.scopes must be a non-empty list of scope names, got {list(onboarding.scopes)!r}")
    if onboarding.public_url is not None:
        _check_url("onboarding.public_url", onboarding.public_url, path_allowed=True)
    if not onboarding.enabled:
        return
    if onboarding.public_url is None:
        raise ConfigError("onboarding.enabled needs onboarding.public_url (where users reach this gateway)")
    if not upstream.oauth2_client_id:
        raise ConfigError("onboarding.enabled needs upstream.oauth2_client_id (the X app users sign in to)")
    if config.auth.sidecar:
        # The sidecar's guard refuses X's redirect back (a cross-site navigation), and a loopback-only gateway
        # has no users to connect: /connect belongs on a gateway people reach.
        raise ConfigError("onboarding.enabled and auth.sidecar do not go together: /connect is for a public gateway")
    if "offline.access" not in onboarding.scopes:
        raise ConfigError(
            "onboarding.scopes must include offline.access: without a refresh token a grant dies in hours"
        )


TLS_MIN_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


def _validate_tls_listener(server: ServerConfig) -> None:
    if server.tls_min_version not in TLS_MIN_VERSIONS:
        raise ConfigError(
            f"server.tls_min_version must be one of {', '.join(TLS_MIN_VERSIONS)}, got {server.tls_min_version!r}"
        )
    if server.tls_port is None:
        return
    if not 0 <= server.tls_port <= 65535:
        raise ConfigError(f"server.tls_port must be between 0 and 65535, got {server.tls_port}")
    if server.tls_cert is None:
        raise ConfigError("server.tls_port needs server.tls_cert and server.tls_key")
    if server.tls_port != 0 and server.tls_port in (server.port, server.admin_port):
        raise ConfigError(f"server.tls_port must differ from server.port and server.admin_port, got {server.tls_port}")
    if server.workers > 1 and server.tls_port == 0:
        raise ConfigError("server.workers above 1 needs a fixed server.tls_port: with 0 each worker would pick its own")


MAX_WORKERS = 64


def _validate_workers(config: Config) -> None:
    server = config.server
    if not 1 <= server.workers <= MAX_WORKERS:
        raise ConfigError(f"server.workers must be between 1 and {MAX_WORKERS}, got {server.workers}")
    if server.workers == 1:
        return
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("server.workers above 1 needs SO_REUSEPORT, which this platform does not have")
    if server.port == 0:
        raise ConfigError("server.workers above 1 needs a fixed server.port: with 0 each worker would pick its own")
    if store_location(config.store.url)[0] == "memory":
        raise ConfigError(
            "server.workers above 1 needs a shared store (sqlite:///PATH or redis://...): "
            "with 'memory' each worker would keep its own"
        )


MAX_RETRIES = 10
MAX_RETRY_BUDGET = 300.0
MAX_RETRY_BACKOFF = 60.0


def _validate_resilience(upstream: UpstreamConfig) -> None:
    if not 0 <= upstream.retries <= MAX_RETRIES:
        raise ConfigError(f"upstream.retries must be between 0 and {MAX_RETRIES}, got {upstream.retries}")
    if not 0 <= upstream.retry_budget <= MAX_RETRY_BUDGET:  # also refuses nan
        raise ConfigError(
            f"upstream.retry_budget must be between 0 and {MAX_RETRY_BUDGET:g} seconds, got {upstream.retry_budget}"
        )
    if not 0 <= upstream.retry_backoff <= MAX_RETRY_BACKOFF:
        raise ConfigError(
            f"upstream.retry_backoff must be between 0 and {MAX_RETRY_BACKOFF:g} seconds, got {upstream.retry_backoff}"
        )
    if upstream.breaker_failures < 0:
        raise ConfigError(f"upstream.breaker_failures must be 0 (off) or more, got {upstream.breaker_failures}")
    if not 0 < upstream.breaker_reset <= 3600:
        raise ConfigError(
            f"upstream.breaker_reset must be more than 0 and at most 3600 seconds, got {upstream.breaker_reset}"
        )
    if upstream.breaker_failures_per_caller < 0:
        raise ConfigError(
            "upstream.breaker_failures_per_caller must be 0 (no limit) or more, "
            f"got {upstream.breaker_failures_per_caller}"
        )


def _validate_store(store: StoreConfig) -> None:
    store_location(store.url)
    for key in ("message_retention", "user_max_age", "memory_max_entries", "memory_max_bytes"):
        if getattr(store, key) < 1:
            raise ConfigError(f"store.{key} must be a positive integer, got {getattr(store, key)}")
    if store.tombstone_window < 0:
        raise ConfigError(f"store.tombstone_window must be 0 (off) or more seconds, got {store.tombstone_window}")
    if store.encryption_key is not None and not is_fernet_key(store.encryption_key):
        # Never repeat the value: it is a secret, and a near-miss of the real key is one too.
        raise ConfigError(
            f"store.encryption_key (or {ENV_STORE_ENCRYPTION_KEY}) is not a Fernet key: it must be the urlsafe "
            "base64 of 32 bytes, e.g. from python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )


def is_fernet_key(key: str) -> bool:
    from cryptography.fernet import Fernet

    try:
        Fernet(key)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        return False
    return True


def _check_url(key: str, url: str, *, path_allowed: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http(s) URL, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigError(f"{key} has an invalid port, got {url!r}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key} must not carry credentials")
    if (not path_allowed and parts.path not in ("", "/")) or parts.query or parts.fragment:
        raise ConfigError(f"{key} must not have a {'query' if path_allowed else 'path or query'}, got {url!r}")


# A DNS name: dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def is_host_name(name: str) -> bool:
    """A DNS name: dot-separated labels of letters, digits and inner hyphens (no wildcard, no port)."""
    return bool(_HOST_NAME.fullmatch(name))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_auth(config: Config) -> None:
    auth = config.auth
    if auth.sidecar:
        if not config.upstream.bearer_token:
            raise ConfigError("auth.sidecar needs upstream.bearer_token (or DMGW_UPSTREAM_BEARER)")
        if not is_loopback(config.server.host):
            raise ConfigError(
                f"auth.sidecar serves unauthenticated callers, so server.host must be loopback, got {config.server.host!r}"
            )
    elif config.upstream.bearer_token:
        raise ConfigError(
            "upstream.bearer_token is set but auth.sidecar is false: set [auth] sidecar = true to use it "
            "for unauthenticated callers on a loopback-bound gateway, or remove it"
        )
    elif auth.sidecar_hosts:
        raise ConfigError("auth.sidecar_hosts is set but auth.sidecar is false: it only applies to the sidecar")
    for name in auth.sidecar_hosts:
        if not _HOST_NAME.fullmatch(name):
            raise ConfigError(f"auth.sidecar_hosts: {name!r} is not a host name (no scheme, port or wildcard)")
    if not 1 <= auth.timestamp_window <= 3600:
        raise ConfigError(f"auth.timestamp_window must be between 1 and 3600 seconds, got {auth.timestamp_window}")
    for proxy in auth.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"auth.trusted_proxies: {proxy!r} is not an IP address or network") from None
    for url in auth.public_base_urls:
        _check_url("auth.public_base_urls", url, path_allowed=False)
    if not 1 <= auth.max_failed_logins <= 1000:
        raise ConfigError(f"auth.max_failed_logins must be between 1 and 1000, got {auth.max_failed_logins}")
    if not 1 <= auth.failed_login_window <= 86400:
        raise ConfigError(
            f"auth.failed_login_window must be between 1 and 86400 seconds, got {auth.failed_login_window}"
        )


def store_location(url: str) -> tuple[str, str]:
    """Split a store URL into (backend, location): ``memory``, ``sqlite:///PATH``, or ``redis://HOST:PORT/DB``
    (also ``rediss://``) or ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (also ``rediss+cluster://``), whose
    location is the whole URL."""
    if url in ("memory", "memory://"):
        return "memory", ""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigError("store.url sqlite:/// needs a file path, e.g. sqlite:///var/lib/dm-gateway.sqlite3")
        return "sqlite", path
    if url.startswith(("redis://", "rediss://")):
        _check_redis_url(url)
        return "redis", url
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        _check_redis_cluster_url(url)
        return "redis", url
    raise ConfigError(
        "store.url must be 'memory', 'sqlite:///PATH', 'redis://HOST:PORT/DB' or "
        f"'redis+cluster://HOST:PORT[,HOST:PORT...]', got {url!r}"
    )


def _check_redis_url(url: str) -> None:
    # The URL may carry a password, so no message here repeats it.
    example = "e.g. redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"store.url: the Redis port is not a port number ({example})") from None
    if not parts.hostname:
        raise ConfigError(f"store.url: the Redis URL needs a host ({example})")
    if port == 0:
        raise ConfigError(f"store.url: the Redis port is not a port number ({example})")
    database = parts.path.removeprefix("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ConfigError(f"store.url: the Redis database must be a number ({example})")
    if parts.query or parts.fragment:
        raise ConfigError(f"store.url: the Redis URL takes no query or fragment ({example})")


def _check_redis_cluster_url(url: str) -> None:
    # The URL may carry a password, so no message here repeats it.
    example = "e.g. redis+cluster://10.0.0.1:6379,10.0.0.2:6379"
    rest = url.split("://", 1)[1]
    if "?" in rest or "#" in rest:
        raise ConfigError(f"store.url: the Redis Cluster URL takes no query or fragment ({example})")
    location, _, database = rest.rpartition("@")[2].partition("/")
    if database not in ("", "0"):
        raise ConfigError(f"store.url: a Redis Cluster has database 0 only ({example})")
    for node in location.split(","):
        host, _, port = node.rpartition(":")
        if not host.strip("[]"):
            raise ConfigError(f"store.url: every Redis Cluster node needs a host and a port ({example})")
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"store.url: a Redis Cluster node's port is not a port number ({example})")


def _validate_routes(routes: RoutesConfig) -> None:
    for family in routes.small_ids:
        if family not in DIALECT_FAMILIES:
            raise ConfigError(f"routes.small_ids: {family!r} is not a family (one of {', '.join(DIALECT_FAMILIES)})")
    seen: dict[str, str] = {}
    for family in DIALECT_FAMILIES:
        for prefix in getattr(routes, family):
            if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
                raise ConfigError(
                    f"routes.{family}: prefix {prefix!r} must be empty or start with '/' and not end with one"
                )
            if any(ch in prefix for ch in "{}?#% "):
                raise ConfigError(f"routes.{family}: prefix {prefix!r} has a character not allowed in a prefix")
            if prefix in seen:
                raise ConfigError(f"routes: prefix {prefix!r} is used by both {seen[prefix]} and {family}")
            seen[prefix] = family


def with_overrides(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with some keys replaced (used by the demo and tests)."""
    updated = {name: replace(getattr(config, name), **values) for name, values in sections.items()}
    result = replace(config, **updated)
    _validate(result)
    return result
