"""The benchmark still measures what it says: a tiny pass of ``python -m bench`` over every path, end to end
(its numbers are not checked here: speed targets belong to the benchmark itself, only that every scenario
ran, every request succeeded and the report has its ratios); the same-calls proxy makes the very v2 calls
the gateway makes on each path; and, without servers, that every gateway run is measured against proxy runs
right next to it, and every destroy has an id of its own."""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bench import fixtures
from bench.compare import Side, server_command
from bench.load import OAUTH1_SIGNER, Signer, request_for
from bench.proxy import create_same_calls_app
from bench.run import (
    PATHS,
    Check,
    Server,
    adjacent_pairs,
    adjacent_ratios,
    assign_ids,
    emulator_key,
    plan,
    schedule,
    verdicts,
)
from bench.run import server_command as run_server_command
from bench.servers import emulator_state, gateway_config, prepared_store
from gateway.app import create_app
from gateway.emulator import EmulatorServer
from gateway.upstream.client import USER_FIELDS

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_every_path_in_a_tiny_pass(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "bench", "--quick", "--requests", "20", "--warmup", "4", "--concurrency", "4",
        "--stores", "memory", "--store-backends", "memory,sqlite", "--sizes", "100,1000", "--lookups", "50",
        "--json", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(report_path.read_bytes())

    http = {row["name"]: row for row in report["http"]}
    assert {row["path"] for row in http.values()} == {*PATHS, "emulator", "proxy"}
    for row in http.values():
        # Every request measured, each answered 200 with a body; a proxy row ran once per gateway it serves.
        assert row["errors"] == {} and row["smallest_answer_bytes"] > 0, row
        assert row["runs"] == len(row["rps_rounds"]) >= 1 and row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    lists = [row for row in http.values() if row["call"].endswith("-list") and row["path"] == "lists"]
    assert len(lists) == 2 and all(row["smallest_answer_bytes"] > 20 * 200 for row in lists)  # 20 or 50 messages

    compared = [row for row in http.values() if "paired_with" in row]
    assert {row["path"] for row in compared} == set(PATHS) - {"passthrough"}
    for row in compared:
        proxy = http[row["paired_with"]]
        assert proxy["path"] == "proxy" and proxy["call"] == row["call"] and proxy["server"].startswith("same-calls")
        assert ("x2" in proxy["server"]) == ("x2" in row["server"])
        assert ("miss" in proxy["server"]) == ("store miss" in row["name"] and row["call"] == "v1.1")
        # The ratio is this gateway run over one of its proxy's runs, not the other way up.
        [ratio] = row["ratio_rounds"]
        assert row["ratio"] == ratio and any(math.isclose(row["rps"] / ratio, p) for p in proxy["rps_rounds"])
        [added] = row["p99_added_ms_rounds"]
        assert any(math.isclose(row["p99_ms"] - added, p, abs_tol=1e-6) for p in proxy["p99_ms_rounds"])
        if row["server"].startswith("gateway:") and row["call"] in ("v1.1", "statusnet"):
            assert http[row["minimal_paired_with"]]["server"] == "proxy" and row["minimal_ratio"] > 0
    assert report["replicas"]["ratio"] > 0

    targets = {t["what"]: t for t in report["targets"]}
    for row in compared:
        if row["path"] != "replicas":
            target = targets[f"throughput {row['name']} / same-calls proxy"]
            assert target["measured"] == row["ratio"] and target["rounds"] == [row["ratio"], row["ratio"]]
    assert sum(t.startswith("lookup p50") for t in targets) == 2
    assert {t.split(" (")[0] for t in targets if t.startswith("bytes per cached message")} == {
        "bytes per cached message memory",
        "bytes per cached message sqlite",
    }
    assert "MET" in run.stdout and "p99 added ms" in run.stdout


async def test_the_same_calls_proxy_makes_the_v2_calls_the_gateway_makes(aiohttp_client: Any) -> None:
    state = emulator_state(40, fixtures.LIST_MESSAGES)
    async with EmulatorServer(state) as emulator:
        store, _ = await prepared_store("memory", [range(20)], oauth1=True)
        gateway = await aiohttp_client(create_app(gateway_config(emulator.url, "memory"), store=store))
        proxies = {
            (miss, auth): await aiohttp_client(
                create_same_calls_app(emulator.url, store_miss=miss, signer=OAUTH1_SIGNER if auth == "oauth1" else None)
            )
            for miss in (False, True)
            for auth in ("bearer", "oauth1")
        }

        async def v2_calls(client: Any, call: str, index: int, auth: str = "bearer") -> list[tuple[str, str, Any, str]]:
            state.requests.clear()
            method, url, form = request_for(call, "", index)
            headers = {"Authorization": Signer(auth, call)(method, str(client.make_url(url)))}
            async with client.request(method, url, headers=headers, data=form) as answer:
                assert answer.status == 200, await answer.text()
            # The ids of the messages differ (each destroy deletes its own); everything else must not, the
            # scheme of the credential v2 verifies included.
            return [
                (r.method, re.sub(r"/\d{15,}", "/ID", r.path), r.query, r.headers["Authorization"].split()[0])
                for r in state.requests
            ]

        # Once per credential, the gateway asks v2 whom it acts for, then remembers it.
        for call, auth in (("v1.1-list", "bearer"), ("v1.1-send", "bearer"), ("v1.1-list", "oauth1")):
            me = ("GET", "/2/users/me", {"user.fields": USER_FIELDS})
            assert me in [made[:3] for made in await v2_calls(gateway, call, 0, auth)]
        cases = [  # call, store miss, auth of the gateway's call
            ("v1.1", False, "bearer"), ("statusnet", False, "bearer"), ("v1.1", True, "bearer"),
            ("statusnet", True, "bearer"), ("v1.1", False, "oauth1"), ("v1.1", True, "oauth1"),
            ("v1.1-list", False, "bearer"), ("statusnet-list", False, "bearer"),
            ("v1.1-send", False, "bearer"), ("statusnet-send", False, "bearer"),
        ]  # fmt: skip
        for number, (call, miss, auth) in enumerate(cases):
            # A store hit destroys one of the messages the gateway's store holds (0-19), a miss one it does not.
            gateway_index, proxy_index = (20 + number if miss else number), 30 + number
            by_gateway = await v2_calls(gateway, call, gateway_index, auth)
            by_proxy = await v2_calls(proxies[miss, auth], call, proxy_index)
            assert by_proxy == by_gateway and by_gateway, (call, miss, auth)
        await store.close()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "http://127.0.0.1:8080/1.1/direct_messages/destroy.json?id=1700000000000000007"),
        ("GET", "http://127.0.0.1:8080/1.1/direct_messages.json?count=50"),
        ("GET", "HTTPS://Example.COM:443/a%20b/c?x=%E2%9C%93&x=a+b&empty="),
    ],
)
def test_the_load_generators_signature_is_the_one_authlib_makes(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str
) -> None:
    from authlib.oauth1.rfc5849 import client_auth

    monkeypatch.setattr(client_auth, "generate_nonce", lambda: "a1b2-c3~d4")
    monkeypatch.setattr(client_auth, "generate_timestamp", lambda: "1700000000")
    signer = client_auth.ClientAuth(
        fixtures.CONSUMER_KEY, fixtures.CONSUMER_SECRET, fixtures.OAUTH_TOKEN, fixtures.OAUTH_TOKEN_SECRET
    )
    _, headers, _ = signer.sign(method, url, {}, b"")

    def fields(header: str) -> dict[str, str]:
        return dict(re.findall(r'(\w+)="([^"]*)"', header))

    assert fields(OAUTH1_SIGNER.sign(method, url, "a1b2-c3~d4", "1700000000")) == fields(headers["Authorization"])


