"""A serving process sets the garbage collector's first threshold for itself (``gateway.serving.tune_collector``):
``serve`` before it listens, every worker before it starts; nothing else does."""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import cli, workers
from gateway.app import create_app
from gateway.config import load_config
from gateway.serving import COLLECTOR_THRESHOLD, tune_collector

PYTHON_DEFAULT = (700, 10, 10)


@pytest.fixture
def collector() -> Iterator[None]:
    """Python's default thresholds for the test, whatever the test process had; restored after it."""
    saved = gc.get_threshold()
    gc.set_threshold(*PYTHON_DEFAULT)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_the_first_threshold_is_raised_and_the_other_two_kept(collector: None) -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector()
    assert gc.get_threshold() == (COLLECTOR_THRESHOLD, 11, 12)
    assert PYTHON_DEFAULT[0] < COLLECTOR_THRESHOLD


def test_serve_tunes_the_collector_before_it_serves(collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []

    async def serve(config: Any, tls: Any) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr(cli, "_serve_until_signalled", serve)
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kwargs: None)  # the test process keeps its own
    assert cli.main(["serve", "--upstream", "http://127.0.0.1:9", "--store", "memory"]) == 0
    assert seen == [(COLLECTOR_THRESHOLD, 10, 10)]


def test_every_worker_tunes_its_collector_before_it_serves(
    collector: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[int, int, int]] = []

    def run(coroutine: Any) -> None:  # in place of asyncio.run: note the thresholds, serve nothing
        seen.append(gc.get_threshold())
        coroutine.close()

    monkeypatch.setattr(workers.asyncio, "run", run)
    # What a worker does to its own process besides: not to be done to the test process.
    monkeypatch.setattr(workers.signal, "signal", lambda *args: None)
    monkeypatch.setattr(workers.logging, "basicConfig", lambda **kwargs: None)
    config = load_config(
        env={},
        overrides={"upstream": {"base_url": "http://127.0.0.1:9"}, "store": {"url": f"sqlite:///{tmp_path}/s.db"}},
    )
    ours, theirs = multiprocessing.Pipe()
    try:
        workers.worker_main(config, 0, theirs)
    finally:
        ours.close()
        theirs.close()
    assert seen == [(COLLECTOR_THRESHOLD, 10, 10)]


def test_building_the_app_leaves_the_collector_alone(collector: None) -> None:
    create_app(load_config(env={}, overrides={"upstream": {"base_url": "http://127.0.0.1:9"}}))
    assert gc.get_threshold() == PYTHON_DEFAULT
