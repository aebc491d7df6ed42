"""The ``dm-gateway`` command: serve, demo, emulator, check-config, credentials, tls init.

Configuration problems end the process with one line on stderr and exit status 2; nothing half-starts.
``check-config`` checks what ``serve`` checks before it listens (the TLS pair, the store) and fails as it would.
``credentials`` edits the store ``serve`` would open; its other failures are one line and exit status 1. Every
secret it takes can be ``-`` instead, which reads it from stdin (see ``_Secret``), so that no secret need
appear in ``ps`` or a shell's history.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.accesslog import AccessLogger  # one JSON line per request
from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token, hash_password
from gateway.config import Config, ConfigError, StoreConfig, load_config, store_location
from gateway.edge import GatewayRunner  # the public listener's runner: unreadable requests answered without echo
from gateway.render.template import MappingError
from gateway.serving import (
    freeze_startup_objects,
    log_admin_listener,
    public_sites,
    runner_options,
    stop_on_signals,
    tune_collector,
)
from gateway.store.base import Store, StoreError
from gateway.store.factory import check_store, open_store_from_config
from gateway.tls import TlsInitError, server_tls_context, warn_about_old_tls
from gateway.workers import WorkerFailed, run_workers

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


_STORE_URL_HELP = "sqlite:///PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT,..., overriding store.url"

#: A secret argument with this value is read from stdin instead.
FROM_STDIN = "-"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dm-gateway",
        description="Serve legacy Twitter v1/v1.1 and StatusNet direct-message calls on X API v2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway in front of X API v2")
    serve.add_argument("--config", metavar="PATH", help="TOML configuration file (see config.example.toml)")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")
    serve.add_argument(
        "--admin-port",
        type=int,
        metavar="P",
        help="admin listener port: status page, /healthz, /readyz, /metrics (server.admin_port)",
    )
    serve.add_argument("--upstream", metavar="URL", help="X API v2 base URL (upstream.base_url)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help="memory, sqlite:///PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT,... (store.url)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the public port, for multi-core hosts (server.workers)",
    )

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", metavar="PATH", help="TOML configuration file")

    demo = commands.add_parser("demo", help="run the gateway against the built-in emulator and show each call")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: any free port)")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo until Ctrl-C")

    emulator = commands.add_parser("emulator", help="run the built-in X API v2 emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    emulator.add_argument("--seed", metavar="FILE", help="JSON seed replacing the built-in users and messages")

    _add_credentials_parser(commands)

    tls = commands.add_parser("tls", help="TLS for clients that hard-code https://api.twitter.com")
    tls_actions = tls.add_subparsers(dest="action", required=True, metavar="COMMAND")
    init = tls_actions.add_parser(
        "init",
        help="make a local CA and a serving certificate for the given names",
        description="Write ca.pem, ca-key.pem, cert.pem and key.pem into DIR (a CA already there is reused), "
        "then print the configuration lines and how to make clients trust the CA.",
    )
    init.add_argument("--host", action="append", required=True, metavar="NAME", help="a DNS name or IP; repeat")
    init.add_argument("--out", required=True, metavar="DIR", help="directory for the CA and the serving pair")
    return parser


def _add_credentials_parser(commands: Any) -> None:
    credentials = commands.add_parser(
        "credentials",
        help="register legacy OAuth 1.0a clients and Basic users in the store",
        description="Edit the credentials kept in the store that serve opens (store.url). Secrets are never printed.",
    )
    # Accepted before or after the action; SUPPRESS keeps the action's parser from resetting a value given
    # before it.
    store_options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    store_options.add_argument("--config", metavar="PATH", help="TOML configuration file, as for serve")
    store_options.add_argument("--store", metavar="URL", help=_STORE_URL_HELP)
    credentials.add_argument("--config", metavar="PATH", help="TOML configuration file, as for serve")
    credentials.add_argument("--store", metavar="URL", help=_STORE_URL_HELP)
    actions = credentials.add_subparsers(dest="action", required=True, metavar="COMMAND")

    stdin_note = (
        "Any secret given as - is read from stdin instead, one line each, in the order the arguments appear "
        "on the command line."
    )
    consumer = actions.add_parser(
        "add-consumer", parents=[store_options], help="add or replace an OAuth consumer", description=stdin_note
    )
    consumer.add_argument("key", metavar="KEY")
    consumer.add_argument("secret", metavar="SECRET", action=_Secret, help="the consumer secret, or - for stdin")
    consumer.add_argument(
        "--via-upstream-app", action="store_true",
        help="a consumer X does not know: its users log in and act through [upstream] oauth1_consumer_key",
    )  # fmt: skip

    token = actions.add_parser(
        "add-token", parents=[store_options], help="add or replace an OAuth access token", description=stdin_note
    )
    token.add_argument("consumer_key", metavar="CONSUMER_KEY")
    token.add_argument("token", metavar="TOKEN")
    token.add_argument("token_secret", metavar="TOKEN_SECRET", action=_Secret, help="the token secret, or - for stdin")
    mapping = token.add_argument_group(
        "for a --via-upstream-app consumer, what acts at X for the token (one of the two)"
    )
    mapping.add_argument("--upstream-token", metavar="X_TOKEN", help="an X access token of the upstream app")
    mapping.add_argument(
        "--upstream-token-secret", metavar="X_SECRET", action=_Secret, help="that X token's secret, or - for stdin"
    )
    mapping.add_argument("--upstream-user", metavar="NAME", help="act with this Basic user's v2 grant")

    user = actions.add_parser(
        "add-user", parents=[store_options], help="add or replace an HTTP Basic user", description=stdin_note
    )
    user.add_argument("username", metavar="USERNAME")
    user.add_argument(
        "--password-stdin", action=_PasswordStdin, required=True, help="read the password from one line of stdin"
    )
    user.add_argument(
        "--upstream-bearer", metavar="TOKEN", action=_Secret, required=True,
        help="the user's v2 OAuth 2.0 token, or - for stdin",
    )  # fmt: skip
    user.add_argument(
        "--upstream-refresh-token",
        metavar="TOKEN",
        action=_Secret,
        help="refresh token for that v2 token, or - for stdin",
    )
    user.add_argument(
        "--upstream-expires-in", metavar="SECONDS", type=_seconds, help="seconds until the v2 token expires"
    )

    invite = actions.add_parser(
        "invite",
        parents=[store_options],
        help="make a one-time invite to /connect and print its URL",
        description="Prints onboarding.public_url + /connect?invite=...: hand it to one user; it is spent when "
        "that user's password is saved.",
    )
    invite.add_argument(
        "--expires-in", metavar="SECONDS", type=_seconds, default=7 * 24 * 3600,
        help="seconds the invite stays good (default: 604800, a week)",
    )  # fmt: skip

    actions.add_parser("list", parents=[store_options], help="list credentials, without secrets")

    remove = actions.add_parser("remove", parents=[store_options], help="remove one credential")
    remove.add_argument("kind", choices=("consumer", "token", "user"), help="a consumer takes its tokens with it")
    remove.add_argument("key", metavar="KEY")


class _Secret(argparse.Action):
    """Keeps a secret argument's value; for ``-``, notes that its value is a line of stdin. argparse calls the
    actions in the order their arguments appear on the command line, so ``from_stdin`` lists the arguments
    whose lines are read in that order: several ``-`` read one line each, the first line for the leftmost."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        _note_stdin(namespace, self.dest, values == FROM_STDIN)