@pytest.mark.parametrize("stores", [["sqlite", "memory"], ["memory"]])
def test_every_gateway_run_has_each_of_its_proxies_runs_right_next_to_it(stores: list[str]) -> None:
    scenarios = plan(stores)
    rounds = [schedule(scenarios, i, 10, 100) for i in range(4)]
    events = assign_ids(rounds)
    gateways = [s for s in scenarios if not s.is_proxy]
    assert {s.path for s in gateways} == {*PATHS, "emulator"}
    for s in gateways:
        if s.same_calls is not None:  # the proxy makes the gateway's calls to the same emulator, as many processes
            same, server = Server.parse(s.same_calls.server), Server.parse(s.server)
            assert (same.kind, same.upstream, same.processes) == ("same-calls", server.upstream, server.processes)
            assert s.same_calls.call == s.call
    for round_index, runs in enumerate(rounds):
        # Every scenario that is no proxy once a round; a proxy only next to a gateway scenario it serves.
        assert sorted(r.scenario.name for r in runs if r.pair == r.scenario.name or r.pair is None) == sorted(
            s.name for s in gateways
        )
        pairs = adjacent_pairs(runs)
        for s in gateways:
            for proxy in s.proxies:
                i, j = pairs[s.name, proxy.name]
                assert abs(i - j) == 1 and runs[i].scenario is s and runs[j].scenario is proxy
                assert (runs[i].warmup, runs[i].count) == (runs[j].warmup, runs[j].count)
        assert all(r.pair is not None for r in runs if r.scenario.is_proxy)
        if round_index % 2:
            assert [(r.scenario.name, r.pair) for r in runs] == [(r.scenario.name, r.pair) for r in rounds[0]][::-1]
    # No two destroy runs share an id, and together they use every id the emulator holds, each once.
    destroyed = sorted(
        i for runs in rounds for r in runs if r.scenario.call in ("v1.1", "statusnet", "v2") for i in r.ids
    )
    assert destroyed == list(range(events))


