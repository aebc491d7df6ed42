"""What every serving process shares, ``serve`` and each worker of ``serve --workers`` alike: the collector's
tuning, the public listener's runner options and sites, the signals that stop it, and the admin listener's
start-up line."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import Config, is_loopback

#: The cyclic garbage collector's first threshold in a serving process, where Python's default is 700.
#: Each collection walks every young object still alive, and a gateway with requests in flight always
#: holds a few thousand (their coroutines, requests and pending upstream calls): at 700 it walked them
#: every few dozen destroys. What that cost is in docs/PERFORMANCE.md.
COLLECTOR_THRESHOLD = 10_000


def tune_collector() -> None:
    """Set the collector's first threshold for a process that serves requests (its other two are kept).
    Called by ``serve`` and by every worker before they start; never by ``create_app``, which tests and
    embedders call in processes of their own."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(COLLECTOR_THRESHOLD, middle, oldest)


def freeze_startup_objects() -> None:
    """Put what a serving process built to start (modules, the application, its templates, its store) out of
    the collector's sight, once, before it listens: all of it lives as long as the process, and every full
    collection walked it, some 60 000 objects and 17 ms of a stalled event loop on the development machine
    (docs/PERFORMANCE.md). What start-up left as garbage is collected first. Called by ``serve`` and by
    every worker; never by ``create_app``."""
    gc.collect()
    gc.freeze()


def runner_options(config: Config) -> dict[str, Any]:
    """What every AppRunner of the public listener is given: the slow-client and shutdown bounds."""
    return {
        # aiohttp closes a connection with no complete request head this long after it opened or after the
        # previous response: idle keep-alive connections and clients trickling headers alike.
        "keepalive_timeout": config.server.keepalive_timeout,
        # How long cleanup() lets requests in flight finish before cancelling them.
        "shutdown_timeout": config.server.shutdown_timeout,
    }


def stop_on_signals(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Event, Callable[[], None]]:
    """An event set by SIGINT or SIGTERM, and the function that removes those handlers again."""
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)

    def remove() -> None:
        for signum in signals:
            loop.remove_signal_handler(signum)

    return stop, remove


def public_sites(
    runner: web.BaseRunner, config: Config, tls: ssl.SSLContext | None, *, reuse_port: bool = False
) -> list[web.TCPSite]:
    """The public listener's sites: server.port (HTTPS when a TLS pair is set and no server.tls_port), and
    server.tls_port (HTTPS) beside it."""
    server = config.server
    options: dict[str, Any] = {"reuse_port": True} if reuse_port else {}
    if tls is not None and server.tls_port is not None:
        return [
            web.TCPSite(runner, server.host, server.port, **options),
            web.TCPSite(runner, server.host, server.tls_port, ssl_context=tls, **options),
        ]
    return [web.TCPSite(runner, server.host, server.port, ssl_context=tls, **options)]


def log_admin_listener(config: Config, admin_runner: web.AppRunner) -> None:
    log = logging.getLogger("gateway")
    admin_host, admin_port = admin_runner.addresses[0][:2]
    log.info("admin listener on http://%s:%d (status page /, /healthz, /readyz, /metrics)", admin_host, admin_port)
    if not is_loopback(config.server.admin_host):
        log.warning(
            "server.admin_host %r is not loopback: the status page, /metrics and /readyz are reachable "
            "from the network",
            config.server.admin_host,
        )
