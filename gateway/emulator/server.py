"""Running the emulator on a real socket: in-process for tests, or as a foreground service.

Going through a real TCP listener matters: timeouts, connection resets and keep-alive only behave
like the real upstream when the gateway talks to the emulator over the network.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from types import TracebackType

from aiohttp import web
from yarl import URL

from gateway.emulator.app import create_app
from gateway.emulator.seed import default_seed, load_seed
from gateway.emulator.state import EmulatorState

# A handler still sleeping in an injected delay must not hold up shutdown for aiohttp's default minute.
SHUTDOWN_TIMEOUT = 1.0


class EmulatorServer:
    """An emulator listening on ``host:port`` (port 0 picks a free one); see ``url`` once started."""

    def __init__(self, state: EmulatorState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state if state is not None else EmulatorState.from_seed(default_seed())
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:43127``, with the port actually bound."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running")
        return str(URL.build(scheme="http", host=self.host, port=self.port))

    async def start(self) -> None:
        # A client that gives up cancels its handler, as on a real server, instead of leaving it running.
        runner = web.AppRunner(create_app(self.state), handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


async def serve(host: str = "127.0.0.1", port: int = 0, seed_path: str | Path | None = None) -> None:
    """Serve until SIGINT or SIGTERM, announcing the URL on one line of standard output."""
    seed = load_seed(seed_path) if seed_path is not None else default_seed()
    async with EmulatorServer(EmulatorState.from_seed(seed), host, port) as server:
        print(f"X API v2 emulator listening on {server.url}", flush=True)
        await _until_signalled()


def run(host: str = "127.0.0.1", port: int = 0, seed_path: str | Path | None = None) -> None:
    """Blocking form of ``serve`` for the command line."""
    asyncio.run(serve(host, port, seed_path))


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