def test_lists_and_sends_each_have_an_emulator_of_their_own() -> None:
    """A send run leaves its messages in its emulator for a second or two, and the emulator reads past every
    message it holds for each list: a list run right after a send run, as every other round has it, would
    cost the emulator more than the proxy run next to it."""
    scenarios = plan(["sqlite"], ("lists", "sends"))
    upstreams = {s.call: Server.parse(s.server).upstream for s in scenarios if s.call != "v2"}
    assert upstreams == {
        "v1.1-list": "lists",
        "statusnet-list": "lists",
        "v1.1-send": "sends",
        "statusnet-send": "sends",
    }
    servers = {Server.parse(s.server).upstream: emulator_key(Server.parse(s.server).upstream) for s in scenarios}
    assert servers == {"main": "emulator", "lists": "emulator@lists", "sends": "emulator@sends"}
    for key in {s.server for s in scenarios}:
        assert Server.parse(key).key == key


def test_a_ratio_divides_the_gateway_run_by_the_proxy_run_next_to_it() -> None:
    scenarios = plan(["memory"], ("hit",))
    gateway = next(s for s in scenarios if not s.is_proxy and s.same_calls is not None)
    assert gateway.same_calls is not None and gateway.minimal is not None
    for round_index in (0, 1):
        runs = [r for r in schedule(scenarios, round_index, 1, 10) if r.pair == gateway.name]
        rps = [
            {gateway.name: 50.0, gateway.same_calls.name: 100.0, gateway.minimal.name: 200.0}[r.scenario.name]
            for r in runs
        ]
        assert adjacent_ratios(runs, rps) == {
            (gateway.name, gateway.same_calls.name): 0.5,
            (gateway.name, gateway.minimal.name): 0.25,
        }
    same, gateway_run, minimal = (r for r in schedule(scenarios, 0, 1, 10) if r.pair == gateway.name)
    with pytest.raises(ValueError, match="next to"):
        adjacent_ratios([same, minimal, gateway_run], [1.0, 1.0, 1.0])  # the same-calls run no longer next to it