class _PasswordStdin(argparse.Action):
    """``--password-stdin``: like ``store_true``, and the password takes its line of stdin in argument order."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, True)
        _note_stdin(namespace, "password", True)


def _note_stdin(namespace: argparse.Namespace, dest: str, reads: bool) -> None:
    """Record whether ``dest`` reads a line of stdin; an argument given again counts where it last appears."""
    order = [name for name in getattr(namespace, "from_stdin", ()) if name != dest]
    namespace.from_stdin = [*order, dest] if reads else order


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            config = _load(args.config, {})
            _check_before_serving(config)
            asyncio.run(check_store(config.store))
            print(
                f"{args.config or 'built-in defaults'}: ok (upstream {config.upstream.base_url}, store {config.store.url})"
            )
            return 0
        if args.command == "demo":
            from gateway.demo import run_demo

            return asyncio.run(run_demo(port=args.port, keep_running=args.keep_running))
        if args.command == "emulator":
            from gateway.emulator import run

            run(args.host, args.port, args.seed)
            return 0
        if args.command == "credentials":
            return _credentials(args)
        if args.command == "tls":
            return _tls_init(args)
    except (ConfigError, MappingError) as exc:
        print(f"dm-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreError, OSError) as exc:
        print(f"dm-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except WorkerFailed as exc:
        print(f"dm-gateway: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _load(path: str | None, server_flags: dict[str, Any], **flags: dict[str, Any]) -> Config:
    return load_config(path, overrides={"server": server_flags, **flags})


def _check_before_serving(config: Config) -> ssl.SSLContext | None:
    """What ``serve`` (and ``check-config``) refuses as a configuration error before anything opens: a TLS pair
    that cannot be used, a SQLite store in a directory that does not exist. Returns the TLS context."""
    tls = server_tls_context(config)
    require_store_directory(config.store)
    return tls


def require_store_directory(store: StoreConfig) -> None:
    """A SQLite store's directory must exist: the gateway never creates one (an empty store somewhere new
    would hide a mistyped path)."""
    backend, location = store_location(store.url)
    if backend == "sqlite" and location != ":memory:":
        directory = Path(location).parent
        if not directory.is_dir():
            raise ConfigError(
                f"store.url: the directory {str(directory)!r} does not exist (the gateway never creates it)"
            )


# Arguments read from stdin when given as -: name in the namespace -> what to call it.
_STDIN_LABELS = {
    "password": "the password",
    "secret": "SECRET",
    "token_secret": "TOKEN_SECRET",
    "upstream_bearer": "--upstream-bearer",
    "upstream_refresh_token": "--upstream-refresh-token",
    "upstream_token_secret": "--upstream-token-secret",
}

# Arguments that argparse accepts as "" but a credential cannot be: name in the namespace -> what to call it.
_REQUIRED_TEXT = {
    "key": "KEY",
    "secret": "SECRET",
    "consumer_key": "CONSUMER_KEY",
    "token": "TOKEN",
    "token_secret": "TOKEN_SECRET",
    "username": "USERNAME",
    "upstream_bearer": "--upstream-bearer",
    "upstream_token": "--upstream-token",
    "upstream_token_secret": "--upstream-token-secret",
    "upstream_user": "--upstream-user",
}


class _Refused(Exception):
    """A credentials action that cannot be done; its message is the operator's one line."""


