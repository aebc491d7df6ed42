"""A TCP relay in front of a real server, for outage tests: ``cut`` drops every open connection and, until
``restore``, hangs up on each new one at once, as a server that went away (or a broken network path) would;
``stall`` keeps every connection open and takes new ones, but passes nothing on until ``restore``, as a
server that hangs (or a path that silently drops packets) would. The port stays the same throughout, so
clients recover without being reconfigured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from gateway.store.redis import RedisStore
from tests.conftest import redis_namespace


class TcpRelay:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.up = True
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.refused = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            writer.close()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._open |= {writer, target_writer}

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self.flowing.wait()
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()
                self._open.discard(sink)

        await asyncio.gather(copy(reader, target_writer), copy(target_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in list(self._open):
            writer.close()
        self._open.clear()

    def stall(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.up = True
        self.flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@asynccontextmanager
async def relayed_redis_store(redis_url: str, **options: Any) -> AsyncIterator[tuple[RedisStore, TcpRelay]]:
    """A RedisStore, in its own key namespace, that reaches Redis only through a ``TcpRelay``."""
    parts = urlsplit(redis_url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 6379)
    await relay.start()
    try:
        async with redis_namespace(redis_url) as prefix:
            store = await RedisStore.open(f"redis://127.0.0.1:{relay.port}{parts.path}", prefix=prefix, **options)
            try:
                yield store, relay
            finally:
                await store.close()
    finally:
        await relay.close()
