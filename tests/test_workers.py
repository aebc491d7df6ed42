"""`dm-gateway serve --workers N`: real processes sharing one port, metrics summed, SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from gateway.emulator import EmulatorServer, FaultRule
from tests.conftest import SEAN_TOKEN
from tests.test_admin import sample
from tests.test_cli import CLI, free_port, run_cli

REQUESTS = 30


async def start_workers(
    emulator: EmulatorServer, tmp_path: Path, workers: int, extra_config: str = ""
) -> tuple[asyncio.subprocess.Process, int, int]:
    port, admin_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nsidecar = true\n" + extra_config)
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--workers", str(workers), "--config", str(config), "--port", str(port),
        "--admin-port", str(admin_port), "--upstream", emulator.url, "--store", f"sqlite:///{tmp_path}/shared.sqlite3",
        env={**os.environ, "DMGW_UPSTREAM_BEARER": SEAN_TOKEN},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.returncode is not None:
                pytest.fail(f"dm-gateway serve --workers exited with {process.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{admin_port}/healthz") as response:
                    assert response.status == 200
                    return process, port, admin_port
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    process.kill()
    pytest.fail("the admin listener never answered")


def worker_pids(log: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"\[pid (\d+)\]: worker \d+ listening on", log)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_port_and_metrics_add_up(emulator: EmulatorServer, tmp_path: Path) -> None:
    process, port, admin_port = await start_workers(emulator, tmp_path, 2)
    try:
        # A new connection per request, so the kernel spreads them over the workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(REQUESTS):
                async with session.get(f"http://127.0.0.1:{port}/1.1/no-such-call.json") as response:
                    assert response.status == 404
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ready", "store": "up", "breaker": "closed"}
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
                metrics = await response.text()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404  # the admin routes stay off the public port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    pids = worker_pids(log)
    assert len(pids) == 2 and process.pid not in pids, log
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    answered = [entry for entry in access if entry["path"] == "/1.1/no-such-call.json"]
    assert len(answered) == REQUESTS, log  # every line written, the last ones at the workers' exit too
    assert {entry["pid"] for entry in answered} == pids, log  # both workers served some of the requests
    assert sample(metrics, "dmgw_requests_total", route="unmatched", status="404") == REQUESTS
    assert sample(metrics, "dmgw_store_up") == 1.0
    assert not any(pid_alive(pid) for pid in pids)


async def test_readiness_sees_a_breaker_opened_in_a_worker(emulator: EmulatorServer, tmp_path: Path) -> None:
    """The supervisor's own breaker sees no traffic: readiness reads the workers' from the summed metrics."""
    emulator.state.faults.append(FaultRule(method="DELETE", status=503))
    extra = "[upstream]\nretries = 0\nbreaker_failures = 1\nbreaker_reset = 60\n"
    process, port, admin_port = await start_workers(emulator, tmp_path, 2, extra)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            url = f"http://127.0.0.1:{port}/1.1/direct_messages/events/destroy.json?id=1583890000000000003"
            async with session.delete(url) as response:
                assert response.status == 503
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as response:
                body = await response.json()
                assert response.status == 503, body
                assert (body["status"], body["breaker"]) == ("unavailable", "open")
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
                assert sample(await response.text(), "dmgw_breaker_state") == 2
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()


class Stderr:
    """The supervisor's log (its workers' too), read line by line while it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        self.process, self.stream, self.text = process, process.stderr, ""

    async def until(self, pattern: str) -> re.Match[str]:
        while (match := re.search(pattern, self.text, re.MULTILINE)) is None:
            line = await asyncio.wait_for(self.stream.readline(), 30)
            assert line, f"the log ended before {pattern!r}:\n{self.text}"
            self.text += line.decode()
        return match

    async def workers(self, count: int) -> set[int]:
        """The pids of the first ``count`` workers that listened."""
        while len(worker_pids(self.text)) < count:
            line = await asyncio.wait_for(self.stream.readline(), 30)
            assert line, self.text
            self.text += line.decode()
        return worker_pids(self.text)

    async def end(self) -> int:
        """The supervisor's exit status, once it exits by itself (within a minute) or else is killed."""
        communicating = asyncio.ensure_future(self.process.communicate())
        try:
            _, rest = await asyncio.wait_for(asyncio.shield(communicating), 60)
        except TimeoutError:
            self.process.kill()
            _, rest = await communicating
        self.text += rest.decode()
        assert self.process.returncode is not None
        return self.process.returncode


