"""CPU per destroy of two servers, compared in interleaved slices:

    python -m bench.compare NAME=SERVER[@CHECKOUT] NAME=SERVER[@CHECKOUT] [--call statusnet] [--slices 8]
                            [--count 3000] [--warmup 200] [--concurrency 32] [--auth oauth1] [--store-miss]
                            [--one-order] [--json PATH]

SERVER is ``memory``, ``sqlite`` or ``redis`` (a gateway with that store, filled beforehand with every message
the comparison destroys; Redis at ``DMGW_BENCH_REDIS_URL``, under a key prefix of the server's own, deleted when
it stops), ``proxy`` (the minimal proxy) or ``same-calls`` (the proxy making the v2 calls the gateway makes
for the destroy: with ``--store-miss`` the GET first, with ``--auth oauth1`` each signed with OAuth 1.0a, as
the gateway signs them); CHECKOUT is a directory holding another version of the
project (a ``git worktree``), whose code that server then runs; without it, this one's. Both servers are up at
once against one emulator, and the load alternates between them in slices of ``--count`` destroys (A B, then
B A, ...), each slice's CPU (user and system, all threads of the server's process) read from /proc. A slice
pair's ratio is B's CPU per destroy over A's; the median over the pairs is printed, with each server's
median CPU per destroy and req/s. ``--auth oauth1`` signs every call to a gateway with OAuth 1.0a (the
gateway's store holds the emulator's consumer and token), and ``--store-miss`` leaves a gateway's store
without the messages, so that each destroy first asks v2 for its message; the proxies take the same calls
with the bearer token either way (they authenticate nobody and have no store).

Why slices: on a shared virtual machine the CPU a request costs drifts by half within a minute, far more than
most changes a comparison looks for; two slices a few seconds apart share that drift. The server started
second can still differ from the first by several per cent, so the comparison is run again with the start
order swapped (unless ``--one-order``), and both orders' ratios are printed with their mean.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.run import PROXY_KINDS, Process, Scenario, run_load, same_calls_command, store_url

SERVERS = ("memory", "sqlite", "redis", *PROXY_KINDS)


@dataclass(frozen=True)
class Side:
    name: str
    server: str
    checkout: Path | None

    @property
    def is_proxy(self) -> bool:
        """A proxy authenticates nobody: it is called with the bearer token whatever ``--auth`` says."""
        return self.server in PROXY_KINDS

    @classmethod
    def parse(cls, text: str) -> Side:
        name, sep, rest = text.partition("=")
        server, _, checkout = rest.partition("@")
        if not sep or not name or server not in SERVERS:
            raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SERVER[@CHECKOUT], SERVER one of {SERVERS}")
        return cls(name, server, Path(checkout).resolve() if checkout else None)


def slice_ratios(first: list[float], second: list[float]) -> list[float]:
    """Slice i of the second server over slice i of the first: the two ran next to each other."""
    return [b / a for a, b in zip(first, second, strict=True)]


def server_command(side: Side, upstream: str, ids: range, args: argparse.Namespace, log_dir: Path) -> list[str]:
    """The ``bench.servers`` command of one side against ``upstream``: the minimal proxy, the same-calls proxy
    (the GET first with ``--store-miss``, its calls signed with ``--auth oauth1``), or a gateway whose store
    holds the messages ``ids`` beforehand (none with ``--store-miss``) and, with ``--auth oauth1``, the
    emulator's consumer and token."""
    if side.server == "proxy":
        return ["bench.servers", "proxy", "--upstream", upstream]
    if side.server == "same-calls":
        return same_calls_command(upstream, store_miss=args.store_miss, oauth1=args.auth == "oauth1")
    (log_dir / side.name).mkdir(exist_ok=True)
    store = store_url(side.server, log_dir / side.name)
    command = ["bench.servers", "gateway", "--upstream", upstream, "--store", store]
    if not args.store_miss:
        command += ["--prefill", f"{ids.start}:{len(ids)}"]
    if args.auth == "oauth1":
        command.append("--oauth1")
    return command


