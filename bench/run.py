"""The benchmark, in one command: ``python -m bench`` (``--quick`` for a smoke run). See bench/README.md.

Processes: the emulator, the server under test (the gateway, or the minimal proxy) and the load generator
each run in a process of their own; this one only starts them, reads CPU counters and prints.

Rounds: in each round the emulator alone and every gateway scenario (the v2 pass-through among them) run
once, in ``plan`` order. Each gateway scenario that is compared with the minimal proxy (a legacy call the
proxy also takes: the store-hit ones, the store miss, OAuth 1.0a) has a run of the proxy for the same call
right next to it: the proxy first in even rounds (``round_index`` 0, 2, ...; printed as round 1, 3, ...),
the gateway first in odd rounds, which run the even rounds' list backwards. A proxy scenario therefore
runs once a round for each gateway scenario of its call, and never on its own. The throughput ratio of a
round is the gateway run's req/s over the req/s of the proxy run next to it; the ratio reported and
checked is the median of those over the rounds. Why: the speed of a
shared VM can change by a factor of two within a minute, so two runs taken back to back share the machine's
state where runs half a minute apart do not; and with the order swapped every other round, a machine that
speeds up or slows down during a pair favours neither side.

Ids: every destroy deletes a message that exists in the emulator and was not deleted before. Each run gets
a range of ids of its own (``assign_ids``, ``schedule``), and the gateway's store is filled beforehand with
the ranges of its store-hit scenarios.
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


def counterparts(scenarios: list[Scenario]) -> dict[str, Scenario]:
    """The proxy scenario each gateway scenario is divided by, by the gateway scenario's name: the minimal
    proxy's for the same legacy call. The v2 pass-through has none."""
    proxy = {s.call: s for s in scenarios if s.server == "proxy"}
    return {
        s.name: proxy[s.call]
        for s in scenarios
        if s.server.startswith("gateway:") and s.call != "v2" and s.call in proxy
    }


def runs_per_round(scenario: Scenario, scenarios: list[Scenario]) -> int:
    """1, or for a proxy scenario the number of gateway scenarios it runs next to."""
    if scenario.server != "proxy":
        return 1
    return sum(1 for proxy in counterparts(scenarios).values() if proxy is scenario)


def assign_ids(scenarios: list[Scenario], per_round: int, rounds: int) -> int:
    """Give every scenario consecutive ids of its own, ``per_round`` (warm-up plus measured destroys) for each
    of its runs in every round; returns how many ids there are in all (the emulator's ``--events``)."""
    start = 0
    for scenario in scenarios:
        size = runs_per_round(scenario, scenarios) * per_round * rounds
        scenario.ids = range(start, start + size)
        start += size
    return start


@dataclass
class Run:
    """One load-generator run: a scenario, the ids it destroys (warm-up first), and, for the two runs of a
    pair, the gateway scenario's name."""

    scenario: Scenario
    ids: range
    pair: str | None = None


def schedule(scenarios: list[Scenario], round_index: int, per_round: int) -> list[Run]:
    """The runs of round ``round_index`` in the order they run (``assign_ids`` first).

    Scenarios run in ``plan`` order; a proxy scenario does not run on its own but once in front of each
    gateway scenario of its call. An odd round is the even round's list reversed: the same pairs, the
    gateway first. The k-th run in a round of a scenario that runs n times a round destroys the ids
    ``ids.start + (round_index * n + k) * per_round`` onwards, so no two runs share an id."""
    partners = counterparts(scenarios)
    taken: dict[str, int] = {}  # proxy scenario -> its runs scheduled so far this round

    def run_of(scenario: Scenario, pair: str | None) -> Run:
        slot = taken.get(scenario.name, 0)
        taken[scenario.name] = slot + 1
        first = scenario.ids.start + (round_index * runs_per_round(scenario, scenarios) + slot) * per_round
        return Run(scenario, range(first, first + per_round), pair)

    runs: list[Run] = []
    for scenario in scenarios:
        if scenario.server == "proxy":
            continue
        proxy = partners.get(scenario.name)
        if proxy is not None:
            runs.append(run_of(proxy, scenario.name))
        runs.append(run_of(scenario, scenario.name if proxy is not None else None))
    return runs if round_index % 2 == 0 else runs[::-1]


