"""``dm-gateway serve --workers N``: N processes serving one port, for hosts with several cores.

The process started by the operator is the *supervisor*. It opens the store first (so a SQLite schema
migration runs once, before any worker), then starts N workers as fresh interpreters (multiprocessing's
``spawn``: nothing is forked from a process that already has an event loop). Each worker runs the gateway
application on ``server.port`` with ``SO_REUSEPORT``, so the kernel spreads new connections over them.

The supervisor serves the admin listener itself: ``/healthz`` and ``/readyz`` answer for the whole service
(``/readyz`` pings the shared store, which is what the workers use), and ``/metrics`` is the sum over all
workers, read with prometheus-client's multiprocess mode from a fresh directory the supervisor creates
and names in ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client. Every update is written
to those files as it is made, so a worker killed outright leaves its counts in the sum; counting in each
worker's memory and collecting on scrape would save little per request (docs/PERFORMANCE.md) and lose them.

Lifecycle: the admin listener opens once every worker is listening; a worker that cannot start then is a
configuration or environment problem, and the supervisor exits 1 at once. Afterwards a worker that exits on
its own (a crash, a kill) is replaced by a fresh one after a pause that doubles with each of that worker's
deaths in the last ``DEATH_WINDOW`` seconds (``RESTART_DELAY``, then twice that, ...); if the same worker
dies ``MAX_DEATHS`` times within the window, the supervisor gives up: it stops the others and exits 1 with
one line, so that systemd, Kubernetes or Docker sees a service that cannot run. SIGTERM or SIGINT to the
supervisor cancels any pending replacement and is passed to every worker as SIGTERM; each drains as a
single process does (``server.shutdown_timeout``), and the supervisor exits 0 when all have.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.config import Config
from gateway.serving import (
    freeze_startup_objects,
    log_admin_listener,
    public_sites,
    runner_options,
    stop_on_signals,
    tune_collector,
)

log = logging.getLogger("gateway")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"

# Beyond server.shutdown_timeout, how long a worker may take to close its store and exit before it is killed.
EXIT_GRACE = 10.0
# A dead worker is replaced after RESTART_DELAY seconds, doubled for each earlier death of the same worker
# within DEATH_WINDOW seconds; its MAX_DEATHS-th death within the window ends the gateway (exit 1).
RESTART_DELAY = 0.5
DEATH_WINDOW = 60.0
MAX_DEATHS = 5


class WorkerFailed(Exception):
    """A worker could not start, or stopped on its own; the message is the operator's one line."""


def run_workers(config: Config) -> int:
    """Supervise ``config.server.workers`` workers until a signal (exit 0) or one that keeps dying (exit 1)."""
    for handler in logging.getLogger().handlers:  # say which process wrote each line
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    metrics_dir = tempfile.mkdtemp(prefix="dm-gateway-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    # Before prometheus_client is imported here (by gateway.app) and in the workers, which inherit it.
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        return asyncio.run(_supervise(config))
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None

    def __str__(self) -> str:
        """What became of it, for the operator: ``worker 2 (pid 1234) exited with status -9``."""
        what = self.error or f"exited with status {self.process.exitcode}"
        return f"worker {self.index} (pid {self.process.pid}) {what}"


async def _supervise(config: Config) -> int:
    from prometheus_client import CollectorRegistry, multiprocess

    from gateway.admin import create_admin_app
    from gateway.app import create_app

    loop = asyncio.get_running_loop()
    stop, remove_signal_handlers = stop_on_signals(loop)
    # The supervisor's own gateway app never listens: it holds the store /readyz pings.
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    admin_runner = web.AppRunner(create_admin_app(app, registry=registry), access_log=None, handle_signals=False)
    workers: dict[int, _Worker] = {}  # the current worker of each index
    failure: str | None = None
    try:
        await runner.setup()  # opens (and migrates) the store once, before any worker does
        context = multiprocessing.get_context("spawn")

        def spawn(index: int) -> _Worker:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(config, index, theirs), name=f"dm-gateway-worker-{index}", daemon=False
            )
            process.start()
            theirs.close()
            worker = workers[index] = _Worker(index, process, ours)
            _watch(loop, worker, multiprocess)
            return worker

        for index in range(1, config.server.workers + 1):
            spawn(index)
        failure = await _first_failure_or(stop, list(workers.values()), _all_ready(list(workers.values())))
        if failure is None:
            await admin_runner.setup()
            await web.TCPSite(admin_runner, config.server.admin_host, config.server.admin_port).start()
            tls_port = config.server.tls_port
            log.info(
                "dm-gateway %s: %d workers on http%s://%s:%d%s, upstream %s, store %s",
                __version__,
                len(workers),
                "s" if config.server.tls_cert and tls_port is None else "",
                config.server.host,
                config.server.port,
                f" and https://{config.server.host}:{tls_port}" if config.server.tls_cert and tls_port else "",
                config.upstream.base_url,
                config.store.url,
            )
            log_admin_listener(config, admin_runner)
            failure = await _replace_the_dead(stop, workers, spawn)
    finally:
        remove_signal_handlers()
        await _stop_workers(list(workers.values()), config.server.shutdown_timeout)
        await admin_runner.cleanup()
        await runner.cleanup()
    if failure is not None:
        raise WorkerFailed(failure)
    return 0


