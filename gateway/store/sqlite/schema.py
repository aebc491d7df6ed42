"""The SQLite store's file: its schema, migrated in place, and the two connections the store opens on it.

Guarantees: the file is created owner-only (0600) before SQLite opens it, so its ``-wal``, ``-shm`` and
``-journal`` files are too, and a store file others may read is warned about; no directory is ever created;
every migration runs in a transaction of its own, so a file is at one schema version or the next, never
between them; a file whose schema is newer than this code's is refused; the event loop's connection opens
only once the schema is current; ``check_file`` creates and changes nothing.

Schema versions: 1 messages and users; 2 credentials (``consumers``, ``tokens``, ``basic_users``, ``nonces``);
3 messages keyed by their id as an integer (the rowid); 4 a message's deletions as a JSON object of deleter
and time; 5 the OAuth 1.0a provider's columns and ``request_tokens``; 6 ``pending``; 7 ``small_ids``; 8 nonces
keyed by their timestamp first; 9 nonces kept as a digest of their scope and nonce.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from gateway.store.base import StoreError

log = logging.getLogger("gateway.store")

SCHEMA_VERSION = 9

#: The files SQLite keeps beside a database, by the suffix of their names.
COMPANIONS = ("-wal", "-shm", "-journal")

#: How long the worker thread's connection waits for another connection's write lock, in milliseconds.
BUSY_TIMEOUT_MS = 5000

#: The timestamp of a nonce remembered without one: every nonce spent before schema version 8 has it.
NO_TIMESTAMP = -1

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE messages (
               id TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deleted_at REAL,
               deleted_by TEXT
           )""",
        """CREATE TABLE users (
               id TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               fetched_at REAL NOT NULL
           )""",
    ),
    2: (
        """CREATE TABLE consumers (
               key TEXT PRIMARY KEY,
               secret TEXT NOT NULL
           )""",
        """CREATE TABLE tokens (
               token TEXT PRIMARY KEY,
               consumer_key TEXT NOT NULL REFERENCES consumers (key) ON DELETE CASCADE,
               secret TEXT NOT NULL
           )""",
        "CREATE INDEX tokens_by_consumer ON tokens (consumer_key)",
        """CREATE TABLE basic_users (
               username TEXT PRIMARY KEY,
               password_hash TEXT NOT NULL,
               grant_record TEXT NOT NULL
           )""",
        """CREATE TABLE nonces (
               scope TEXT NOT NULL,
               nonce TEXT NOT NULL,
               expires_at REAL NOT NULL,
               PRIMARY KEY (scope, nonce)
           ) WITHOUT ROWID""",
        "CREATE INDEX nonces_by_expiry ON nonces (expires_at)",
    ),
    3: (
        """CREATE TABLE messages_by_number (
               id INTEGER PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deleted_at REAL,
               deleted_by TEXT
           )""",
        # Only ids as gateway.ids takes them (no legacy call can name any other), each as its integer.
        """INSERT INTO messages_by_number (id, record, learned_at, deleted_at, deleted_by)
           SELECT CAST(id AS INTEGER), record, learned_at, deleted_at, deleted_by FROM messages
           WHERE id GLOB '[1-9]*' AND id NOT GLOB '*[^0-9]*'
             AND (length(id) < 19 OR (length(id) = 19 AND id <= '9223372036854775807'))""",
        "DROP TABLE messages",
        "ALTER TABLE messages_by_number RENAME TO messages",
    ),
    # A deletion per deleter: a JSON object of each deleter (its Principal.identity, "" for none known) and
    # when it deleted the message, in place of the one deleted_at and deleted_by. Each time is written with
    # the 17 significant digits that give the same number back.
    4: (
        """CREATE TABLE messages_with_deletions (
               id INTEGER PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deletions TEXT
           )""",
        """INSERT INTO messages_with_deletions (id, record, learned_at, deletions)
           SELECT id, record, learned_at, CASE WHEN deleted_at IS NOT NULL
               THEN json_object(coalesce(deleted_by, ''), json(printf('%!.17g', deleted_at))) END
           FROM messages""",
        "DROP TABLE messages",
        "ALTER TABLE messages_with_deletions RENAME TO messages",
    ),
    # The gateway as OAuth 1.0a provider: consumers that act through the operator's X app, tokens mapped to
    # an X token of that app (its secret sealed like the others) or to a Basic user, and pending request
    # tokens, each one sealed record.
    5: (
        "ALTER TABLE consumers ADD COLUMN via_upstream_app INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN upstream_token TEXT",
        "ALTER TABLE tokens ADD COLUMN upstream_secret BLOB",
        "ALTER TABLE tokens ADD COLUMN upstream_user TEXT",
        """CREATE TABLE request_tokens (
               token TEXT PRIMARY KEY,
               expires_at REAL NOT NULL,
               record BLOB NOT NULL
           )""",
    ),
    # Short-lived records: onboarding sessions and invites (sealed by their writer), each with its expiry.
    6: (
        """CREATE TABLE pending (
               key TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               expires_at REAL NOT NULL
           )""",
        "CREATE INDEX pending_by_expiry ON pending (expires_at)",
    ),
    # Small ids ([routes] small_ids): AUTOINCREMENT, so a small id is never given twice, even after a row
    # was removed by hand. Never purged.
    7: (
        """CREATE TABLE small_ids (
               small INTEGER PRIMARY KEY AUTOINCREMENT,
               id TEXT NOT NULL UNIQUE
           )""",
    ),
    # Nonces keyed by the timestamp their request signed, then scope and nonce: unique per timestamp, client
    # and token, as RFC 5849 (3.3) asks, and each new one written beside the last ones instead of anywhere in
    # the table, with no index beside it. A nonce spent before this version (or without a timestamp) has
    # ``NO_TIMESTAMP`` and is refused at any timestamp while it lives.
    8: (
        """CREATE TABLE spent_nonces (
               timestamp INTEGER NOT NULL,
               scope TEXT NOT NULL,
               nonce TEXT NOT NULL,
               expires_at REAL NOT NULL,
               PRIMARY KEY (timestamp, scope, nonce)
           ) WITHOUT ROWID""",
        f"""INSERT INTO spent_nonces (timestamp, scope, nonce, expires_at)
           SELECT {NO_TIMESTAMP}, scope, nonce, expires_at FROM nonces""",
        "DROP TABLE nonces",
    ),
    # Nonces as 16 bytes (``nonce_digest``) in place of their scope and nonce, keyed as in version 8: a row is
    # a third of the size, so a batch of nonces changes fewer pages and the file keeps no client's token or
    # nonce. The live ones are carried over, each under its timestamp.
    9: (
        """CREATE TABLE nonce_digests (
               timestamp INTEGER NOT NULL,
               digest BLOB NOT NULL,
               expires_at REAL NOT NULL,
               PRIMARY KEY (timestamp, digest)
           ) WITHOUT ROWID""",
        """INSERT INTO nonce_digests (timestamp, digest, expires_at)
           SELECT timestamp, nonce_digest(scope, nonce), expires_at FROM spent_nonces""",
        "DROP TABLE spent_nonces",
    ),
}


