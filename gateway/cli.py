"""The ``dm-gateway`` command: serve, demo, emulator, check-config.

Configuration problems end the process with one line on stderr and exit status 2; nothing half-starts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway import __version__
from gateway.config import Config, ConfigError, load_config
from gateway.render.template import MappingError
from gateway.store.base import StoreError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without the query string (it may carry credentials), status,
    duration and request id. DM text and headers are never logged."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms rid=%s",
            request.method,
            request.path,
            response.status,
            time * 1000,
            response.headers.get("X-Request-Id", "-"),
        )


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
    serve.add_argument("--upstream", metavar="URL", help="X API v2 base URL (upstream.base_url)")
    serve.add_argument("--store", metavar="URL", help="memory or sqlite:///PATH (store.url)")

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", metavar="PATH", help="TOML configuration file")

    demo = commands.add_parser("demo", help="run the gateway against the built-in emulator and show each call")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: any free port)")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo until Ctrl-C")

    emulator = commands.add_parser("emulator", help="run the built-in X API v2 emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    emulator.add_argument("--seed", metavar="FILE", help="JSON seed replacing the built-in users and messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            config = _load(args.config, {})
            print(f"{args.config or 'built-in defaults'}: ok (upstream {config.upstream.base_url}, store {config.store.url})")
            return 0
        if args.command == "demo":
            from gateway.demo import run_demo

            return asyncio.run(run_demo(port=args.port, keep_running=args.keep_running))
        if args.command == "emulator":
            from gateway.emulator import run

            run(args.host, args.port, args.seed)
            return 0
    except (ConfigError, MappingError) as exc:
        print(f"dm-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreError, OSError) as exc:
        print(f"dm-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _load(path: str | None, server_flags: dict[str, Any], **flags: dict[str, Any]) -> Config:
    return load_config(path, overrides={"server": server_flags, **flags})


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app

    config = _load(
        args.config,
        {"host": args.host, "port": args.port},
        upstream={"base_url": args.upstream},
        store={"url": args.store},
    )
    app = create_app(config)
    logging.getLogger("gateway").info(
        "dm-gateway %s on http://%s:%d, upstream %s, store %s",
        __version__,
        config.server.host,
        config.server.port,
        config.upstream.base_url,
        config.store.url,
    )
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        access_log_class=AccessLogger,
        print=None,
    )
    return 0