def _credentials(args: argparse.Namespace) -> int:
    config = _load(args.config, {}, store={"url": args.store})
    backend, _ = store_location(config.store.url)
    if backend == "memory":
        raise ConfigError("store.url is 'memory': credentials would be lost when this command exits")
    require_store_directory(config.store)
    try:
        password = _read_stdin(args)
        if args.action == "invite" and not config.onboarding.public_url:
            raise _Refused("invite needs onboarding.public_url in the configuration (--config): the URL users reach")
        args.public_url = config.onboarding.public_url
        print(asyncio.run(_credentials_action(args, config.store, password)))
    except (_Refused, StoreError, OSError) as exc:
        print(f"dm-gateway credentials: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def _read_stdin(args: argparse.Namespace) -> str | None:
    """Read the lines of stdin the arguments asked for, in the order they appear on the command line (see
    ``_Secret``), and put each in its argument's place; return the password, if ``--password-stdin`` asked
    for one. Each line is taken without its line ending, read as bytes so the locale cannot change it."""
    password = None
    for dest in getattr(args, "from_stdin", ()):
        label = _STDIN_LABELS[dest]
        line = sys.stdin.buffer.readline().removesuffix(b"\n").removesuffix(b"\r")
        try:
            value = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(f"{label} on stdin is not valid UTF-8") from None
        if not value:
            raise _Refused(f"{label} on stdin is empty" + ("; a Basic user needs one" if dest == "password" else ""))
        if dest == "password":
            password = value
        else:
            setattr(args, dest, value)
    return password


async def _credentials_action(args: argparse.Namespace, settings: StoreConfig, password: str | None) -> str:
    """Do the action and return the line to print, which never carries a secret."""
    for name, label in _REQUIRED_TEXT.items():
        if getattr(args, name, None) == "":
            raise _Refused(f"{label} must not be empty")
    store = await open_store_from_config(settings)
    try:
        return await _apply(store, args, password, settings)
    finally:
        await store.close()


async def _apply(store: Store, args: argparse.Namespace, password: str | None, settings: StoreConfig) -> str:
    if args.action == "add-consumer":
        verb = "replaced" if await store.get_consumer(args.key) else "added"
        await store.put_consumer(Consumer(key=args.key, secret=args.secret, via_upstream_app=args.via_upstream_app))
        return f"{verb} consumer {args.key}" + (" (via the upstream app)" if args.via_upstream_app else "")
    if args.action == "add-token":
        token = await _token_to_add(store, args)
        verb = "replaced" if await store.get_token(args.token) else "added"
        try:
            await store.put_token(token)
        except ValueError:
            raise _Refused(f"no consumer {args.consumer_key!r}; add it first with add-consumer") from None
        mapped = f", {token.mapping}" if token.mapping else ""
        return f"{verb} token {args.token} for consumer {args.consumer_key}{mapped}"
    if args.action == "add-user":
        assert password is not None
        expires_in = args.upstream_expires_in
        grant = OAuth2Grant(
            access_token=args.upstream_bearer,
            refresh_token=args.upstream_refresh_token or None,
            expires_at=time.time() + expires_in if expires_in is not None else None,
        )
        verb = "replaced" if await store.get_user(args.username) else "added"
        await store.put_user(BasicUser(username=args.username, password_hash=hash_password(password), grant=grant))
        return f"{verb} user {args.username}"
    if args.action == "invite":
        from gateway.onboarding import create_invite

        return await create_invite(store, settings.encryption_key, args.public_url, args.expires_in)
    if args.action == "list":
        entries = await store.list_credentials()
        if not entries:
            return "no credentials"
        width = max(len(entry.key) for entry in entries)
        return "\n".join(f"{entry.kind:<8} {entry.key:<{width}}  {entry.detail}" for entry in entries)
    if args.action == "remove":
        if not await store.remove_credential(args.kind, args.key):
            raise _Refused(f"no {args.kind} {args.key!r}")
        return f"removed {args.kind} {args.key}" + (" and its tokens" if args.kind == "consumer" else "")
    raise AssertionError(f"unhandled credentials action {args.action}")


async def _token_to_add(store: Store, args: argparse.Namespace) -> Token:
    """The token ``add-token`` describes: a live app's, as is; a --via-upstream-app consumer's, mapped to an
    X token of the upstream app or to a Basic user, exactly one of the two."""
    consumer = await store.get_consumer(args.consumer_key)
    if consumer is None:
        raise _Refused(f"no consumer {args.consumer_key!r}; add it first with add-consumer")
    x_token, x_secret, user = args.upstream_token, args.upstream_token_secret, args.upstream_user
    if (x_token is None) != (x_secret is None):
        raise _Refused("--upstream-token and --upstream-token-secret go together")
    if not consumer.via_upstream_app:
        if x_token is not None or user is not None:
            raise _Refused(
                f"consumer {consumer.key!r} is a live X app, re-signed as itself: --upstream-token and "
                "--upstream-user are for a consumer added with --via-upstream-app"
            )
        return Token(token=args.token, consumer_key=consumer.key, secret=args.token_secret)
    if (x_token is None) == (user is None):
        raise _Refused(
            f"consumer {consumer.key!r} acts through the upstream app: give --upstream-token and "
            "--upstream-token-secret, or --upstream-user (one of the two)"
        )
    if user is not None and await store.get_user(user) is None:
        raise _Refused(f"no user {user!r}; add it first with add-user")
    return Token(args.token, consumer.key, args.token_secret, x_token, x_secret, user)


def _tls_init(args: argparse.Namespace) -> int:
    from gateway.tls import init, instructions

    hosts = list(dict.fromkeys(args.host))  # in order, each once
    try:
        files = init(hosts, Path(args.out))
    except TlsInitError as exc:
        print(f"dm-gateway tls init: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(instructions(files, hosts))
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _load(
        args.config,
        {"host": args.host, "port": args.port, "admin_port": args.admin_port, "workers": args.workers},
        upstream={"base_url": args.upstream},
        store={"url": args.store},
    )
    tls = _check_before_serving(config)
    warn_about_old_tls(config)
    if config.server.workers > 1:
        return run_workers(config)  # the supervisor serves no requests; each worker tunes its own collector
    tune_collector()
    asyncio.run(_serve_until_signalled(config, tls))
    return 0


async def _serve_until_signalled(config: Config, tls: ssl.SSLContext | None) -> None:
    """Both listeners in one process until SIGINT or SIGTERM; then stop accepting, let in-flight requests
    finish (for at most server.shutdown_timeout seconds), and close the store (the gateway app's cleanup)."""
    from gateway.admin import create_admin_app
    from gateway.app import create_app

    log = logging.getLogger("gateway")
    app = create_app(config)
    runner = GatewayRunner(app, access_log_class=AccessLogger, handle_signals=False, **runner_options(config))
    admin_runner = web.AppRunner(create_admin_app(app), access_log=None, handle_signals=False)
    stop, remove_signal_handlers = stop_on_signals(asyncio.get_running_loop())
    try:
        await runner.setup()  # opens the store: a store that cannot open fails here, before listening
        await admin_runner.setup()
        freeze_startup_objects()
        sites = public_sites(runner, config, tls)
        for site in sites:
            await site.start()
        await web.TCPSite(admin_runner, config.server.admin_host, config.server.admin_port).start()
        log.info(
            "dm-gateway %s on %s, upstream %s, store %s",
            __version__,
            " and ".join(site.name for site in sites),
            config.upstream.base_url,
            config.store.url,
        )
        log_admin_listener(config, admin_runner)
        await stop.wait()
        log.info("stopping: finishing requests in flight (at most %gs)", config.server.shutdown_timeout)
    finally:
        remove_signal_handlers()
        await runner.cleanup()
        await admin_runner.cleanup()