def adjacent_ratios(runs: list[Run], rps: list[float]) -> dict[str, float]:
    """For each pair among a round's ``runs`` (with ``rps[i]`` the req/s of ``runs[i]``): the gateway run's req/s
    over the req/s of the proxy run right next to it."""
    ratios: dict[str, float] = {}
    for i, run in enumerate(runs):
        if run.pair is None or run.scenario.server == "proxy":
            continue
        j = i - 1 if i > 0 and runs[i - 1].pair == run.pair else i + 1
        if j >= len(runs) or runs[j].pair != run.pair or runs[j].scenario.server != "proxy":
            raise ValueError(f"no proxy run next to {run.pair}")
        ratios[run.pair] = rps[i] / rps[j]
    return ratios


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Process:
    """A child ``python -m ...`` that prints ``READY <url>`` once it serves; ``ready()`` waits for that line,
    so several can start side by side."""

    def __init__(self, name: str, args: list[str], log_dir: Path, *, cwd: Path | None = None) -> None:
        """``cwd``: the directory whose ``bench`` and ``gateway`` the module runs from (another checkout)."""
        self.name = name
        self.log_path = log_dir / f"{name.replace(':', '-')}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=self._log, cwd=cwd)
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
    result["cpu_us_per_request"] = {name: (after[name] - before[name]) / result["requests"] * 1e6 for name in watched}
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
    """``args.rounds`` rounds of the runs ``schedule`` lists, all servers up throughout, so a disturbance of the
    shared machine spreads over every scenario instead of falling on one. Each gateway scenario with a proxy
    counterpart gets ``ratio_rounds``, its req/s over the adjacent proxy run's in each round, and ``ratio``,
    their median."""
    scenarios = plan(args.stores, args.oauth1)
    partners = counterparts(scenarios)
    per_round = args.warmup + args.requests
    events = assign_ids(scenarios, per_round, args.rounds)
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
        results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
        ratios: dict[str, list[float]] = {name: [] for name in partners}
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            runs = schedule(scenarios, round_index, per_round)
            rps: list[float] = []
            for i, run in enumerate(runs):
                target = servers.get(run.scenario.server, emulator)
                watched = {"emulator": emulator.pid}
                if target is not emulator:
                    watched["server"] = target.pid
                result = run_load(
                    run.scenario, target.url, run.ids.start, args.warmup, args.requests, args.concurrency, watched
                )
                results[run.scenario.name].append(result)
                rps.append(result["rps"])
                print_scenario(run.scenario.name, result, indent="  ")
                if run.pair is not None and i > 0 and runs[i - 1].pair == run.pair:
                    ratio = adjacent_ratios(runs[i - 1 : i + 1], rps[i - 1 : i + 1])[run.pair]
                    print(f"    {'gateway / minimal proxy, the two runs above':<48} {ratio:>8.2f}", flush=True)
            for name, ratio in adjacent_ratios(runs, rps).items():
                ratios[name].append(ratio)
        for scenario in scenarios:
            scenario.result = combine(results[scenario.name], args.rounds)
            if scenario.name in partners:
                scenario.result["paired_with"] = partners[scenario.name].name
                scenario.result["ratio_rounds"] = ratios[scenario.name]
                scenario.result["ratio"] = statistics.median(ratios[scenario.name])
    finally:
        for process in servers.values():
            process.stop()
        emulator.stop()
    return scenarios


def combine(results: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Medians over a scenario's runs (one a round; a proxy scenario's, one next to each gateway scenario of
    its call in every round), ``rps_rounds`` listing them in the order they ran; CPU per request over all of
    them; every error counted."""
    requests = sum(r["requests"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for status, n in r["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {
        "rounds": rounds,
        "runs": len(results),
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


def paired_ratio(gateway: Scenario) -> float:
    """The median over rounds of the gateway run's req/s over the req/s of the proxy run taken right next to it
    (``ratio_rounds``): two runs back to back share the machine's state, and its drift between pairs cancels
    out."""
    return statistics.median(gateway.result["ratio_rounds"])


def print_ratios(scenarios: list[Scenario]) -> None:
    """Gateway against the minimal proxy for the same call: throughput, and CPU per request (the server's own
    cost, which a machine shared with the emulator and the load generator disturbs less; the proxy's over all
    its runs)."""
    partners = counterparts(scenarios)
    print(
        "\ngateway / minimal proxy, same call (throughput: median over rounds of the ratio to the adjacent proxy run)"
    )
    print(f"  {'':<52} {'throughput':>10}   proxy CPU / gateway CPU per request")
    for s in scenarios:
        floor = partners.get(s.name)
        if floor is None:
            continue
        throughput = paired_ratio(s)
        cpu = floor.result["cpu_us_per_request"]["server"] / s.result["cpu_us_per_request"]["server"]
        print(f"  {s.name:<52} {throughput:>10.2f}   {cpu:>5.2f}")


def verdicts(scenarios: list[Scenario], stores: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(what, measured, target, met) for every target the issue sets."""
    checks = []
    partners = counterparts(scenarios)
    for s in scenarios:
        if s.name in partners and s.store_hit and s.auth == "bearer":
            ratio = paired_ratio(s)
            checks.append(
                (f"throughput {s.name} / minimal proxy", ratio, THROUGHPUT_TARGET, ratio >= THROUGHPUT_TARGET)
            )
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
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
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
    parser.add_argument(
        "--requests", type=int, help="measured destroys per run of a scenario (default 10000; quick 300)"
    )
    parser.add_argument(
        "--warmup", type=int, help="destroys before measuring, per run of a scenario (default 1000; quick 50)"
    )
    parser.add_argument(
        "--rounds", type=int,
        help="rounds of every scenario, each gateway one next to a proxy run, odd rounds in reverse (default 4; quick 1)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument(
        "--stores",
        default="sqlite,memory",
        help="the gateway's stores for the HTTP part, the first one is the main one",
    )
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
        f"{args.rounds} round(s) of {args.requests} measured destroys per run, each after {args.warmup} of warm-up,"
        f" {args.concurrency} in flight;"
        " emulator, server and load generator each in their own process, sharing these CPUs."
    )
    scenarios: list[Scenario] = []
    stores: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dmgw-bench-") as scratch:
        if not args.skip_http:
            print("\n" + HTTP_HEADER)
            scenarios = http_bench(args, Path(scratch))
            print(
                f"\nmedians over {args.rounds} round(s) (a proxy row: over all its runs, one next to each gateway"
                " scenario of its call); CPU per request over all of them"
            )
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
                k: getattr(args, k)
                for k in ("rounds", "requests", "warmup", "concurrency", "stores", "sizes", "lookups")
            },
            "http": [
                {"name": s.name, "server": s.server, "call": s.call, "auth": s.auth, **s.result} for s in scenarios
            ],
            "store": stores,
            "targets": [{"what": w, "measured": m, "target": t, "met": ok} for w, m, t, ok in checks],
        }
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    failed = [s.name for s in scenarios if s.result.get("errors")]
    if failed:
        sys.exit(f"requests failed in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
