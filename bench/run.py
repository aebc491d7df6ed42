"""The benchmark, in one command: ``python -m bench`` (``--quick`` for a smoke run). See bench/README.md.

Processes: the emulator, the server under test (the gateway, or the minimal proxy) and the load generator
each run in a process of their own; this one only starts them, reads CPU counters and prints. Every destroy
deletes a message that exists in the emulator and was not deleted before: each scenario gets its own range
of ids, and the gateway's store is filled beforehand with the ranges of its store-hit scenarios.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
THROUGHPUT_TARGET = 0.8  # gateway destroys per second / minimal proxy's
LOOKUP_TARGET = 1.5  # store lookup p50 at the largest size / at the smallest
REDIS_URL = os.environ.get("DMGW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Scenario:
    name: str
    server: str  # "emulator", "proxy" or "gateway:<store>"
    call: str  # v1.1, statusnet, v2 (see bench.load)
    auth: str = "bearer"
    store_hit: bool = True
    ids: range = range(0)
    result: dict[str, Any] = field(default_factory=dict)


def plan(stores: list[str], oauth1: bool) -> list[Scenario]:
    scenarios = [
        Scenario("emulator alone: DELETE /2/dm_events/:id", "emulator", "v2"),
        Scenario("minimal proxy: v1.1 destroy.json", "proxy", "v1.1"),
        Scenario("minimal proxy: StatusNet destroy/ID.xml", "proxy", "statusnet"),
    ]
    for store in stores:
        server = f"gateway:{store}"
        scenarios += [
            Scenario(f"gateway [{store}]: v1.1 destroy.json", server, "v1.1"),
            Scenario(f"gateway [{store}]: StatusNet destroy/ID.xml", server, "statusnet"),
        ]
    first = f"gateway:{stores[0]}"
    scenarios += [
        Scenario(f"gateway [{stores[0]}]: v2 pass-through DELETE", first, "v2", store_hit=False),
        Scenario(f"gateway [{stores[0]}]: v1.1, store miss (GET first)", first, "v1.1", store_hit=False),
    ]
    if oauth1:
        scenarios.append(Scenario(f"gateway [{stores[0]}]: v1.1, OAuth 1.0a signed", first, "v1.1", "oauth1"))
    return scenarios


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Process:
    """A child ``python -m ...`` that prints ``READY <url>`` once it serves; ``ready()`` waits for that line,
    so several can start side by side."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name.replace(':', '-')}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=self._log)
        self.url = ""

    def ready(self) -> Process:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()[-2000:]}")
        self.url = line.split()[1]
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_load(
    scenario: Scenario, url: str, start: int, warmup: int, count: int, concurrency: int, watched: dict[str, int]
) -> dict[str, Any]:
    """Drive one scenario from a load-generator process; CPU of the ``watched`` pids over the measured part."""
    args = [
        sys.executable, "-m", "bench.load", "--base", url, "--call", scenario.call, "--auth", scenario.auth,
        "--start", str(start), "--warmup", str(warmup), "--count", str(count),
        "--concurrency", str(concurrency),
    ]  # fmt: skip
    load = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert load.stdin is not None and load.stdout is not None
    if load.stdout.readline().strip() != b"WARM":
        load.kill()
        raise RuntimeError(f"load generator failed during warm-up of {scenario.name}")
    watched = {**watched, "load generator": load.pid}
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    load.stdin.write(b"go\n")
    load.stdin.flush()
    result_line = load.stdout.readline()
    after = {name: cpu_seconds(pid) for name, pid in watched.items()}
    if load.wait() != 0 or not result_line:
        raise RuntimeError(f"load generator failed in {scenario.name}")
    result: dict[str, Any] = orjson.loads(result_line)
    result["cpu_us_per_request"] = {
        name: (after[name] - before[name]) / result["requests"] * 1e6 for name in watched
    }
    return result


def store_url(store: str, directory: Path) -> str:
    if store == "memory":
        return "memory"
    if store == "sqlite":
        return f"sqlite:///{directory}/gateway.sqlite3"
    if store == "redis":
        return REDIS_URL
    raise ValueError(f"unknown store {store!r}")


