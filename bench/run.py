"""The benchmark, in one command: ``python -m bench`` (``--quick`` for a smoke run). See bench/README.md.

Processes: the emulators, the servers under test (the gateway, ``dm-gateway serve --workers N``, the proxies)
and the load generator each run in processes of their own; this one only starts them, reads CPU counters
and prints.

Scenarios (``plan``): the emulator alone, and the gateway on each path a legacy client takes (``PATHS``),
each compared with a bare proxy that makes the same v2 calls for it (``same_calls``, ``bench/proxy.py``) and,
for a destroy in one process, with the minimal proxy too (one ``DELETE`` whatever the path). Proxy scenarios
never run on their own: each runs next to every gateway scenario it is compared with.

Rounds: in each round every gateway scenario runs once, in ``plan`` order, as a group of adjacent runs: its
same-calls proxy, the gateway, its minimal proxy. Odd rounds (``round_index`` 1, 3, ...) run the even
rounds' list backwards, so each proxy runs first in one round and after the gateway in the next. The
throughput ratio of a round is the gateway run's req/s over the req/s of the proxy run right next to it;
the ratio reported and checked is the median of those over the rounds. Why: the speed of a shared VM can
change by a factor of two within a minute, so two runs taken back to back share the machine's state where
runs half a minute apart do not; and with the order swapped every other round, a machine that speeds up or
slows down during a pair favours neither side.

Ids: every destroy deletes a message that exists in the emulator and was not deleted before. Each run of a
destroy gets a range of ids of its own (``assign_ids``), and a gateway's store is filled beforehand with the
ranges of its store-hit runs. Lists and sends each go to an emulator of their own (see bench/fixtures.py): a
send run leaves its messages in its emulator for a second or two, and a list run right after it would pay for
reading past them there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from bench import fixtures

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOOKUP_TARGET = 1.5  # store lookup p50 at the largest size / at the smallest
MEMORY_TARGET = 1024  # bytes per cached message, memory and SQLite stores, at the largest size
REDIS_URL = os.environ.get("DMGW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

#: The paths ``--only`` selects: store-hit destroys (each store), the v2 pass-through, store-miss destroys
#: (each store), OAuth 1.0a-signed destroys (store hit and miss), inbox lists, sends, ``serve --workers 2``
#: (SQLite and Redis), and one process against two on one Redis.
PATHS = ("hit", "passthrough", "miss", "oauth1", "lists", "sends", "workers", "replicas")
# Each path's share of --requests and --warmup per run: fewer of the slower calls keep a full run short.
WEIGHTS = {"hit": 1.0, "passthrough": 1.0, "miss": 0.5, "oauth1": 0.5, "lists": 0.1, "sends": 0.2}
WEIGHTS |= {"workers": 0.5, "replicas": 0.5, "emulator": 1.0}
# The throughput targets of the issue, as a fraction of the same-calls proxy's req/s.
TARGETS = {"hit": 0.9, "miss": 0.85, "oauth1": 0.8, "lists": 0.8, "sends": 0.8, "workers": 0.8}
CALL_NAMES = {
    "v1.1": "v1.1 destroy.json",
    "statusnet": "StatusNet destroy/ID.xml",
    "v2": "DELETE /2/dm_events/:id",
    "v1.1-list": "v1.1 direct_messages.json?count=50",
    "statusnet-list": "StatusNet direct_messages.xml",
    "v1.1-send": "v1.1 direct_messages/new.json",
    "statusnet-send": "StatusNet direct_messages/new.xml",
}
DESTROYS = ("v1.1", "statusnet", "v2")
#: The servers that authenticate nobody: the minimal proxy and the same-calls proxy.
PROXY_KINDS = ("proxy", "same-calls")


@dataclass(frozen=True)
class Server:
    """What a server process is, and its key: ``KIND[:OPTION][@lists|@sends][ xN]``.

    ``kind``: emulator, proxy (the minimal one), same-calls, gateway (in process, bench.servers) or serve
    (``dm-gateway serve``); ``option``: the store of a gateway or serve; for a same-calls proxy, ``miss`` (it
    asks v2 for the message before a destroy), ``oauth1`` (it signs its v2 calls with OAuth 1.0a, as the
    gateway does for an OAuth 1.0a caller) or both, joined by ``+``; ``upstream``: ``main`` (the emulator of
    the destroys), ``lists`` (the one of the lists) or ``sends`` (the one of the sends: apart from the lists',
    which would otherwise hold a send run's messages for the list run that follows it);
    ``processes``: the workers of serve, the processes of a same-calls proxy."""

    kind: str
    option: str = ""
    upstream: str = "main"
    processes: int = 1

    @property
    def key(self) -> str:
        key = self.kind + (f":{self.option}" if self.option else "")
        key += f"@{self.upstream}" if self.upstream != "main" else ""
        return key + (f" x{self.processes}" if self.kind == "serve" or self.processes > 1 else "")

    @classmethod
    def parse(cls, key: str) -> Server:
        head, _, processes = key.partition(" x")
        head, _, upstream = head.partition("@")
        kind, _, option = head.partition(":")
        return cls(kind, option, upstream or "main", int(processes or 1))

    @property
    def is_proxy(self) -> bool:
        return self.kind in PROXY_KINDS


@dataclass
class Scenario:
    name: str
    server: str  # a Server key
    call: str  # see bench.load.CALLS
    auth: str = "bearer"
    store_hit: bool = True  # a destroy of a message the gateway's store holds beforehand
    path: str = "emulator"  # see PATHS
    target: float | None = None  # the least throughput over the same-calls proxy's
    same_calls: Scenario | None = None  # the bare proxy making the same v2 calls
    minimal: Scenario | None = None  # the minimal proxy, for a destroy by the gateway of bench.servers
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def is_proxy(self) -> bool:
        return Server.parse(self.server).is_proxy

    @property
    def proxies(self) -> list[Scenario]:
        return [p for p in (self.same_calls, self.minimal) if p is not None]


def plan(stores: list[str], paths: tuple[str, ...] = PATHS) -> list[Scenario]:
    """The scenarios of ``paths``: the emulator alone first, then the proxies, then the gateway's, in the
    order they run. The store-hit, store-miss and lists and sends scenarios run on ``stores`` (the first
    store for lists, sends, the pass-through and OAuth 1.0a)."""
    proxies: dict[tuple[str, str], Scenario] = {}
    gateways: list[Scenario] = []

    def proxy(server: Server, call: str) -> Scenario:
        if (server.key, call) not in proxies:
            options = server.option.split("+")
            label = "minimal proxy" if server.kind == "proxy" else "same-calls proxy"
            label += ", GET first" if "miss" in options else ""
            label += ", OAuth 1.0a upstream" if "oauth1" in options else ""
            label += f", {server.processes} processes" if server.processes > 1 else ""
            proxies[server.key, call] = Scenario(f"{label}: {CALL_NAMES[call]}", server.key, call, path="proxy")
        return proxies[server.key, call]

    def gateway(label: str, server: Server, call: str, path: str, *, auth: str = "bearer", hit: bool = True) -> None:
        """A gateway scenario (``hit``: a destroy of a message its store holds; a miss asks v2 first)."""
        name = f"{label}: {CALL_NAMES[call]}"
        if any(s.name == name for s in gateways):
            return  # replicas and workers share the two-worker Redis scenario
        options = ["miss"] if call in DESTROYS and not hit else []
        options += ["oauth1"] if auth == "oauth1" else []
        same = proxy(Server("same-calls", "+".join(options), server.upstream, server.processes), call)
        scenario = Scenario(name, server.key, call, auth, hit, path, TARGETS.get(path), same)
        if call in DESTROYS and server.kind == "gateway":
            scenario.minimal = proxy(Server("proxy"), call)
        gateways.append(scenario)

    first = stores[0]
    if "hit" in paths:
        for store in stores:
            for call in ("v1.1", "statusnet"):
                gateway(f"gateway [{store}]", Server("gateway", store), call, "hit")
    if "passthrough" in paths:
        name = f"gateway [{first}]: v2 pass-through {CALL_NAMES['v2']}"
        gateways.append(Scenario(name, Server("gateway", first).key, "v2", store_hit=False, path="passthrough"))
    if "miss" in paths:
        for store in stores:
            gateway(f"gateway [{store}], store miss", Server("gateway", store), "v1.1", "miss", hit=False)
    if "oauth1" in paths:
        for miss in (False, True):
            label = f"gateway [{first}], OAuth 1.0a" + (", store miss" if miss else "")
            gateway(label, Server("gateway", first), "v1.1", "oauth1", auth="oauth1", hit=not miss)
    for path, calls in (("lists", ("v1.1-list", "statusnet-list")), ("sends", ("v1.1-send", "statusnet-send"))):
        if path in paths:
            for call in calls:
                gateway(f"gateway [{first}]", Server("gateway", first, path), call, path, hit=False)
    workers = [("sqlite", 2, "workers"), ("redis", 2, "workers")] if "workers" in paths else []
    workers += [("redis", 1, "replicas"), ("redis", 2, "replicas")] if "replicas" in paths else []
    for store, count, path in workers:
        server = Server("serve", store, processes=count)
        gateway(f"serve --workers {count} [{store}], store miss", server, "v1.1", path, hit=False)
    emulator = Scenario(f"emulator alone: {CALL_NAMES['v2']}", "emulator", "v2")
    return [emulator, *proxies.values(), *gateways]


@dataclass
class Run:
    """One load-generator run: a scenario, how many requests (warm-up, then measured), the ids it uses (a
    destroy's, each once; set by ``assign_ids``), and, for the runs of a gateway scenario's group, that
    scenario's name."""

    scenario: Scenario
    warmup: int
    count: int
    pair: str | None = None
    ids: range = range(0)


def run_sizes(path: str, warmup: int, requests: int) -> tuple[int, int]:
    """Warm-up and measured requests of one run of a scenario on ``path``: its share of the settings."""
    weight = WEIGHTS[path]
    return max(1, round(warmup * weight)) if warmup else 0, max(1, round(requests * weight))


def schedule(scenarios: list[Scenario], round_index: int, warmup: int, requests: int) -> list[Run]:
    """The runs of round ``round_index`` in the order they run (ids not yet assigned).

    Every scenario that is no proxy runs once, in ``plan`` order; each gateway scenario as a group: its
    same-calls proxy, the gateway, its minimal proxy, all of the same size, so the gateway run is next to
    each of them. An odd round is the even round's list reversed."""
    runs: list[Run] = []
    for scenario in scenarios:
        if scenario.is_proxy:
            continue
        size = run_sizes(scenario.path, warmup, requests)
        if not scenario.proxies:
            runs.append(Run(scenario, *size))
            continue
        group = [scenario.same_calls, scenario, scenario.minimal]
        runs += [Run(member, *size, pair=scenario.name) for member in group if member is not None]
    return runs if round_index % 2 == 0 else runs[::-1]


def assign_ids(rounds: list[list[Run]]) -> int:
    """Give every destroy run consecutive ids of its own, and every other run ids from 0 (a send numbers its
    texts with them); returns how many destroy ids there are in all (the emulator's ``--events``)."""
    start = 0
    for runs in rounds:
        for run in runs:
            size = run.warmup + run.count
            if run.scenario.call in DESTROYS:
                run.ids, start = range(start, start + size), start + size
            else:
                run.ids = range(size)
    return start


def adjacent_pairs(runs: list[Run]) -> dict[tuple[str, str], tuple[int, int]]:
    """For each gateway run among a round's ``runs`` and each proxy it is compared with: the index of the
    gateway run and of that proxy's run right next to it, by (gateway scenario's name, proxy scenario's)."""
    pairs: dict[tuple[str, str], tuple[int, int]] = {}
    for i, run in enumerate(runs):
        if run.pair is None or run.scenario.is_proxy:
            continue
        for proxy in run.scenario.proxies:
            beside = (j for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j].pair == run.pair)
            j = next((j for j in beside if runs[j].scenario is proxy), None)
            if j is None:
                raise ValueError(f"no run of {proxy.name} next to {run.pair}")
            pairs[run.pair, proxy.name] = (i, j)
    return pairs


def adjacent_ratios(runs: list[Run], rps: list[float]) -> dict[tuple[str, str], float]:
    """With ``rps[i]`` the req/s of ``runs[i]``: each gateway run's req/s over that of each proxy run next to
    it (``adjacent_pairs``)."""
    return {pair: rps[i] / rps[j] for pair, (i, j) in adjacent_pairs(runs).items()}


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the process ``pid`` and of every process under it (the workers of serve, the other
    processes of a proxy)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    tree, added = {pid}, True
    while added:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        added = bool(more)
    total = 0.0
    for member in tree:
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Process:
    """A child ``python -m ...`` that prints ``READY <url>`` once it serves; ``ready()`` waits for that line,
    so several can start side by side."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, *, cwd: Path | None = None, wrapper: tuple[str, ...] = ()
    ) -> None:
        """``cwd``: the directory whose ``bench`` and ``gateway`` the module runs from (another checkout);
        ``wrapper``: a command that runs the Python process (valgrind, for ``bench.instructions``)."""
        self.name = name
        self.log_path = log_dir / f"{re.sub(r'[^A-Za-z0-9.-]+', '-', name)}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        command = [*wrapper, sys.executable, "-m", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, cwd=cwd)
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
    """Drive one scenario from a load-generator process; CPU of the ``watched`` pids (each with the processes
    under it) over the measured part."""
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
    before = {name: tree_cpu_seconds(pid) for name, pid in watched.items()}
    load.stdin.write(b"go\n")
    load.stdin.flush()
    result_line = load.stdout.readline()
    after = {name: tree_cpu_seconds(pid) for name, pid in watched.items()}
    if load.wait() != 0 or not result_line:
        raise RuntimeError(f"load generator failed in {scenario.name}")
    result: dict[str, Any] = orjson.loads(result_line)
    result["cpu_us_per_request"] = {name: (after[name] - before[name]) / result["requests"] * 1e6 for name in watched}
    return result


def store_url(store: str, directory: Path, redis_url: str = REDIS_URL) -> str:
    if store == "memory":
        return "memory"
    if store == "sqlite":
        return f"sqlite:///{directory}/gateway.sqlite3"
    if store == "redis":
        return redis_url
    raise ValueError(f"unknown store {store!r}")


def start_servers(scenarios: list[Scenario], rounds: list[list[Run]], events: int, log_dir: Path) -> dict[str, Process]:
    """Every server the scenarios name, by key, each ready: the emulators (and the redis-server of serve on
    Redis, whose keys cannot be given a prefix of their own) first, then the rest side by side."""
    keys = list(dict.fromkeys(s.server for s in scenarios))
    servers = {"emulator": Process("emulator", ["bench.servers", "emulator", "--events", str(events)], log_dir)}
    for upstream in ("lists", "sends"):
        if any(Server.parse(key).upstream == upstream for key in keys):
            command = ["bench.servers", "emulator", "--events", "0", "--list-messages", str(fixtures.LIST_MESSAGES)]
            servers[f"emulator@{upstream}"] = Process(f"emulator@{upstream}", command, log_dir)
    if any(Server.parse(key).kind == "serve" and Server.parse(key).option == "redis" for key in keys):
        servers["redis"] = Process("redis", ["bench.servers", "redis"], log_dir)
    try:
        for process in servers.values():
            process.ready()
        first = len(servers)
        for key in keys:
            if key not in servers:
                servers[key] = Process(key, server_command(key, servers, scenarios, rounds, log_dir), log_dir)
        for process in list(servers.values())[first:]:
            process.ready()
    except BaseException:
        for process in servers.values():
            process.stop()
        raise
    return servers


def emulator_key(upstream: str) -> str:
    """The key of the emulator that serves ``upstream`` (see ``Server``)."""
    return "emulator" if upstream == "main" else f"emulator@{upstream}"


def server_command(
    key: str, started: dict[str, Process], scenarios: list[Scenario], rounds: list[list[Run]], log_dir: Path
) -> list[str]:
    """The ``python -m`` arguments of the server ``key``, on the emulator (and redis-server) ``started``. A
    gateway's store holds the messages of its store-hit runs."""
    server = Server.parse(key)
    upstream = started[emulator_key(server.upstream)].url
    if server.kind == "proxy":
        return ["bench.servers", "proxy", "--upstream", upstream]
    if server.kind == "same-calls":
        options = server.option.split("+")
        return same_calls_command(
            upstream, store_miss="miss" in options, oauth1="oauth1" in options, processes=server.processes
        )
    directory = log_dir / re.sub(r"[^A-Za-z0-9.-]+", "-", key)
    directory.mkdir()
    store = store_url(server.option, directory, started["redis"].url if "redis" in started else REDIS_URL)
    if server.kind == "serve":
        return ["bench.servers", "serve", "--upstream", upstream, "--store", store, "--workers", str(server.processes)]
    command = ["bench.servers", "gateway", "--upstream", upstream, "--store", store]
    for run in (run for runs in rounds for run in runs):
        if run.scenario.server == key and run.scenario.store_hit and run.scenario.call in DESTROYS:
            command += ["--prefill", f"{run.ids.start}:{len(run.ids)}"]
    if any(s.auth == "oauth1" for s in scenarios if s.server == key):
        command.append("--oauth1")
    return command


def same_calls_command(upstream: str, *, store_miss: bool, oauth1: bool, processes: int = 1) -> list[str]:
    """The ``python -m`` arguments of a same-calls proxy: the GET before a destroy with ``store_miss``, its
    v2 calls signed with OAuth 1.0a with ``oauth1``, served by ``processes`` processes."""
    command = ["bench.servers", "same-calls", "--upstream", upstream, "--processes", str(processes)]
    return command + (["--store-miss"] if store_miss else []) + (["--oauth1"] if oauth1 else [])


def http_bench(args: argparse.Namespace, log_dir: Path) -> tuple[list[Scenario], list[float]]:
    """``args.rounds`` rounds of the runs ``schedule`` lists, all servers up throughout, so a disturbance of the
    shared machine spreads over every scenario instead of falling on one. Each gateway scenario compared with
    proxies gets, for its same-calls proxy, ``ratio_rounds`` (its req/s over the adjacent proxy run's in each
    round), ``ratio`` (their median), ``p99_added_ms_rounds`` and ``p99_added_ms`` (its p99 latency less that
    proxy run's, and their median); for its minimal proxy, ``minimal_ratio_rounds`` and ``minimal_ratio``.
    Also returns the replicas figure of each round: serve with two workers on Redis over serve with one."""
    scenarios = plan(args.stores, args.paths)
    rounds = [schedule(scenarios, i, args.warmup, args.requests) for i in range(args.rounds)]
    events = assign_ids(rounds)
    servers = start_servers(scenarios, rounds, events, log_dir)
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
    ratios: dict[tuple[str, str], list[float]] = {}
    p99_added: dict[tuple[str, str], list[float]] = {}
    replicas: list[float] = []
    try:
        for round_index, runs in enumerate(rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            done: list[dict[str, Any]] = []
            for run in runs:
                upstream = Server.parse(run.scenario.server).upstream
                emulator = servers[emulator_key(upstream)]
                target = servers[run.scenario.server]
                watched = {"emulator": emulator.pid} | ({"server": target.pid} if target is not emulator else {})
                result = run_load(
                    run.scenario, target.url, run.ids.start, run.warmup, run.count, args.concurrency, watched
                )
                results[run.scenario.name].append(result)
                done.append(result)
                print_scenario(run.scenario.name, result, indent="  ")
                i = len(done) - 1
                if i > 0 and run.pair is not None and runs[i - 1].pair == run.pair:  # a pair of runs just ended
                    at, proxy_at = (i, i - 1) if run.pair == run.scenario.name else (i - 1, i)
                    what = f"gateway / {runs[proxy_at].scenario.name.split(':')[0]}, the two runs above"
                    print(f"    {what:<60} {done[at]['rps'] / done[proxy_at]['rps']:>8.2f}", flush=True)
            for (gateway, proxy), (i, j) in adjacent_pairs(runs).items():
                ratios.setdefault((gateway, proxy), []).append(done[i]["rps"] / done[j]["rps"])
                p99_added.setdefault((gateway, proxy), []).append(done[i]["p99_ms"] - done[j]["p99_ms"])
            served = {
                run.scenario.server: done[i]["rps"] for i, run in enumerate(runs) if run.pair == run.scenario.name
            }
            if "serve:redis x1" in served and "serve:redis x2" in served:
                replicas.append(served["serve:redis x2"] / served["serve:redis x1"])
    finally:
        for process in reversed(servers.values()):
            process.stop()
    for scenario in scenarios:
        scenario.result = combine(results[scenario.name], args.rounds)
        for prefix, partner in (("", scenario.same_calls), ("minimal_", scenario.minimal)):
            if partner is not None:
                pair = (scenario.name, partner.name)
                scenario.result[f"{prefix}paired_with"] = partner.name
                scenario.result[f"{prefix}ratio_rounds"] = ratios[pair]
                scenario.result[f"{prefix}ratio"] = statistics.median(ratios[pair])
        if scenario.same_calls is not None:
            added = p99_added[scenario.name, scenario.same_calls.name]
            scenario.result |= {"p99_added_ms_rounds": added, "p99_added_ms": statistics.median(added)}
    return scenarios, replicas


def combine(results: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Medians over a scenario's runs (one a round; a proxy scenario's, one next to each gateway scenario it
    is compared with in every round), ``rps_rounds`` listing them in the order they ran; CPU per request over
    all of them; every error counted."""
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
        "p99_ms_rounds": [r["p99_ms"] for r in results],
        "errors": errors,
        "smallest_answer_bytes": min(r["smallest_answer_bytes"] for r in results),
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

WIDTH = 62
HTTP_HEADER = (
    f"{'scenario':<{WIDTH}} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req: server':>19} {'emulator':>9}"
    f" {'loadgen':>8}"
)


def print_scenario(name: str, r: dict[str, Any], indent: str = "") -> None:
    cpu = r["cpu_us_per_request"]
    server_cpu = f"{cpu['server']:.0f}" if "server" in cpu else "-"
    line = (
        f"{indent}{name:<{WIDTH - len(indent)}} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
        f" {server_cpu:>19} {cpu['emulator']:>9.0f} {cpu['load generator']:>8.0f}"
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


def print_ratios(scenarios: list[Scenario], replicas: list[float]) -> None:
    """Each gateway scenario against its proxies: throughput (median over rounds of the ratio to the adjacent
    proxy run), the p99 latency it adds over the same-calls proxy (median over rounds), and CPU per request
    (the server's own cost, which a machine shared with the emulator and the load generator disturbs less;
    the proxy's over all its runs)."""
    print("\ngateway / proxy: throughput, median over rounds of the ratio to the adjacent proxy run")
    print(
        f"  {'':<{WIDTH}} {'same calls':>10} {'minimal':>8} {'p99 added ms':>13}"
        "   CPU per request: same-calls proxy / gateway"
    )
    for s in scenarios:
        if s.same_calls is None:
            continue
        minimal = f"{s.result['minimal_ratio']:.2f}" if "minimal_ratio" in s.result else "-"
        server_cpu = s.result["cpu_us_per_request"]["server"]
        # A run too short for the clock's ticks can read no CPU at all: then there is no ratio to give.
        cpu = f"{s.same_calls.result['cpu_us_per_request']['server'] / server_cpu:.2f}" if server_cpu else "-"
        print(
            f"  {s.name:<{WIDTH}} {s.result['ratio']:>10.2f} {minimal:>8} {s.result['p99_added_ms']:>13.2f}   {cpu:>5}"
        )
    if replicas:
        print(
            f"  replicas on one Redis, serve --workers 2 / --workers 1 (store miss): {statistics.median(replicas):.2f}"
            f" (median of {', '.join(f'{r:.2f}' for r in replicas)})"
        )


class Check(NamedTuple):
    """One target this run measured. For a throughput, ``measured`` is the median over rounds and ``rounds``
    the lowest and highest round's ratio: on a shared machine, a target between the two is one the run cannot
    settle."""

    what: str
    measured: float
    target: float
    met: bool
    rounds: tuple[float, float] | None = None

    @property
    def at_least(self) -> bool:
        """Whether ``measured`` must reach ``target`` (a throughput, the one kind with rounds) rather than stay
        within it."""
        return self.rounds is not None

    def shown(self) -> str:
        """``measured`` as the verdict line prints it: two decimals, or as many more (up to six) as it takes to
        fall on the verdict's side of the target, so that 0.897 against 0.9 reads "0.897", never a "0.90"
        that did not meet it."""
        for digits in range(2, 7):
            text = f"{self.measured:.{digits}f}"
            if (float(text) >= self.target if self.at_least else float(text) <= self.target) == self.met:
                return text
        return repr(self.measured)


def verdicts(scenarios: list[Scenario], stores: list[dict[str, Any]]) -> list[Check]:
    """A ``Check`` for every target the issue sets that this run measured."""
    checks: list[Check] = []
    for s in scenarios:
        if s.target is not None:
            ratio, rounds = s.result["ratio"], s.result["ratio_rounds"]
            what = f"throughput {s.name} / same-calls proxy"
            checks.append(Check(what, ratio, s.target, ratio >= s.target, (min(rounds), max(rounds))))
    largest: dict[str, dict[str, Any]] = {}
    for backend in dict.fromkeys(r["backend"] for r in stores):
        rows = sorted((r for r in stores if r["backend"] == backend), key=lambda r: r["messages"])
        largest[backend] = rows[-1]
        if len(rows) >= 2:
            ratio = rows[-1]["ratio_to_smallest"]  # measured in pairs with the smallest size (bench.store_cost)
            what = f"lookup p50 {backend}: {rows[-1]['messages']} / {rows[0]['messages']} messages"
            checks.append(Check(what, ratio, LOOKUP_TARGET, ratio <= LOOKUP_TARGET))
    for backend, row in largest.items():
        if backend in ("memory", "sqlite"):
            for measure, value in row["bytes_per_message"].items():
                what = f"bytes per cached message {backend} ({measure}) at {row['messages']} messages"
                checks.append(Check(what, value, MEMORY_TARGET, value <= MEMORY_TARGET))
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
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute")
    parser.add_argument(
        "--requests", type=int,
        help="measured requests per run of a store-hit destroy (default 10000; quick 300); other paths a share",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, help="requests before measuring, per run, shared out alike (default 1000; quick 50)"
    )
    parser.add_argument(
        "--rounds", type=int,
        help="rounds of every scenario, each gateway one next to its proxies' runs, odd rounds in reverse"
        " (default 4; quick 1)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument(
        "--stores",
        default="sqlite,memory",
        help="the gateway's stores for the HTTP part, the first one is the main one",
    )
    parser.add_argument(
        "--only", metavar="PATH,...", default=",".join(PATHS), help=f"the paths to measure, of {', '.join(PATHS)}"
    )
    parser.add_argument("--no-oauth1", dest="oauth1", action="store_false", help="leave out the oauth1 path")
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
    args.paths = tuple(p.strip() for p in args.only.split(",") if p.strip() and (args.oauth1 or p.strip() != "oauth1"))
    if unknown := [p for p in args.paths if p not in PATHS]:
        parser.error(f"--only: unknown path {', '.join(unknown)} (known: {', '.join(PATHS)})")

    info = machine()
    print(
        f"{info['date']}  {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB, Python {info['python']},"
        f" aiohttp {info['aiohttp']}, load average {' '.join(f'{x:.2f}' for x in info['load_average'])}"
    )
    shares = ", ".join(f"{p} {run_sizes(p, args.warmup, args.requests)[1]}" for p in args.paths)
    print(
        f"{args.rounds} round(s) of {args.requests} measured requests per run ({shares}), each after a warm-up"
        f" of {args.warmup} (the same share), {args.concurrency} in flight; emulators, servers and load"
        " generator each in their own processes, sharing these CPUs."
    )
    scenarios: list[Scenario] = []
    replicas: list[float] = []
    stores: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dmgw-bench-") as scratch:
        if not args.skip_http:
            print("\n" + HTTP_HEADER)
            scenarios, replicas = http_bench(args, Path(scratch))
            print(
                f"\nmedians over {args.rounds} round(s) (a proxy row: over all its runs, one next to each gateway"
                " scenario it is compared with); CPU per request over all of them"
            )
            print(HTTP_HEADER)
            for scenario in scenarios:
                print_scenario(scenario.name, scenario.result)
            print_ratios(scenarios, replicas)
        if not args.skip_store:
            print("\nstore cost (the store's own get_message, one at a time, random known ids)")
            stores = store_bench(args)
    checks = verdicts(scenarios, stores)
    print("\ntargets")
    for check in checks:
        rounds = check.rounds
        relation = ">=" if check.at_least else "<="
        spread = f"; rounds {rounds[0]:.2f} to {rounds[1]:.2f}" if rounds is not None and args.rounds > 1 else ""
        verdict = "MET    " if check.met else "NOT MET"
        print(f"  {verdict} {check.what}: {check.shown()} (target {relation} {check.target}{spread})")
    info["load_average_after"] = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in info['load_average_after'])}")
    if args.json:
        report = {
            "machine": info,
            "settings": {
                k: getattr(args, k)
                for k in ("rounds", "requests", "warmup", "concurrency", "stores", "paths", "sizes", "lookups")
            },
            "http": [
                {"name": s.name, "server": s.server, "call": s.call, "auth": s.auth, "path": s.path, **s.result}
                for s in scenarios
            ],
            "replicas": {"ratio_rounds": replicas, "ratio": statistics.median(replicas)} if replicas else None,
            "store": stores,
            "targets": [
                {"what": w, "measured": m, "target": t, "met": ok} | ({"rounds": list(r)} if r is not None else {})
                for w, m, t, ok, r in checks
            ],
        }
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    failed = [s.name for s in scenarios if s.result.get("errors")]
    if failed:
        sys.exit(f"requests failed in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