async def _all_ready(workers: list[_Worker]) -> None:
    for worker in workers:
        await worker.ready.wait()


async def _first_failure_or(stop: asyncio.Event, workers: list[_Worker], awaitable: Any) -> str | None:
    """Wait for ``awaitable``, a stop signal or a worker's exit; the failure's description, or None."""
    waits = [asyncio.ensure_future(awaitable), asyncio.ensure_future(stop.wait())]
    waits += [asyncio.ensure_future(worker.exited.wait()) for worker in workers]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if stop.is_set():
        return None
    for worker in workers:
        if worker.exited.is_set():
            return str(worker)
    return None


async def _replace_the_dead(
    stop: asyncio.Event, workers: dict[int, _Worker], spawn: Callable[[int], _Worker]
) -> str | None:
    """Keep every worker index served until a stop signal (None), or until one keeps dying (why not)."""
    keepers = [asyncio.ensure_future(_keep(index, workers, spawn)) for index in workers]
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stopped, *keepers]:
            task.cancel()  # during shutdown, nothing is restarted
    return None if stopped in done else next(task for task in keepers if task in done).result()


async def _keep(index: int, workers: dict[int, _Worker], spawn: Callable[[int], _Worker]) -> str:
    """Replace worker ``index`` each time it dies, after its backoff; return the give-up line."""
    loop = asyncio.get_running_loop()
    deaths: list[float] = []
    while True:
        worker = workers[index]
        await worker.exited.wait()
        now = loop.time()
        deaths = [death for death in deaths if now - death < DEATH_WINDOW] + [now]
        if len(deaths) >= MAX_DEATHS:
            return f"{worker}; it died {len(deaths)} times within {DEATH_WINDOW:g}s, giving up"
        delay = RESTART_DELAY * 2 ** (len(deaths) - 1)
        log.warning("%s; starting a new one in %gs", worker, delay)
        await asyncio.sleep(delay)
        spawn(index)


def _watch(loop: asyncio.AbstractEventLoop, worker: _Worker, multiprocess: Any) -> None:
    """Follow a worker's messages (ready, or why it could not start) and its exit, without blocking."""

    def on_message() -> None:
        try:
            kind, detail = worker.conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
            return
        if kind == "ready":
            worker.ready.set()
        else:
            worker.error = detail

    def on_exit() -> None:
        loop.remove_reader(worker.process.sentinel)
        while not worker.conn.closed and worker.conn.poll():  # a last message may still be waiting
            on_message()
        if not worker.conn.closed:
            loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
        worker.process.join()
        multiprocess.mark_process_dead(worker.process.pid)  # its live gauges leave /metrics
        worker.exited.set()

    loop.add_reader(worker.conn.fileno(), on_message)
    loop.add_reader(worker.process.sentinel, on_exit)


async def _stop_workers(workers: list[_Worker], shutdown_timeout: float) -> None:
    """SIGTERM to every worker still running; SIGKILL to any still running long after its drain time."""
    running = [worker for worker in workers if not worker.exited.is_set()]
    if running:
        log.info("stopping: %d workers finish requests in flight (at most %gs)", len(running), shutdown_timeout)
    for worker in workers:
        if not worker.exited.is_set() and worker.process.pid is not None:
            os.kill(worker.process.pid, signal.SIGTERM)
    pending = [worker.exited.wait() for worker in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*pending), shutdown_timeout + EXIT_GRACE)
    except TimeoutError:
        for worker in workers:
            if not worker.exited.is_set():
                log.error("worker %d (pid %d) did not stop; killing it", worker.index, worker.process.pid)
                worker.process.kill()
        await asyncio.gather(*(worker.exited.wait() for worker in workers))
    for worker in workers:
        worker.conn.close()


def worker_main(config: Config, index: int, conn: Connection) -> None:
    """A worker process: the gateway application on the shared port, until SIGTERM or the supervisor's end."""
    from gateway.accesslog import AccessLogger
    from gateway.edge import GatewayRunner
    from gateway.store.base import StoreError
    from gateway.tls import server_tls_context

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    tune_collector()
    # Ctrl-C reaches the whole process group; the supervisor turns it into one SIGTERM per worker, and a
    # second signal would end the drain early.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def serve() -> None:
        from gateway.app import create_app

        loop = asyncio.get_running_loop()
        stop, remove_signal_handlers = stop_on_signals(loop)
        # Readable only at EOF: the supervisor is gone, so no one would ever stop this worker.
        loop.add_reader(conn.fileno(), stop.set)
        runner = GatewayRunner(
            create_app(config), access_log_class=AccessLogger, handle_signals=False, **runner_options(config)
        )
        try:
            await runner.setup()
            freeze_startup_objects()
            sites = public_sites(runner, config, server_tls_context(config), reuse_port=True)
            for site in sites:
                await site.start()
            log.info("worker %d listening on %s", index, " and ".join(site.name for site in sites))
            conn.send(("ready", os.getpid()))
            await stop.wait()
            log.info("worker %d stopping: finishing requests in flight", index)
        finally:
            loop.remove_reader(conn.fileno())
            remove_signal_handlers()
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except (StoreError, OSError) as exc:
        conn.send(("error", f"cannot start: {exc}"))
        raise SystemExit(1) from None
    finally:
        logging.shutdown()  # a worker process ends without running atexit: the access log's last lines
