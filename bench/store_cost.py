"""What a store costs as it grows, run as a process of its own (so memory figures start clean):

    python -m bench.store_cost --backend memory|sqlite|redis --sizes 1000,100000,1000000 [--lookups N]
                               [--redis-url URL] [--dir DIR]

The store is filled through its own ``put_messages`` in batches up to each size in turn; at each size it
reports the latency of the store's real ``get_message`` for random known ids (one at a time, as the gateway
asks), its growth over the smallest size, and the bytes one message costs.

Growth is measured in pairs: a second store of the same backend holds the smallest size throughout, and the
lookups alternate between the two in rounds (each batch after a short unmeasured warm-up, so neither starts
with the other's data in the CPU caches). A round's ratio is its p50 over the small store's p50 in the same
round, and ``ratio_to_smallest`` is the median of the rounds' ratios: a machine whose speed drifts over
minutes (a shared VM) moves both of a pair alike, where sizes measured one after another would each get
the machine as it happened to be then. At the smallest size the pair is two equal stores, so its ratio
shows the method's own noise.

The bytes per message:

- memory: the growth of the process's resident memory per message, and the store's own size accounting
  (``cached_bytes``, the encoded record plus key);
- sqlite: the database's pages (``page_count * page_size``) per message;
- redis: ``MEMORY USAGE`` of sampled message keys, and the growth of the server's ``used_memory`` per message
  (the server may be shared, so the latter is noisy). Redis keys go under a prefix of their own, deleted at
  the end.

One JSON line per size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench import fixtures
from bench.load import percentile
from bench.servers import delete_prefix

FILL_BATCH = 10_000
REDIS_SAMPLES = 200
#: Rounds of paired lookups per size; each round looks up lookups/ROUNDS ids in each store.
ROUNDS = 25
#: Unmeasured lookups at the start of every batch.
BATCH_WARMUP = 50


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sqlite_bytes(path: str) -> int:
    with sqlite3.connect(path) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    return pages * page_size


class Subject:
    """One backend under measurement: how to open it, and how to weigh it."""

    def __init__(self, backend: str, capacity: int, directory: str, redis_url: str, name: str = "store-cost") -> None:
        self.backend = backend
        self.capacity = capacity
        self.path = str(Path(directory) / f"{name}.sqlite3")
        self.redis_url = redis_url
        self.prefix = f"dmgw-bench:{uuid.uuid4().hex}:v1:"
        self.store: Any = None
        self._redis: Any = None

    async def open(self) -> None:
        if self.backend == "memory":
            from gateway.store.memory import MemoryStore

            self.store = MemoryStore(max_entries=self.capacity + 1, max_bytes=1 << 40)
        elif self.backend == "sqlite":
            from gateway.store.sqlite import SQLiteStore

            self.store = await SQLiteStore.open(self.path)
        elif self.backend == "redis":
            import redis.asyncio

            from gateway.store.redis import RedisStore

            self.store = await RedisStore.open(self.redis_url, prefix=self.prefix)
            self._redis = redis.asyncio.Redis.from_url(self.redis_url, socket_timeout=30)
        else:
            raise ValueError(f"unknown backend {self.backend!r}")

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
        if self._redis is not None:
            await self._redis.aclose()
            await delete_prefix(self.redis_url, self.prefix)

    async def weigh(self) -> dict[str, float]:
        """Sizes in bytes, whose growth from empty divided by the messages stored is the cost of one."""
        if self.backend == "memory":
            return {"rss": resident_bytes(), "accounted": self.store.cached_bytes}
        if self.backend == "sqlite":
            return {"pages": sqlite_bytes(self.path)}
        info = await self._redis.info("memory")
        return {"used_memory": info["used_memory"]}

    async def sampled_key_bytes(self, size: int) -> float | None:
        """Mean ``MEMORY USAGE`` of sampled message keys (Redis only)."""
        if self.backend != "redis" or size == 0:
            return None
        indexes = random.sample(range(size), min(REDIS_SAMPLES, size))
        usages = [
            await self._redis.memory_usage(f"{self.prefix}msg:{fixtures.message_id(i)}", samples=0) for i in indexes
        ]
        return sum(usages) / len(usages)


async def measure(backend: str, sizes: list[int], lookups: int, directory: str, redis_url: str) -> list[dict[str, Any]]:
    subject = Subject(backend, max(sizes), directory, redis_url)
    smallest = Subject(backend, sizes[0], directory, redis_url, name="smallest")
    results = []
    try:
        await smallest.open()
        await fixtures.fill(
            smallest.store, range(sizes[0]), FILL_BATCH
        )  # before the empty weights: it is not the subject's
        empty_rss = resident_bytes()
        await subject.open()
        empty = await subject.weigh()
        if backend == "memory":
            empty["rss"] = empty_rss
        filled = 0
        for size in sizes:
            began = time.perf_counter()
            await fixtures.fill(subject.store, range(filled, size), FILL_BATCH)
            fill_seconds = time.perf_counter() - began
            filled = size
            weights = await subject.weigh()
            per_message = {name: (weights[name] - empty[name]) / size for name in weights}
            sampled = await subject.sampled_key_bytes(size)
            if sampled is not None:
                per_message["memory_usage_sampled"] = sampled
            latencies, ratios = await _paired_lookups(subject.store, size, smallest.store, sizes[0], lookups)
            reference = await _reference_lookups(size, lookups) if backend == "memory" else None
            results.append(
                {
                    "backend": backend,
                    "messages": size,
                    "fill_seconds": fill_seconds,
                    "lookups": len(latencies),
                    "p50_us": percentile(latencies, 0.50) * 1e6,
                    "p99_us": percentile(latencies, 0.99) * 1e6,
                    "ratio_to_smallest": statistics.median(ratios),
                    "round_ratios": ratios,
                    "bytes_per_message": per_message,
                    **({"plain_dict_p50_us": percentile(reference, 0.50) * 1e6} if reference else {}),
                }
            )
            print(orjson.dumps(results[-1]).decode(), flush=True)
    finally:
        await subject.close()
        await smallest.close()
    return results


async def _paired_lookups(
    store: Any, size: int, small: Any, small_size: int, count: int
) -> tuple[list[float], list[float]]:
    """``count`` lookups in ``store`` (sorted latencies), taken in ``ROUNDS`` batches each paired with as many
    in ``small``; and each round's p50 ratio of the two."""
    rng = random.Random(size)
    per_round = max(1, count // ROUNDS)
    latencies: list[float] = []
    ratios: list[float] = []
    for _ in range(ROUNDS):
        mine = await _lookups(store, size, per_round, rng)
        theirs = await _lookups(small, small_size, per_round, rng)
        ratios.append(percentile(mine, 0.50) / percentile(theirs, 0.50))
        latencies.extend(mine)
    latencies.sort()
    return latencies, ratios


async def _lookups(store: Any, size: int, count: int, rng: random.Random) -> list[float]:
    """Sorted latencies of ``count`` lookups of random known ids, after ``BATCH_WARMUP`` unmeasured ones (which
    warm the code path and the caches for this store, not the data: the measured ids are drawn afresh)."""
    for _ in range(BATCH_WARMUP):
        await store.get_message(fixtures.message_id(rng.randrange(size)))
    latencies = []
    for _ in range(count):
        message_id = fixtures.message_id(rng.randrange(size))
        began = time.perf_counter()
        message = await store.get_message(message_id)
        latencies.append(time.perf_counter() - began)
        if message is None or message.id != message_id:
            raise RuntimeError(f"{store.__class__.__name__} lost message {message_id}")
    latencies.sort()
    return latencies


async def _reference_lookups(size: int, count: int) -> list[float]:
    """The same lookups in a plain dict of ``size`` entries, through a coroutine as the store's are: the floor
    any in-process table pays at that size on this machine (caches, TLB), whatever the store does."""

    async def get(message_id: str) -> object:
        return table.get(message_id)

    table = {fixtures.message_id(i): i for i in range(size)}
    rng = random.Random(size)
    latencies = []
    for _ in range(count):
        message_id = fixtures.message_id(rng.randrange(size))
        began = time.perf_counter()
        await get(message_id)
        latencies.append(time.perf_counter() - began)
    latencies.sort()
    return latencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost")
    parser.add_argument("--backend", choices=("memory", "sqlite", "redis"), required=True)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temporary directory)")
    args = parser.parse_args(argv)
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    with tempfile.TemporaryDirectory(prefix="dmgw-bench-") as scratch:
        try:
            asyncio.run(measure(args.backend, sizes, args.lookups, args.dir or scratch, args.redis_url))
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
