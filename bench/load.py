"""The load generator, run as a process of its own by ``bench.run``:

    python -m bench.load --base URL --call CALL --start I --warmup W --count N [--concurrency C]
                         [--auth bearer|oauth1]

``C`` aiohttp clients on keep-alive connections make ``W + N`` requests of one ``CALL`` (see ``CALLS``): a
destroy call destroys the messages ``I .. I+W+N-1``, each id once; a list call lists the caller's inbox every
time; a send call sends a new message each time, its text numbered from ``I``. First ``W`` requests as
warm-up, then it prints ``WARM`` and waits for a line on standard input (so the caller can read the servers'
CPU counters), then the ``N`` measured ones, and prints one JSON line: requests, seconds, requests per second,
latency percentiles (every request's own time, from sending it to reading the last byte of its answer), a
count of every status other than 200, and the size of the smallest answer. Every request's ``Authorization``
header is made before the requests it goes with are sent: the measured ones' after the warm-up, before
``WARM``, so that no signing is measured (see ``Signer``).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter

import aiohttp
import orjson

from bench import fixtures
from gateway.auth.upstream import OAuth1Credential

#: v1.1 and StatusNet destroys, v2's DELETE, v1.1 and StatusNet inbox lists, v1.1 and StatusNet sends.
CALLS = ("v1.1", "statusnet", "v2", "v1.1-list", "statusnet-list", "v1.1-send", "statusnet-send")
DESTROY_CALLS = frozenset(("v1.1", "statusnet", "v2"))
LIST_COUNT = 50  # what the v1.1 list asks for; StatusNet's takes its default (20)


def request_for(call: str, base: str, index: int) -> tuple[str, str, dict[str, str] | None]:
    """Method, URL and form body (None for none) of request number ``index`` of ``call``."""
    message_id = fixtures.message_id(index)
    if call == "v1.1":
        return "POST", f"{base}/1.1/direct_messages/destroy.json?id={message_id}", None
    if call == "statusnet":
        return "POST", f"{base}/api/direct_messages/destroy/{message_id}.xml", None
    if call == "v2":
        return "DELETE", f"{base}/2/dm_events/{message_id}", None
    if call == "v1.1-list":
        return "GET", f"{base}/1.1/direct_messages.json?count={LIST_COUNT}", None
    if call == "statusnet-list":
        return "GET", f"{base}/api/direct_messages.xml", None
    form = {"user_id": fixtures.SEND_TO_ID, "text": fixtures.text_of(index)}
    if call == "v1.1-send":
        return "POST", f"{base}/1.1/direct_messages/new.json", form
    if call == "statusnet-send":
        return "POST", f"{base}/api/direct_messages/new.xml", form
    raise ValueError(f"unknown call {call!r}")


class Signer:
    """The Authorization header for one request: the caller's bearer token (the sender's, for a send), or an
    OAuth 1.0a signature (destroys and lists only) with a nonce of its own, made as the gateway signs its
    upstream requests (``OAUTH1_SIGNER``), not with authlib's client, which costs the load generator, on the
    server's CPUs, several hundred µs a request. ``run`` signs every request before the part it measures, so
    the OAuth 1.0a runs and the bearer runs they are compared with load the machine alike while measured."""

    def __init__(self, auth: str, call: str) -> None:
        self._oauth1 = False
        self._bearer = f"Bearer {fixtures.SEND_FROM_TOKEN if call.endswith('-send') else fixtures.CALLER_TOKEN}"
        if auth == "oauth1":
            if call.endswith("-send"):
                raise ValueError("the load generator signs no form bodies: sends are bearer only")
            self._oauth1 = True
        elif auth != "bearer":
            raise ValueError(f"unknown auth {auth!r}")

    def __call__(self, method: str, url: str) -> str:
        if not self._oauth1:
            return self._bearer
        return OAUTH1_SIGNER.sign(method, url, secrets.token_hex(16), str(int(time.time())))


#: The benchmark's caller as an OAuth 1.0a signer: its consumer and token, which the emulator and the gateway know.
OAUTH1_SIGNER = OAuth1Credential(
    fixtures.CONSUMER_KEY, fixtures.CONSUMER_SECRET, fixtures.OAUTH_TOKEN, fixtures.OAUTH_TOKEN_SECRET
)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def signed(call: str, base: str, indexes: range, sign: Signer) -> dict[int, str]:
    """The Authorization header of each of the requests ``indexes``, made before any of them is sent."""
    return {index: sign(*request_for(call, base, index)[:2]) for index in indexes}


async def _drive(
    session: aiohttp.ClientSession, call: str, base: str, authorizations: dict[int, str], concurrency: int
) -> tuple[list[float], Counter[int], list[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    sizes: list[int] = []

    ids = iter(authorizations)

    async def worker() -> None:
        for index in ids:  # one shared iterator: every id is used once
            method, url, form = request_for(call, base, index)
            headers = {"Authorization": authorizations[index]}
            began = time.perf_counter()
            async with session.request(method, url, headers=headers, data=form) as response:
                body = await response.read()
            latencies.append(time.perf_counter() - began)
            statuses[response.status] += 1
            sizes.append(len(body))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, sizes


async def run(
    base: str, call: str, start: int, warmup: int, count: int, concurrency: int, auth: str, wait_after_warmup: bool
) -> dict[str, object]:
    sign = Signer(auth, call)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        if warmup:
            await _drive(session, call, base, signed(call, base, range(start, start + warmup), sign), concurrency)
        # Signed now, so that signing costs the measured part nothing: the timestamps stay well within the
        # gateway's window (minutes) over a run of seconds.
        measured = signed(call, base, range(start + warmup, start + warmup + count), sign)
        print("WARM", flush=True)
        if wait_after_warmup:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        began = time.perf_counter()
        latencies, statuses, sizes = await _drive(session, call, base, measured, concurrency)
        seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": {str(status): n for status, n in statuses.items() if status != 200},
        "smallest_answer_bytes": min(sizes, default=0),
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
