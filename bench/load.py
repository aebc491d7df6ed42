"""The load generator, run as a process of its own by ``bench.run``:

    python -m bench.load --base URL --call v1.1|statusnet|v2 --start I --warmup W --count N [--concurrency C]
                         [--auth bearer|oauth1]

``C`` aiohttp clients on keep-alive connections destroy the messages ``I .. I+W+N-1``, each id once: first
``W`` of them as warm-up, then it prints ``WARM`` and waits for a line on standard input (so the caller can
read the servers' CPU counters), then the ``N`` measured ones, and prints one JSON line: requests, seconds,
requests per second, latency percentiles, and a count of every status other than 200.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import orjson

from bench import fixtures

CALLS = ("v1.1", "statusnet", "v2")


def request_for(call: str, base: str, index: int) -> tuple[str, str]:
    message_id = fixtures.message_id(index)
    if call == "v1.1":
        return "POST", f"{base}/1.1/direct_messages/destroy.json?id={message_id}"
    if call == "statusnet":
        return "POST", f"{base}/api/direct_messages/destroy/{message_id}.xml"
    if call == "v2":
        return "DELETE", f"{base}/2/dm_events/{message_id}"
    raise ValueError(f"unknown call {call!r}")


class Signer:
    """The Authorization header for one request: the caller's bearer token, or a fresh OAuth 1.0a signature."""

    def __init__(self, auth: str) -> None:
        self._oauth1 = None
        if auth == "oauth1":
            from authlib.oauth1.rfc5849.client_auth import ClientAuth

            self._oauth1 = ClientAuth(
                fixtures.CONSUMER_KEY, fixtures.CONSUMER_SECRET, fixtures.OAUTH_TOKEN, fixtures.OAUTH_TOKEN_SECRET
            )
        elif auth != "bearer":
            raise ValueError(f"unknown auth {auth!r}")

    def __call__(self, method: str, url: str) -> str:
        if self._oauth1 is None:
            return f"Bearer {fixtures.CALLER_TOKEN}"
        _, headers, _ = self._oauth1.sign(method, url, {}, b"")
        return headers["Authorization"]


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _drive(
    session: aiohttp.ClientSession, call: str, base: str, ids: Iterator[int], concurrency: int, sign: Signer
) -> tuple[list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def worker() -> None:
        for index in ids:  # one shared iterator: every id is used once
            method, url = request_for(call, base, index)
            headers = {"Authorization": sign(method, url)}
            began = time.perf_counter()
            async with session.request(method, url, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - began)
            statuses[response.status] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


async def run(
    base: str, call: str, start: int, warmup: int, count: int, concurrency: int, auth: str, wait_after_warmup: bool
) -> dict[str, object]:
    sign = Signer(auth)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        if warmup:
            await _drive(session, call, base, iter(range(start, start + warmup)), concurrency, sign)
        print("WARM", flush=True)
        if wait_after_warmup:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        began = time.perf_counter()
        measured = iter(range(start + warmup, start + warmup + count))
        latencies, statuses = await _drive(session, call, base, measured, concurrency, sign)
        seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": {str(status): n for status, n in statuses.items() if status != 200},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--base", required=True)
    parser.add_argument("--call", choices=CALLS, required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--auth", choices=("bearer", "oauth1"), default="bearer")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a line after the warm-up")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(args.base, args.call, args.start, args.warmup, args.count, args.concurrency, args.auth, not args.no_wait)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