def test_a_throughput_verdict_is_the_median_round_and_names_the_lowest_and_highest() -> None:
    scenarios = plan(["memory"], ("hit",))
    gateway = next(s for s in scenarios if not s.is_proxy and s.target is not None)
    gateway.result = {"ratio_rounds": [0.95, 0.8, 0.92, 0.85], "ratio": statistics.median([0.95, 0.8, 0.92, 0.85])}
    others = [s for s in scenarios if s.target is not None and s is not gateway]
    for other in others:
        other.result = {"ratio_rounds": [1.0], "ratio": 1.0}
    store = {"backend": "memory", "messages": 1000, "ratio_to_smallest": 1.0, "bytes_per_message": {"rss": 500.0}}
    checks = {what: rest for what, *rest in verdicts(scenarios, [store, {**store, "messages": 10}])}
    assert checks[f"throughput {gateway.name} / same-calls proxy"] == [gateway.result["ratio"], 0.9, False, (0.8, 0.95)]
    assert checks["lookup p50 memory: 1000 / 10 messages"] == [1.0, 1.5, True, None]


@pytest.mark.parametrize(
    ("measured", "target", "rounds", "shown"),
    [
        (0.913, 0.9, (0.8, 1.0), "0.91"),
        (0.9, 0.9, (0.8, 1.0), "0.90"),
        (0.8972, 0.9, (0.8, 1.0), "0.897"),  # "0.90" would read as met
        (0.89996, 0.9, (0.8, 1.0), "0.89996"),
        (1.28, 1.5, None, "1.28"),
        (1.5004, 1.5, None, "1.5004"),  # "1.50" would read as within
        (343.2, 1024, None, "343.20"),
    ],
)
def test_a_verdict_shows_its_figure_on_the_side_of_the_target_it_fell(
    measured: float, target: float, rounds: tuple[float, float] | None, shown: str
) -> None:
    met = measured >= target if rounds is not None else measured <= target
    assert Check("a path", measured, target, met, rounds).shown() == shown


def test_the_readme_gives_the_store_parts_rounds_and_warm_up_as_the_code_has_them() -> None:
    from bench.store_cost import BATCH_WARMUP, ROUNDS

    readme = " ".join((Path(__file__).resolve().parent.parent / "bench" / "README.md").read_text().split())
    assert f"in {ROUNDS} rounds (each batch after {BATCH_WARMUP} unmeasured lookups" in readme