def http_bench(args: argparse.Namespace, log_dir: Path) -> list[Scenario]:
    """Every scenario ``args.rounds`` times, interleaved (all servers stay up), so a disturbance of the shared
    machine spreads over all of them instead of falling on one; odd rounds run in reverse order."""
    scenarios = plan(args.stores, args.oauth1)
    per_round = args.warmup + args.requests
    for index, scenario in enumerate(scenarios):
        scenario.ids = range(index * per_round * args.rounds, (index + 1) * per_round * args.rounds)
    events = len(scenarios) * per_round * args.rounds
    emulator = Process("emulator", ["bench.servers", "emulator", "--events", str(events)], log_dir).ready()
    servers: dict[str, Process] = {}
    try:
        for server in dict.fromkeys(s.server for s in scenarios):
            group = [s for s in scenarios if s.server == server]
            if server == "proxy":
                servers[server] = Process("proxy", ["bench.servers", "proxy", "--upstream", emulator.url], log_dir)
            elif server.startswith("gateway:"):
                store = server.split(":", 1)[1]
                command = ["bench.servers", "gateway", "--upstream", emulator.url, "--store", store_url(store, log_dir)]
                for scenario in group:
                    if scenario.store_hit:
                        command += ["--prefill", f"{scenario.ids.start}:{len(scenario.ids)}"]
                if any(s.auth == "oauth1" for s in group):
                    command.append("--oauth1")
                servers[server] = Process(server, command, log_dir)
        for process in servers.values():
            process.ready()
        rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            # Every other round runs backwards, so a machine that speeds up or slows down during the run
            # favours neither the proxy nor the gateway (their paired ratios are taken round by round).
            for scenario in scenarios if round_index % 2 == 0 else scenarios[::-1]:
                target = servers.get(scenario.server, emulator)
                watched = {"emulator": emulator.pid}
                if target is not emulator:
                    watched["server"] = target.pid
                start = scenario.ids.start + round_index * per_round
                result = run_load(scenario, target.url, start, args.warmup, args.requests, args.concurrency, watched)
                rounds[scenario.name].append(result)
                print_scenario(scenario.name, result, indent="  ")
        for scenario in scenarios:
            scenario.result = combine(rounds[scenario.name])
    finally:
        for process in servers.values():
            process.stop()
        emulator.stop()
    return scenarios


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; CPU per request over all of them; every error counted."""
    requests = sum(r["requests"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for status, n in r["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {
        "rounds": len(results),
        "requests": requests,
        "rps": statistics.median(r["rps"] for r in results),
        "rps_rounds": [r["rps"] for r in results],
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "errors": errors,
        "cpu_us_per_request": {
            name: sum(r["cpu_us_per_request"][name] * r["requests"] for r in results) / requests
            for name in results[0]["cpu_us_per_request"]
        },
    }


def store_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for backend in args.store_backends:
        command = [
            sys.executable, "-m", "bench.store_cost", "--backend", backend, "--sizes", args.sizes,
            "--lookups", str(args.lookups), "--redis-url", REDIS_URL,
        ]  # fmt: skip
        output = subprocess.run(command, stdout=subprocess.PIPE, check=True).stdout
        for line in output.decode().splitlines():
            result = orjson.loads(line)
            results.append(result)
            print_store(result)
    return results


# Output ---------------------------------------------------------------------------------------------------

HTTP_HEADER = f"{'scenario':<52} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req: server':>19} {'emulator':>9} {'loadgen':>8}"


def print_scenario(name: str, r: dict[str, Any], indent: str = "") -> None:
    cpu = r["cpu_us_per_request"]
    server_cpu = f"{cpu['server']:.0f}" if "server" in cpu else "-"
    line = (
        f"{indent}{name:<{52 - len(indent)}} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {server_cpu:>19}"
        f" {cpu['emulator']:>9.0f} {cpu['load generator']:>8.0f}"
    )
    if r["errors"]:
        line += f"  ERRORS {r['errors']}"
    print(line, flush=True)


def print_store(result: dict[str, Any]) -> None:
    sizes = ", ".join(f"{name} {value:.0f}" for name, value in result["bytes_per_message"].items())
    print(
        f"{result['backend']:<7} {result['messages']:>9} msgs  get p50 {result['p50_us']:>7.1f} µs"
        f"  p99 {result['p99_us']:>7.1f} µs  x smallest {result['ratio_to_smallest']:.2f}"
        f"  bytes/msg: {sizes}  (filled in {result['fill_seconds']:.1f} s)"
        + (f"  plain dict p50 {result['plain_dict_p50_us']:.1f} µs" if "plain_dict_p50_us" in result else ""),
        flush=True,
    )


def paired_ratio(gateway: Scenario, proxy: Scenario) -> float:
    """Gateway req/s over the proxy's, round by round (each pair ran minutes apart at most, on the machine as
    it was then), then the median over rounds: the machine's drift between rounds cancels out."""
    return statistics.median(g / p for g, p in zip(gateway.result["rps_rounds"], proxy.result["rps_rounds"], strict=True))