def compare(sides: tuple[Side, Side], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One comparison, the servers started in the order given; CPU µs per destroy and req/s of every slice."""
    per_slice = args.warmup + args.count
    total = per_slice * args.slices * 2
    emulator = Process("emulator", ["bench.servers", "emulator", "--events", str(total)], log_dir).ready()
    processes: list[Process] = []
    try:
        for index, side in enumerate(sides):
            ids = range(index * total // 2, (index + 1) * total // 2)
            command = server_command(side, emulator.url, ids, args, log_dir)
            processes.append(Process(side.name, command, log_dir, cwd=side.checkout))
        for process in processes:
            process.ready()
        cpu: list[list[float]] = [[], []]
        rps: list[list[float]] = [[], []]
        auths = ["bearer" if side.is_proxy else args.auth for side in sides]
        for number in range(args.slices):
            for index in (0, 1) if number % 2 == 0 else (1, 0):
                process = processes[index]
                scenario = Scenario("compare", "gateway", args.call, auths[index])
                start = index * total // 2 + number * per_slice
                result = run_load(
                    scenario, process.url, start, args.warmup, args.count, args.concurrency, {"server": process.pid}
                )
                if result["errors"]:  # CPU per destroy means nothing over refused or failed calls
                    raise RuntimeError(f"{sides[index].name} answered {result['errors']} (status: count)")
                cpu[index].append(result["cpu_us_per_request"]["server"])
                rps[index].append(result["rps"])
    finally:
        for process in processes:
            process.stop()
        emulator.stop()
    return {
        "order": [side.name for side in sides],
        "cpu_us": {side.name: cpu[i] for i, side in enumerate(sides)},
        "rps": {side.name: rps[i] for i, side in enumerate(sides)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Side.parse, metavar="NAME=SERVER[@CHECKOUT]")
    parser.add_argument("b", type=Side.parse, metavar="NAME=SERVER[@CHECKOUT]")
    parser.add_argument("--call", choices=("v1.1", "statusnet"), default="statusnet")
    parser.add_argument("--slices", type=int, default=8, help="slices per server and order (default 8)")
    parser.add_argument("--count", type=int, default=3000, help="measured destroys per slice (default 3000)")
    parser.add_argument("--warmup", type=int, default=200, help="destroys before each slice's measuring (default 200)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--auth", choices=("bearer", "oauth1"), default="bearer", help="how the gateways are called")
    parser.add_argument("--store-miss", action="store_true", help="gateways start without the messages in store")
    parser.add_argument("--one-order", action="store_true", help="only the order given, not swapped as well")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every slice's numbers to PATH")
    args = parser.parse_args(argv)
    if args.a.name == args.b.name:
        parser.error("the two sides need names of their own")
    orders = [(args.a, args.b)] if args.one_order else [(args.a, args.b), (args.b, args.a)]
    runs = []
    ratios = []
    with tempfile.TemporaryDirectory(prefix="dmgw-compare-") as scratch:
        for sides in orders:
            run = compare(sides, args, Path(scratch))
            runs.append(run)
            cpu = run["cpu_us"]
            ratio = statistics.median(slice_ratios(cpu[args.a.name], cpu[args.b.name]))
            ratios.append(ratio)
            print(f"started {' then '.join(run['order'])}:")
            for side in (args.a, args.b):
                print(
                    f"  {side.name:<12} CPU µs/destroy median {statistics.median(cpu[side.name]):7.1f}"
                    f"  req/s median {statistics.median(run['rps'][side.name]):8.1f}"
                    f"  slices {' '.join(f'{v:.0f}' for v in cpu[side.name])}"
                )
            print(f"  CPU {args.b.name} / {args.a.name}, median over slice pairs: {ratio:.3f}")
    summary = statistics.mean(ratios)
    print(f"CPU {args.b.name} / {args.a.name}: {summary:.3f} (mean of the orders' medians)")
    if args.json:
        args.json.write_bytes(
            orjson.dumps({"runs": runs, "ratios": ratios, "ratio": summary}, option=orjson.OPT_INDENT_2)
        )


if __name__ == "__main__":
    main()
