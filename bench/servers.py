"""The benchmark's server processes, each started on its own by ``bench.run``:

    python -m bench.servers emulator --events N [--list-messages M]
    python -m bench.servers proxy --upstream URL
    python -m bench.servers same-calls --upstream URL [--store-miss] [--oauth1] [--processes N]
    python -m bench.servers gateway --upstream URL --store URL [--prefill START:COUNT ...] [--oauth1]
    python -m bench.servers serve --upstream URL --store URL --workers N
    python -m bench.servers redis

Each listens on a free loopback port, prints ``READY <url>`` on one line once it accepts connections, and
runs until SIGTERM or SIGINT. Running them apart keeps the measured server off the emulator's event loop and
out of its GIL.

- ``emulator``: the X API v2 emulator with its seed, ``N`` generated messages to destroy and ``M`` for the
  lists to read; sends add more, which it forgets again a second or two later.
- ``proxy``, ``same-calls``: the minimal and the same-calls proxy (``bench/proxy.py``); ``--processes N``
  serves the same-calls proxy from ``N`` processes on one port (``SO_REUSEPORT``, as ``serve --workers`` does),
  ``--oauth1`` has it sign its v2 calls as the benchmark's OAuth 1.0a consumer and token.
- ``gateway``: the gateway application in this process, its store filled beforehand, no access log.
- ``serve``: ``dm-gateway serve --workers N`` itself (the operator's command, its access log included), on
  free ports; ``READY`` once its ``/readyz`` answers.
- ``redis``: a redis-server of its own on a free loopback port, saving nothing, for ``serve`` on Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bench import fixtures
from bench.proxy import create_proxy_app, create_same_calls_app
from gateway.emulator import EmulatorState, default_seed
from gateway.emulator.app import create_app as create_emulator_app
from gateway.emulator.ratelimit import DEFAULT_LIMITS
from gateway.serving import freeze_startup_objects, tune_collector

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.store.base import Store

# X's quotas would stop a benchmark after 300 deletes; the emulator counts but never refuses.
UNLIMITED = 1 << 40
PREFILL_BATCH = 5_000
READY_TIMEOUT = 60.0


async def _serve(app: web.Application, *, port: int = 0, siblings: list[list[str]] | None = None) -> None:
    """Serve ``app`` on loopback until SIGTERM or SIGINT, printing ``READY <url>`` once it listens. With
    ``port``, on that port beside the other processes listening there (``SO_REUSEPORT``). With ``siblings``
    (the arguments of ``python -m bench.servers`` for another process of the same server), that many more
    processes on the same port, started once this one listens and stopped with it; ``READY`` waits for them."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    freeze_startup_objects()  # as a serving gateway process does, whichever server this is
    shared = bool(port or siblings)
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_port=shared or None)
    await site.start()
    host, port = runner.addresses[0][:2]
    helpers = [
        start_ready([sys.executable, "-m", "bench.servers", *args, "--port", str(port)]) for args in siblings or []
    ]
    print(f"READY http://{host}:{port}", flush=True)
    try:
        await until_signalled()
    finally:
        for helper in helpers:
            stop_child(helper)
        await runner.cleanup()


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def start_ready(command: list[str]) -> subprocess.Popen[bytes]:
    """A child that prints ``READY <url>`` once it serves (its standard error is ours): started, and waited for."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert child.stdout is not None
    if not child.stdout.readline().startswith(b"READY "):
        stop_child(child)
        raise RuntimeError(f"{command} did not start")
    return child


def stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def emulator_state(events: int, list_messages: int = 0) -> EmulatorState:
    state = EmulatorState.from_seed(default_seed())
    state.events.update((fixtures.message_id(i), fixtures.v2_event(i)) for i in range(events))
    listed = (fixtures.list_event(i) for i in range(list_messages))
    state.events.update((event["id"], event) for event in listed)
    for endpoint in DEFAULT_LIMITS:
        state.set_rate_limit(endpoint, UNLIMITED)
    return state


def forgetting(state: EmulatorState) -> Callable[[], None]:
    """What the emulator does every second so that a long run does not slow it down: forget the requests it
    recorded (for tests; a benchmark would only grow that list), and the messages sent more than a second
    ago (each send looks at every message to pick the next id, each list at every message to pick the
    caller's). A sent message is read back right after the send, well within that second."""
    kept = set(state.events)
    recent: list[str] = []

    def forget() -> None:
        nonlocal recent
        state.requests.clear()
        for event_id in recent:
            state.events.pop(event_id, None)
        # A dict keeps its order of insertion: the messages sent since are at its end.
        recent = list(itertools.takewhile(lambda event_id: event_id not in kept, reversed(state.events)))

    return forget


async def run_emulator(events: int, list_messages: int) -> None:
    state = emulator_state(events, list_messages)
    forget = forgetting(state)

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            forget()

    cleaner = asyncio.create_task(every_second())
    try:
        await _serve(create_emulator_app(state))
    finally:
        cleaner.cancel()


async def run_proxy(upstream: str) -> None:
    await _serve(create_proxy_app(upstream))


async def run_same_calls(upstream: str, store_miss: bool, oauth1: bool, processes: int, port: int) -> None:
    from bench.load import OAUTH1_SIGNER

    sibling = ["same-calls", "--upstream", upstream, *(["--store-miss"] if store_miss else [])]
    sibling += ["--oauth1"] if oauth1 else []
    app = create_same_calls_app(upstream, store_miss=store_miss, signer=OAUTH1_SIGNER if oauth1 else None)
    await _serve(app, port=port, siblings=[sibling] * (processes - 1))


def parse_range(text: str) -> range:
    start, _, count = text.partition(":")
    return range(int(start), int(start) + int(count))


async def open_bench_store(url: str, capacity: int) -> tuple[Store, str | None]:
    """A store for ``url``: memory (room for ``capacity`` messages and as many learned), a SQLite path or a Redis URL under a
    prefix of its own. Returns the store and, for Redis, its prefix."""
    from gateway.config import StoreConfig
    from gateway.store.factory import open_store

    if url.startswith("redis://"):
        from gateway.store.redis import RedisStore

        prefix = f"dmgw-bench:{uuid.uuid4().hex}:v1:"
        return await RedisStore.open(url, prefix=prefix), prefix
    settings = StoreConfig(
        url=url, memory_max_entries=max(capacity * 2, 100_000), memory_max_bytes=max(capacity * 2048, 1 << 26)
    )
    return await open_store(url, settings=settings), None


async def prepared_store(store_url: str, prefill: list[range], oauth1: bool) -> tuple[Store, str | None]:
    """The gateway's store for a run (see ``open_bench_store``), holding the two users, the messages
    ``prefill`` and, with ``oauth1``, the caller's OAuth 1.0a consumer and token."""
    from gateway.auth.credentials import Consumer, Token

    store, prefix = await open_bench_store(store_url, sum(len(r) for r in prefill))
    await store.put_users(fixtures.seed_users())
    for ids in prefill:
        await fixtures.fill(store, ids, PREFILL_BATCH)
    if oauth1:
        await store.put_consumer(Consumer(key=fixtures.CONSUMER_KEY, secret=fixtures.CONSUMER_SECRET))
        token = Token(
            token=fixtures.OAUTH_TOKEN, consumer_key=fixtures.CONSUMER_KEY, secret=fixtures.OAUTH_TOKEN_SECRET
        )
        await store.put_token(token)
    return store, prefix


def gateway_config(upstream: str, store_url: str) -> Config:
    from gateway.config import load_config

    return load_config(
        env={}, overrides={"upstream": {"base_url": upstream, "timeout": 30.0}, "store": {"url": store_url}}
    )


async def run_gateway(upstream: str, store_url: str, prefill: list[range], oauth1: bool) -> None:
    from gateway.app import create_app

    store, prefix = await prepared_store(store_url, prefill, oauth1)
    try:
        await _serve(create_app(gateway_config(upstream, "memory" if prefix else store_url), store=store))
    finally:
        await store.close()
        if prefix is not None:
            await delete_prefix(store_url, prefix)


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (and nothing else: the server is shared)."""
    import re

    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_timeout=10)
    try:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


def run_serve(upstream: str, store_url: str, workers: int) -> None:
    """``dm-gateway serve --workers N`` on free ports, as an operator starts it, until SIGTERM or SIGINT."""
    port, admin_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--admin-port", str(admin_port), "--workers", str(workers), "--upstream", upstream, "--store", store_url,
    ]  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    serve_child(command, ready, f"http://127.0.0.1:{port}")


def run_redis() -> None:
    """A redis-server of its own, on a free loopback port, keeping nothing on disk."""
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed: the scenarios of serve on Redis need it")
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    serve_child(command, ready, f"redis://127.0.0.1:{port}/0")


def serve_child(command: list[str], ready: Callable[[], bool], url: str) -> None:
    """Run ``command`` (its output goes to our standard error) and, once ``ready()``, print ``READY url``;
    stop it on SIGTERM or SIGINT."""
    child = subprocess.Popen(command, stdout=sys.stderr)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} {command[1:3]} did not start")
            time.sleep(0.1)
        print(f"READY {url}", flush=True)
        asyncio.run(until_signalled())
    finally:
        stop_child(child)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("emulator")
    emulator.add_argument("--events", type=int, required=True)
    emulator.add_argument("--list-messages", type=int, default=0)
    proxy = commands.add_parser("proxy")
    proxy.add_argument("--upstream", required=True)
    same_calls = commands.add_parser("same-calls")
    same_calls.add_argument("--upstream", required=True)
    same_calls.add_argument("--store-miss", action="store_true", help="destroys: v2's GET before the DELETE")
    same_calls.add_argument("--oauth1", action="store_true", help="sign the v2 calls with OAuth 1.0a")
    same_calls.add_argument("--processes", type=int, default=1)
    same_calls.add_argument("--port", type=int, default=0, help="share this port with the others serving it")
    serve = commands.add_parser("serve")
    serve.add_argument("--upstream", required=True)
    serve.add_argument("--store", required=True)
    serve.add_argument("--workers", type=int, required=True)
    commands.add_parser("redis")
    gateway = commands.add_parser("gateway")
    gateway.add_argument("--upstream", required=True)
    gateway.add_argument("--store", required=True)
    gateway.add_argument("--prefill", type=parse_range, action="append", default=[])
    gateway.add_argument("--oauth1", action="store_true")
    gateway.add_argument("--profile", metavar="PATH", help="write cProfile statistics of the whole run to PATH")
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            asyncio.run(run_emulator(args.events, args.list_messages))
            return
        if args.command in ("serve", "redis"):
            # A SIGTERM before the event loop runs still stops the child through the finally below.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        if args.command == "serve":
            run_serve(args.upstream, args.store, args.workers)  # its processes tune their own collectors
            return
        if args.command == "redis":
            run_redis()
            return
        # The measured servers collect garbage as a serving gateway process does (the proxy's count of
        # instructions per destroy is the same either way: it keeps far fewer objects alive).
        tune_collector()
        if args.command == "proxy":
            asyncio.run(run_proxy(args.upstream))
        elif args.command == "same-calls":
            asyncio.run(run_same_calls(args.upstream, args.store_miss, args.oauth1, args.processes, args.port))
        elif args.profile:
            import cProfile

            with cProfile.Profile(time.thread_time) as profile:  # CPU of the event loop, not time spent descheduled
                asyncio.run(run_gateway(args.upstream, args.store, args.prefill, args.oauth1))
            profile.dump_stats(args.profile)
        else:
            asyncio.run(run_gateway(args.upstream, args.store, args.prefill, args.oauth1))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