def test_compare_runs_both_orders_in_interleaved_slices(tmp_path: Path) -> None:
    report_path = tmp_path / "compare.json"
    command = [
        sys.executable, "-m", "bench.compare", "mem=memory", f"again=memory@{ROOT}", "--slices", "2", "--count", "60",
        "--warmup", "5", "--concurrency", "4", "--json", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(report_path.read_bytes())
    assert [r["order"] for r in report["runs"]] == [["mem", "again"], ["again", "mem"]]
    for result, ratio in zip(report["runs"], report["ratios"], strict=True):
        assert all(len(result[what][name]) == 2 for what in ("cpu_us", "rps") for name in ("mem", "again"))
        assert all(v > 0 for name in ("mem", "again") for v in result["rps"][name])
        # Each slice pair's ratio is the second side's CPU over the first's, whichever was started first.
        expected = [b / a for a, b in zip(result["cpu_us"]["mem"], result["cpu_us"]["again"], strict=True)]
        assert ratio == pytest.approx(sum(expected) / 2)
    assert report["ratio"] == pytest.approx(sum(report["ratios"]) / 2)
    assert "CPU again / mem" in run.stdout


def test_compare_runs_a_side_from_the_checkout_it_names(tmp_path: Path) -> None:
    # An empty directory holds no bench or gateway to run: that side's server cannot start.
    command = [
        sys.executable, "-m", "bench.compare", "mem=memory", f"other=memory@{tmp_path}", "--one-order", "--slices", "1",
        "--count", "20", "--warmup", "2",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "other did not start" in run.stderr


@pytest.mark.parametrize("spec", ["memory", "a=valkey", "=memory", "a="])
def test_compare_refuses_a_side_it_cannot_run(spec: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.compare", spec, "b=memory"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2 and "expected NAME=SERVER[@CHECKOUT]" in run.stderr


def test_compare_runs_a_gateway_on_redis(tmp_path: Path, redis_url: str) -> None:
    report_path = tmp_path / "compare.json"
    command = [
        sys.executable, "-m", "bench.compare", "mem=memory", "red=redis", "--one-order", "--store-miss", "--call",
        "v1.1", "--slices", "1", "--count", "40", "--warmup", "2", "--concurrency", "4", "--json", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env=os.environ | {"DMGW_BENCH_REDIS_URL": redis_url},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert orjson.loads(report_path.read_bytes())["runs"][0]["cpu_us"]["red"][0] > 0


@pytest.mark.parametrize(("store_miss", "auth"), [(False, "bearer"), (True, "bearer"), (True, "oauth1")])
def test_compare_has_the_same_calls_proxy_make_the_comparisons_v2_calls(
    store_miss: bool, auth: str, tmp_path: Path
) -> None:
    # The same-calls proxy asks v2 first on a store miss and signs its calls when the gateway's callers sign
    # theirs, as the full run's proxy for that scenario does; like the minimal proxy, it is called with the
    # bearer token, whatever the comparison's --auth.
    side = Side.parse("same=same-calls")
    args = argparse.Namespace(store_miss=store_miss, auth=auth)
    command = server_command(side, "http://127.0.0.1:1", range(0), args, tmp_path)
    options = "+".join(o for o, on in (("miss", store_miss), ("oauth1", auth == "oauth1")) if on)
    emulator = SimpleNamespace(url="http://127.0.0.1:1")
    full_run = run_server_command(Server("same-calls", options).key, {"emulator": emulator}, [], [], tmp_path)  # type: ignore[dict-item]
    assert command == full_run
    assert ("--store-miss" in command, "--oauth1" in command) == (store_miss, auth == "oauth1")
    assert side.is_proxy and Side.parse("minimal=proxy").is_proxy and not Side.parse("gw=sqlite").is_proxy


def test_compare_signs_with_oauth1_and_leaves_the_store_empty_when_asked(tmp_path: Path) -> None:
    # Every call must succeed (a refused signature or a failed v2 lookup stops a comparison; the proxies are
    # called with the bearer token, and the same-calls proxy signs its own v2 calls, the GET first on a
    # store miss), and a store-miss destroy costs the gateway more than a store-hit one: it asks v2 for the
    # message first.
    reports = {}
    for mode, proxy in (("hit", "proxy"), ("miss", "same-calls")):
        reports[mode] = tmp_path / f"{mode}.json"
        command = [
            sys.executable, "-m", "bench.compare", f"proxy={proxy}", "mem=memory", "--auth", "oauth1", "--call", "v1.1",
            "--one-order", "--slices", "2", "--count", "150", "--warmup", "10", "--concurrency", "4",
            "--json", str(reports[mode]), *(["--store-miss"] if mode == "miss" else []),
        ]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
    cpu = {mode: orjson.loads(path.read_bytes())["runs"][0]["cpu_us"]["mem"] for mode, path in reports.items()}
    assert sum(cpu["miss"]) > sum(cpu["hit"])


def test_instructions_counts_each_server_and_the_gateway_does_more_than_the_same_calls_proxy() -> None:
    # Under callgrind, on a store miss: every destroy must succeed (the same-calls proxy asks v2 for the
    # message first, as the gateway does), and the gateway (store, parsing, rendering) executes more
    # instructions per destroy than the proxy making the same two v2 calls.
    command = [
        sys.executable, "-m", "bench.instructions", "gw=memory", "same=same-calls", "--store-miss", "--call", "v1.1",
        "--count", "30", "--warmup", "5", "--concurrency", "2",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    counts = dict(re.findall(r"^(\w+)\s+instructions/destroy\s+([\d,]+)", run.stdout, re.MULTILINE))
    gateway, same = (int(counts[name].replace(",", "")) for name in ("gw", "same"))
    assert gateway > same > 0
