"""The embedded default store: one SQLite file in WAL mode (see docs/STORES.md).

Rooms: ``schema`` (the file, its schema and migrations, the two connections), ``writer`` (batched commits on
the event loop's connection), ``worker`` (the thread that may wait), ``store`` (reads and the ``Store``
methods)."""

from gateway.store.sqlite.schema import SCHEMA_VERSION, check_file
from gateway.store.sqlite.store import SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "check_file"]