def nonce_digest(scope: str, nonce: str) -> bytes:
    """What the file keeps of a spent nonce (schema version 9): BLAKE2b of its scope and nonce, 16 bytes. The
    scope's length comes first, so no two (scope, nonce) pairs hash the same input."""
    return hashlib.blake2b(f"{len(scope)}:{scope}{nonce}".encode("utf-8", "surrogatepass"), digest_size=16).digest()


def open_connections(path: str) -> tuple[sqlite3.Connection, sqlite3.Connection | None]:
    """The worker thread's connection, with the schema migrated to ``SCHEMA_VERSION``, and then (only then:
    the loop must never see a file still being migrated) the event loop's connection, or None for
    ``:memory:``, which a second connection cannot open. A file is created 0600 first."""
    shared = is_file(path)
    if shared:
        create_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # it waits for locks
        conn.execute("PRAGMA foreign_keys=ON")  # per connection; removing a consumer removes its tokens
        migrate(conn)
        return conn, _open_loop_connection(path) if shared else None
    except BaseException:
        conn.close()
        raise


def _open_loop_connection(path: str) -> sqlite3.Connection:
    """The event loop's connection: it fails at once rather than wait for a lock (``busy_timeout`` 0) and
    leaves checkpoints, which sync the disk, to the worker thread."""
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=rw"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout=0")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to ``SCHEMA_VERSION``, one version per transaction."""
    conn.create_function("nonce_digest", 2, nonce_digest, deterministic=True)
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        raise StoreError(f"sqlite schema version {current} is newer than this gateway's ({SCHEMA_VERSION})")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def is_file(path: str) -> bool:
    """Whether ``path`` names a file that a second connection can open (not a private in-memory database)."""
    return path not in ("", ":memory:")


def create_private(path: str) -> None:
    """Create the database file at ``path``, if it is not there, with mode 0600 (whatever the umask, which
    can only take permissions away), so that SQLite, which gives its ``-wal``, ``-shm`` and ``-journal``
    files the mode of the database file, creates those 0600 too. Then warn about any of them already
    readable or writable by others. The directory must exist: a store is never created somewhere new."""
    directory = Path(path).parent
    if not directory.is_dir():
        raise StoreError(f"sqlite: the directory {str(directory)!r} of the store file does not exist")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"sqlite: cannot create {path!r}: {exc.strerror}") from None
    warn_if_open_to_others(path)


def check_file(path: str) -> None:
    """Raise ``StoreError`` if opening the store at ``path`` would fail, creating nothing: the file must open
    read-write as a SQLite database whose schema is not newer than this gateway's, or not exist yet in a
    directory where it can be created. Warns, as opening does, about files open to others."""
    if not is_file(path):
        return
    directory = Path(path).parent
    if not directory.is_dir():
        raise StoreError(f"sqlite: the directory {str(directory)!r} of the store file does not exist")
    if not os.path.exists(path):
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(f"sqlite: cannot create {path!r}: its directory is not writable")
        return
    warn_if_open_to_others(path)
    try:
        db = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=rw", uri=True, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            (version,) = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite: {path}: {exc}") from None
    if version > SCHEMA_VERSION:
        raise StoreError(f"sqlite schema version {version} is newer than this gateway's ({SCHEMA_VERSION})")


def warn_if_open_to_others(path: str) -> None:
    """One warning for each of the store's files (the database and its companions) that others than its owner
    may read or write."""
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            log.warning("store file %s has mode %04o: others than its owner may read it; chmod 600 it", name, mode)