def print_ratios(scenarios: list[Scenario]) -> None:
    """Gateway against the minimal proxy for the same call: throughput, and CPU per request (the server's own
    cost, which a machine shared with the emulator and the load generator disturbs less)."""
    proxy = {s.call: s for s in scenarios if s.server == "proxy"}
    print("\ngateway / minimal proxy, same call (throughput: median of the rounds' ratios)")
    print(f"  {'':<52} {'throughput':>10}   proxy CPU / gateway CPU per request")
    for s in scenarios:
        floor = proxy.get(s.call)
        if floor is None or not s.server.startswith("gateway:") or s.call == "v2":
            continue
        throughput = paired_ratio(s, floor)
        cpu = floor.result["cpu_us_per_request"]["server"] / s.result["cpu_us_per_request"]["server"]
        print(f"  {s.name:<52} {throughput:>10.2f}   {cpu:>5.2f}")


def verdicts(scenarios: list[Scenario], stores: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(what, measured, target, met) for every target the issue sets."""
    checks = []
    proxy = {s.call: s for s in scenarios if s.server == "proxy"}
    for s in scenarios:
        if s.server.startswith("gateway:") and s.store_hit and s.auth == "bearer" and s.call in proxy:
            ratio = paired_ratio(s, proxy[s.call])
            checks.append((f"throughput {s.name} / minimal proxy", ratio, THROUGHPUT_TARGET, ratio >= THROUGHPUT_TARGET))
    for backend in dict.fromkeys(r["backend"] for r in stores):
        rows = sorted((r for r in stores if r["backend"] == backend), key=lambda r: r["messages"])
        if len(rows) >= 2:
            ratio = rows[-1]["ratio_to_smallest"]  # measured in pairs with the smallest size (bench.store_cost)
            what = f"lookup p50 {backend}: {rows[-1]['messages']} / {rows[0]['messages']} messages"
            checks.append((what, ratio, LOOKUP_TARGET, ratio <= LOOKUP_TARGET))
    return checks


def machine() -> dict[str, Any]:
    import aiohttp

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Gateway and store benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument("--requests", type=int, help="measured destroys per scenario and round (default 10000; quick 300)")
    parser.add_argument("--warmup", type=int, help="destroys before measuring, per scenario and round (default 1000; quick 50)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every scenario, odd ones in reverse (default 4; quick 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--stores", default="sqlite,memory", help="the gateway's stores for the HTTP part, the first one is the main one")
    parser.add_argument("--no-oauth1", dest="oauth1", action="store_false", help="skip the OAuth 1.0a scenario")
    parser.add_argument("--sizes", help="store sizes (default 1000,100000,1000000; quick 1000,10000)")
    parser.add_argument("--store-backends", default="memory,sqlite,redis", help="backends for the store part")
    parser.add_argument("--lookups", type=int, help="lookups per store size (default 5000; quick 500)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write every result to this JSON file")
    args = parser.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 10_000)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.warmup = args.warmup if args.warmup is not None else (50 if args.quick else 1_000)
    args.sizes = args.sizes or ("1000,10000" if args.quick else "1000,100000,1000000")
    args.lookups = args.lookups or (500 if args.quick else 5_000)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.store_backends = [s.strip() for s in args.store_backends.split(",") if s.strip()]

    info = machine()
    print(
        f"{info['date']}  {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB, Python {info['python']},"
        f" aiohttp {info['aiohttp']}, load average {' '.join(f'{x:.2f}' for x in info['load_average'])}"
    )
    print(
        f"{args.rounds} round(s) of {args.requests} measured destroys per scenario, each after {args.warmup} of warm-up,"
        f" {args.concurrency} in flight;"
        " emulator, server and load generator each in their own process, sharing these CPUs."
    )
    scenarios: list[Scenario] = []
    stores: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dmgw-bench-") as scratch:
        if not args.skip_http:
            print("\n" + HTTP_HEADER)
            scenarios = http_bench(args, Path(scratch))
            print(f"\nmedians over {args.rounds} round(s); CPU per request over all of them")
            print(HTTP_HEADER)
            for scenario in scenarios:
                print_scenario(scenario.name, scenario.result)
            print_ratios(scenarios)
        if not args.skip_store:
            print("\nstore cost (the store's own get_message, one at a time, random known ids)")
            stores = store_bench(args)
    checks = verdicts(scenarios, stores)
    print("\ntargets")
    for what, measured, target, met in checks:
        relation = ">=" if "throughput" in what else "<="
        print(f"  {'MET    ' if met else 'NOT MET'} {what}: {measured:.2f} (target {relation} {target})")
    info["load_average_after"] = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in info['load_average_after'])}")
    if args.json:
        report = {
            "machine": info,
            "settings": {
                k: getattr(args, k) for k in ("rounds", "requests", "warmup", "concurrency", "stores", "sizes", "lookups")
            },
            "http": [{"name": s.name, "server": s.server, "call": s.call, "auth": s.auth, **s.result} for s in scenarios],
            "store": stores,
            "targets": [{"what": w, "measured": m, "target": t, "met": ok} for w, m, t, ok in checks],
        }
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    failed = [s.name for s in scenarios if s.result.get("errors")]
    if failed:
        sys.exit(f"requests failed in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