async def ask(session: aiohttp.ClientSession, port: int) -> None:
    for _ in range(REQUESTS):
        async with session.get(f"http://127.0.0.1:{port}/1.1/no-such-call.json") as response:
            assert response.status == 404


async def test_a_killed_worker_is_replaced_and_metrics_still_add_up(emulator: EmulatorServer, tmp_path: Path) -> None:
    process, port, admin_port = await start_workers(emulator, tmp_path, 2)
    stderr = Stderr(process)
    try:
        first = await stderr.workers(2)
        victim, survivor = sorted(first)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await ask(session, port)
            os.kill(victim, signal.SIGKILL)
            await stderr.until(rf"worker \d \(pid {victim}\) exited with status -9; starting a new one in 0.5s$")
            await ask(session, port)  # the survivor answers alone while the replacement starts
            (replacement,) = await stderr.workers(3) - first
            await ask(session, port)
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
                metrics = await response.text()
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
    assert await stderr.end() == 0, stderr.text
    log = stderr.text
    assert worker_pids(log) == {victim, survivor, replacement}, log
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    answered_by = {entry["pid"] for entry in access if entry["path"] == "/1.1/no-such-call.json"}
    assert answered_by == {victim, survivor, replacement}, log
    # The dead worker's counts stay in the sum, and the replacement's are added to them.
    assert sample(metrics, "dmgw_requests_total", route="unmatched", status="404") == 3 * REQUESTS
    assert sample(metrics, "dmgw_store_up") == 1.0
    assert not any(pid_alive(pid) for pid in (victim, survivor, replacement))


async def test_a_worker_that_keeps_dying_ends_the_gateway_with_status_1(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Once the store cannot be opened, every replacement dies as it starts: the supervisor gives up at the
    fifth death within the window, after backoffs of 0.5, 1, 2 and 4 seconds, rather than looping forever."""
    process, _, _ = await start_workers(emulator, tmp_path, 2)
    stderr = Stderr(process)
    victim, survivor = sorted(await stderr.workers(2))
    store = tmp_path / "shared.sqlite3"
    store.unlink()  # the running processes keep the file they opened; a new one finds a directory
    store.mkdir()
    os.kill(victim, signal.SIGKILL)
    assert await stderr.end() == 1, stderr.text
    log = stderr.text
    killed = rf"worker (\d) \(pid {victim}\) exited with status -9; starting a new one in 0.5s$"
    index = re.search(killed, log, re.MULTILINE)
    assert index is not None, log
    failed = rf"worker {index[1]} \(pid \d+\) cannot start: .*; starting a new one in (\S+)s$"
    delays = re.findall(failed, log, re.MULTILINE)
    assert delays == ["1", "2", "4"], log
    last = log.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"dm-gateway: worker {index[1]} \(pid \d+\) cannot start: .*; "
        r"it died 5 times within 60s, giving up",
        last,
    ), log
    assert worker_pids(log) == {victim, survivor}, log  # no replacement ever listened
    assert not pid_alive(survivor)


async def test_sigterm_during_a_backoff_stops_everything(emulator: EmulatorServer, tmp_path: Path) -> None:
    process, _, _ = await start_workers(emulator, tmp_path, 2)
    stderr = Stderr(process)
    first = await stderr.workers(2)
    victim, survivor = sorted(first)
    os.kill(victim, signal.SIGKILL)
    (replacement,) = await stderr.workers(3) - first
    os.kill(replacement, signal.SIGKILL)
    await stderr.until(rf"\(pid {replacement}\) exited with status -9; starting a new one in 1s$")
    process.send_signal(signal.SIGTERM)
    assert await stderr.end() == 0, stderr.text
    assert worker_pids(stderr.text) == {victim, survivor, replacement}, stderr.text  # none started after
    assert "dm-gateway-worker" not in stderr.text and "Traceback" not in stderr.text, stderr.text
    assert not pid_alive(survivor)


def test_workers_with_the_memory_store_are_refused() -> None:
    result = run_cli("serve", "--workers", "2", "--store", "memory", "--port", str(free_port()))
    assert result.returncode == 2
    assert "server.workers" in result.stderr and "memory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
