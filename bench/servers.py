"""The benchmark's server processes, each started on its own by ``bench.run``:

    python -m bench.servers emulator --events N
    python -m bench.servers proxy --upstream URL
    python -m bench.servers gateway --upstream URL --store URL [--prefill START:COUNT ...] [--oauth1]

Each listens on a free loopback port, prints ``READY <url>`` on one line once it accepts connections, and
runs until SIGTERM or SIGINT. Running them apart keeps the measured server off the emulator's event loop and
out of its GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bench import fixtures
from bench.proxy import create_proxy_app
from gateway.emulator import EmulatorState, default_seed
from gateway.emulator.app import create_app as create_emulator_app
from gateway.emulator.ratelimit import DEFAULT_LIMITS
from gateway.serving import tune_collector

if TYPE_CHECKING:
    from gateway.store.base import Store

# X's quotas would stop a benchmark after 300 deletes; the emulator counts but never refuses.
UNLIMITED = 1 << 40
PREFILL_BATCH = 5_000


async def _serve(app: web.Application, before: Callable[[], Awaitable[None]] | None = None) -> None:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"READY http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def emulator_state(events: int) -> EmulatorState:
    state = EmulatorState.from_seed(default_seed())
    state.events.update((fixtures.message_id(i), fixtures.v2_event(i)) for i in range(events))
    for endpoint in DEFAULT_LIMITS:
        state.set_rate_limit(endpoint, UNLIMITED)
    return state


async def run_emulator(events: int) -> None:
    state = emulator_state(events)

    async def forget_requests() -> None:
        # The emulator records every request for tests; a benchmark would only grow that list without end.
        while True:
            await asyncio.sleep(1.0)
            state.requests.clear()

    cleaner = asyncio.create_task(forget_requests())
    try:
        await _serve(create_emulator_app(state))
    finally:
        cleaner.cancel()


async def run_proxy(upstream: str) -> None:
    await _serve(create_proxy_app(upstream))


def parse_range(text: str) -> range:
    start, _, count = text.partition(":")
    return range(int(start), int(start) + int(count))


async def open_bench_store(url: str, capacity: int) -> tuple[Store, str | None]:
    """A store for ``url``: memory (sized for ``capacity`` messages), a SQLite path or a Redis URL under a
    prefix of its own. Returns the store and, for Redis, its prefix."""
    from gateway.config import StoreConfig
    from gateway.store.factory import open_store

    if url.startswith("redis://"):
        from gateway.store.redis import RedisStore

        prefix = f"dmgw-bench:{uuid.uuid4().hex}:v1:"
        return await RedisStore.open(url, prefix=prefix), prefix
    settings = StoreConfig(
        url=url, memory_max_entries=max(capacity * 2, 1000), memory_max_bytes=max(capacity * 2048, 1 << 26)
    )
    return await open_store(url, settings=settings), None


async def run_gateway(upstream: str, store_url: str, prefill: list[range], oauth1: bool) -> None:
    from gateway.app import create_app
    from gateway.auth.credentials import Consumer, Token
    from gateway.config import load_config

    capacity = sum(len(r) for r in prefill)
    store, prefix = await open_bench_store(store_url, capacity)
    try:
        await store.put_users(fixtures.seed_users())
        for ids in prefill:
            await fixtures.fill(store, ids, PREFILL_BATCH)
        if oauth1:
            await store.put_consumer(Consumer(key=fixtures.CONSUMER_KEY, secret=fixtures.CONSUMER_SECRET))
            await store.put_token(
                Token(
                    token=fixtures.OAUTH_TOKEN, consumer_key=fixtures.CONSUMER_KEY, secret=fixtures.OAUTH_TOKEN_SECRET
                )
            )
        config = load_config(
            env={},
            overrides={
                "upstream": {"base_url": upstream, "timeout": 30.0},
                "store": {"url": "memory" if prefix else store_url},
            },
        )
        await _serve(create_app(config, store=store))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("emulator")
    emulator.add_argument("--events", type=int, required=True)
    proxy = commands.add_parser("proxy")
    proxy.add_argument("--upstream", required=True)
    gateway = commands.add_parser("gateway")
    gateway.add_argument("--upstream", required=True)
    gateway.add_argument("--store", required=True)
    gateway.add_argument("--prefill", type=parse_range, action="append", default=[])
    gateway.add_argument("--oauth1", action="store_true")
    gateway.add_argument("--profile", metavar="PATH", help="write cProfile statistics of the whole run to PATH")
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            asyncio.run(run_emulator(args.events))
            return
        # Both measured servers collect garbage as a serving gateway process does (the proxy's count of
        # instructions per destroy is the same either way: it keeps far fewer objects alive).
        tune_collector()
        if args.command == "proxy":
            asyncio.run(run_proxy(args.upstream))
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
