"""The benchmark still runs: a tiny pass of ``python -m bench`` end to end. Its numbers are not checked here
(speed targets belong to the benchmark itself), only that every scenario and store size produced them. And,
without servers: the order of the runs in a round, which pairs each gateway scenario with a proxy run right
next to it, and the ids each run destroys."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.run import adjacent_ratios, assign_ids, counterparts, plan, runs_per_round, schedule

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_in_quick_mode(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "bench", "--quick", "--rounds", "2", "--requests", "40", "--warmup", "5",
        "--concurrency", "4", "--stores", "memory", "--store-backends", "memory,sqlite", "--sizes", "100,1000",
        "--lookups", "50", "--json", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(report_path.read_bytes())

    http = {row["name"]: row for row in report["http"]}
    assert len(http) == 8  # emulator alone, proxy twice, gateway twice, pass-through, store miss, OAuth 1.0a
    # The v1.1 proxy runs next to the gateway's v1.1, store miss and OAuth 1.0a scenarios, StatusNet's next to one.
    runs = {"minimal proxy: v1.1 destroy.json": 3, "minimal proxy: StatusNet destroy/ID.xml": 1}
    for name, row in http.items():
        per_round = runs.get(name, 1)
        assert row["rounds"] == 2 and row["runs"] == 2 * per_round and len(row["rps_rounds"]) == 2 * per_round, row
        assert row["requests"] == 40 * 2 * per_round and row["errors"] == {}, row
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    paired = [row for row in http.values() if "ratio_rounds" in row]
    assert len(paired) == 4  # the gateway's v1.1, StatusNet, store miss and OAuth 1.0a
    for row in paired:
        proxy = http[row["paired_with"]]
        assert proxy["server"] == "proxy" and proxy["call"] == row["call"]
        assert len(row["ratio_rounds"]) == 2 and row["ratio"] == pytest.approx(sum(row["ratio_rounds"]) / 2)
        # Each round's ratio is that round's gateway run over one of the proxy's runs, not the other way up.
        for gateway_rps, ratio in zip(row["rps_rounds"], row["ratio_rounds"], strict=True):
            assert any(math.isclose(gateway_rps / ratio, p, rel_tol=1e-9) for p in proxy["rps_rounds"]), row
    assert {(row["backend"], row["messages"]) for row in report["store"]} == {
        (backend, size) for backend in ("memory", "sqlite") for size in (100, 1000)
    }
    assert all(row["p50_us"] > 0 and all(v > 0 for v in row["bytes_per_message"].values()) for row in report["store"])
    targets = {t["what"]: t["measured"] for t in report["targets"]}
    assert sum("throughput" in t for t in targets) == 2 and sum("lookup" in t for t in targets) == 2
    for row in paired:
        if f"throughput {row['name']} / minimal proxy" in targets:
            assert targets[f"throughput {row['name']} / minimal proxy"] == row["ratio"]
    assert "targets" in run.stdout and "minimal proxy" in run.stdout


@pytest.mark.parametrize(("stores", "oauth1"), [(["sqlite", "memory"], True), (["memory"], False)])
def test_rounds_pair_each_gateway_scenario_with_an_adjacent_proxy_run(stores: list[str], oauth1: bool) -> None:
    scenarios = plan(stores, oauth1)
    partners = counterparts(scenarios)
    per_round, rounds = 7, 4
    events = assign_ids(scenarios, per_round, rounds)
    # Every gateway scenario on a legacy call has one; the v2 pass-through and the others have none.
    assert set(partners) == {s.name for s in scenarios if s.server.startswith("gateway:") and s.call != "v2"}
    assert all(p.server == "proxy" and p.call == s.call for s in scenarios if (p := partners.get(s.name)))

    orders = []
    used: list[tuple[str, range]] = []
    for round_index in range(rounds):
        runs = schedule(scenarios, round_index, per_round)
        orders.append([(r.scenario.name, r.pair) for r in runs])
        # The emulator alone and every gateway scenario once; a proxy once per gateway scenario of its call.
        for scenario in scenarios:
            count = sum(r.scenario is scenario for r in runs)
            assert (
                count
                == runs_per_round(scenario, scenarios)
                == (sum(p is scenario for p in partners.values()) if scenario.server == "proxy" else 1)
            )
        # Each pair is two adjacent runs: proxy then gateway in even rounds, gateway then proxy in odd ones.
        for name, proxy in partners.items():
            at = [i for i, r in enumerate(runs) if r.pair == name]
            assert len(at) == 2 and at[1] == at[0] + 1, (round_index, name, at)
            first, second = runs[at[0]].scenario, runs[at[1]].scenario
            expected = (proxy.name, name) if round_index % 2 == 0 else (name, proxy.name)
            assert (first.name, second.name) == expected
        # No proxy run outside a pair, no unpaired run with a pair key.
        assert all(r.pair is not None for r in runs if r.scenario.server == "proxy")
        assert all(r.pair is None for r in runs if r.scenario.name not in partners and r.scenario.server != "proxy")
        # Each run inside its scenario's ids (the gateway's store is filled with those of its store-hit ones).
        for r in runs:
            assert len(r.ids) == per_round and r.ids.start >= r.scenario.ids.start and r.ids.stop <= r.scenario.ids.stop
            used.append((r.scenario.name, r.ids))
    # Odd rounds are the even rounds backwards.
    assert orders[1] == orders[0][::-1] and orders[2] == orders[0] and orders[3] == orders[1]
    # No two runs share an id, and together they use every id the emulator holds, each once.
    every = sorted(i for _, ids in used for i in ids)
    assert every == list(range(events))


def test_adjacent_ratios_divide_each_gateway_run_by_the_proxy_run_next_to_it() -> None:
    scenarios = plan(["memory"], False)
    assign_ids(scenarios, 10, 2)
    partners = counterparts(scenarios)
    for round_index in (0, 1):
        runs = schedule(scenarios, round_index, 10)
        # req/s: 100 for a proxy run, its position for the others, so a wrong neighbour shows.
        rps = [100.0 if r.scenario.server == "proxy" else float(i + 1) for i, r in enumerate(runs)]
        ratios = adjacent_ratios(runs, rps)
        assert set(ratios) == set(partners)
        for name, ratio in ratios.items():
            i = next(i for i, r in enumerate(runs) if r.scenario.name == name)
            assert ratio == (i + 1) / 100.0
    runs = schedule(scenarios, 0, 10)
    assert [r.scenario.server for r in runs[:3]] == ["emulator", "proxy", "gateway:memory"]
    apart = [runs[1], runs[0], runs[2]]  # the proxy run and its gateway run with another between them
    with pytest.raises(ValueError, match="no proxy run next to"):
        adjacent_ratios(apart, [1.0, 1.0, 1.0])


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


@pytest.mark.parametrize("spec", ["memory", "a=redis", "=memory", "a="])
def test_compare_refuses_a_side_it_cannot_run(spec: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.compare", spec, "b=memory"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2 and "expected NAME=SERVER[@CHECKOUT]" in run.stderr


def test_compare_signs_with_oauth1_and_leaves_the_store_empty_when_asked(tmp_path: Path) -> None:
    # Every call must succeed (a refused signature or a failed v2 lookup stops a comparison), and a
    # store-miss destroy costs the gateway more than a store-hit one: it asks v2 for the message first.
    reports = {}
    for mode in ("hit", "miss"):
        reports[mode] = tmp_path / f"{mode}.json"
        command = [
            sys.executable, "-m", "bench.compare", "proxy=proxy", "mem=memory", "--auth", "oauth1", "--call", "v1.1",
            "--one-order", "--slices", "2", "--count", "150", "--warmup", "10", "--concurrency", "4",
            "--json", str(reports[mode]), *(["--store-miss"] if mode == "miss" else []),
        ]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
    cpu = {mode: orjson.loads(path.read_bytes())["runs"][0]["cpu_us"]["mem"] for mode, path in reports.items()}
    assert sum(cpu["miss"]) > sum(cpu["hit"])
