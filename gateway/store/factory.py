"""The store factory: the backend a store URL names (``memory``, ``sqlite:///…``, ``redis://…``), opened with
the retention, encryption key and bounds of a ``[store]`` section; and the check ``check-config`` makes."""

from __future__ import annotations

import time

from gateway.config import StoreConfig, store_location
from gateway.store.base import Clock, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore, check_file


async def open_store(url: str, *, settings: StoreConfig | None = None, clock: Clock = time.time) -> Store:
    """Open the store at ``url``. ``settings`` (a validated ``[store]`` section) supplies retention, the
    encryption key and the memory bounds; without it every one of those is the default. Its ``url`` is ignored."""
    settings = settings or StoreConfig(url=url)
    backend, location = store_location(url)
    if backend == "memory":
        return MemoryStore(
            max_entries=settings.memory_max_entries,
            max_bytes=settings.memory_max_bytes,
            message_retention=settings.message_retention,
            user_max_age=settings.user_max_age,
            clock=clock,
        )
    if backend == "redis":
        return await RedisStore.open(
            location,
            message_ttl=settings.message_retention,
            deletion_ttl=settings.message_retention,
            user_ttl=settings.user_max_age,
            encryption_key=settings.encryption_key,
            clock=clock,
        )
    return await SQLiteStore.open(
        location,
        message_retention=settings.message_retention,
        user_max_age=settings.user_max_age,
        encryption_key=settings.encryption_key,
        clock=clock,
    )


async def check_store(settings: StoreConfig) -> None:
    """Raise ``StoreError`` if the store ``settings`` describe could not be opened, creating and changing
    nothing (what ``check-config`` asks): Redis must answer a PING; a SQLite file must open as a store this
    gateway can use, or else not exist yet in a directory where it can be created, as ``serve`` would."""
    backend, location = store_location(settings.url)
    if backend == "redis":
        store = await open_store(settings.url, settings=settings)
        await store.close()
    elif backend == "sqlite":
        check_file(location)


async def open_store_from_config(config: StoreConfig, *, clock: Clock = time.time) -> Store:
    """The store a ``[store]`` section describes: its URL, with its retention, key and bounds."""
    return await open_store(config.url, settings=config, clock=clock)
