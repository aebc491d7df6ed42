"""The benchmark still runs: a tiny pass of ``python -m bench`` end to end. Its numbers are not checked here
(speed targets belong to the benchmark itself), only that every scenario and store size produced them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_in_quick_mode(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "bench", "--quick", "--requests", "40", "--warmup", "5", "--concurrency", "4",
        "--stores", "memory", "--store-backends", "memory,sqlite", "--sizes", "100,1000", "--lookups", "50",
        "--json", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(report_path.read_bytes())

    http = {row["name"]: row for row in report["http"]}
    assert len(http) == 8  # emulator alone, proxy twice, gateway twice, pass-through, store miss, OAuth 1.0a
    for row in http.values():
        assert row["requests"] == 40 and row["errors"] == {}, row
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert {(row["backend"], row["messages"]) for row in report["store"]} == {
        (backend, size) for backend in ("memory", "sqlite") for size in (100, 1000)
    }
    assert all(row["p50_us"] > 0 and all(v > 0 for v in row["bytes_per_message"].values()) for row in report["store"])
    targets = [t["what"] for t in report["targets"]]
    assert sum("throughput" in t for t in targets) == 2 and sum("lookup" in t for t in targets) == 2
    assert "targets" in run.stdout and "minimal proxy" in run.stdout
