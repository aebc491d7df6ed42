"""A serving process raises the garbage collector's first threshold for itself (``tune_collector``) and, once
started, puts what it built out of the collector's sight (``freeze_startup_objects``): a served ``dm-gateway
serve`` and every worker of ``--workers`` do both before they listen; building the app does neither."""

from __future__ import annotations

import ast
import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from gateway.app import create_app
from gateway.config import load_config
from gateway.serving import COLLECTOR_THRESHOLD, freeze_startup_objects, tune_collector
from tests.test_cli import free_port

PYTHON_DEFAULT = (700, 10, 10)

# Run in a fresh interpreter: once the process listens on PORT, print its thresholds, then stop it as an
# operator would (SIGTERM).
REPORT_WHEN_LISTENING = """
import gc, os, signal, socket, sys, threading, time

def report():
    while True:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    print((gc.get_threshold(), gc.get_freeze_count()), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report, daemon=True).start()
"""


@pytest.fixture
def collector() -> Iterator[None]:
    """Python's default thresholds for the test, whatever the test process had; restored after it."""
    saved = gc.get_threshold()
    gc.set_threshold(*PYTHON_DEFAULT)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def collector_while_serving(port: int, serve: str) -> tuple[tuple[int, int, int], int]:
    """The collector's thresholds, and how many objects it keeps out of sight (frozen), of a fresh interpreter
    that runs ``serve``, once it listens on ``port``."""
    code = REPORT_WHEN_LISTENING.replace("PORT", str(port)) + textwrap.dedent(serve)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first_line = result.stdout.splitlines()[0]
    return ast.literal_eval(first_line)


def test_the_first_threshold_is_raised_and_the_other_two_kept(collector: None) -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector()
    assert gc.get_threshold() == (COLLECTOR_THRESHOLD, 11, 12)
    assert PYTHON_DEFAULT[0] < COLLECTOR_THRESHOLD


def test_what_start_up_built_is_put_out_of_the_collectors_sight() -> None:
    alive = len(gc.get_objects())
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= alive // 2
        assert len(gc.get_objects()) < alive // 10  # a full collection has next to nothing left to walk
    finally:
        gc.unfreeze()


def test_a_served_gateway_runs_with_the_raised_threshold_and_its_start_up_frozen() -> None:
    port, admin_port = free_port(), free_port()
    serve = f"""
    from gateway.cli import main
    sys.exit(main(["serve", "--upstream", "http://127.0.0.1:9", "--store", "memory",
                   "--host", "127.0.0.1", "--port", "{port}", "--admin-port", "{admin_port}"]))
    """
    (first, _, _), frozen = collector_while_serving(port, serve)
    assert first == COLLECTOR_THRESHOLD and frozen > 10_000


def test_a_worker_runs_with_the_raised_threshold_and_its_start_up_frozen() -> None:
    port, admin_port = free_port(), free_port()
    # A worker as the supervisor starts it; it stops when the supervisor's end of its pipe closes.
    serve = f"""
    import multiprocessing
    from gateway.config import load_config
    from gateway.workers import worker_main

    config = load_config(env={{}}, overrides={{
        "upstream": {{"base_url": "http://127.0.0.1:9"}},
        "store": {{"url": "memory"}},
        "server": {{"host": "127.0.0.1", "port": {port}, "admin_port": {admin_port}}},
    }})
    ours, theirs = multiprocessing.Pipe()
    worker_main(config, 1, theirs)
    """
    (first, _, _), frozen = collector_while_serving(port, serve)
    assert first == COLLECTOR_THRESHOLD and frozen > 10_000


def test_building_the_app_leaves_the_collector_alone(collector: None) -> None:
    frozen = gc.get_freeze_count()
    create_app(load_config(env={}, overrides={"upstream": {"base_url": "http://127.0.0.1:9"}}))
    assert gc.get_threshold() == PYTHON_DEFAULT and gc.get_freeze_count() == frozen
