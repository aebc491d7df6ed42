"""An in-memory store, bounded by entry count and by bytes, evicting the least recently used. For tests and
tiny sidecars.

Messages and users share one LRU: an entry's size is the length of its encoded record plus its key, an
approximation of what it costs. Whenever the entries or their bytes exceed a bound, the least recently used
go first (an entry larger than the whole byte budget is not kept at all). A user is used when it is learned
or read; a message when it is learned: the gateway reads a stored message to destroy it, which is no reason
to keep it longer, and a read that leaves the order alone touches less memory. A message's deletions (one per
deleter) live inside its entry, so they are evicted and expire with it, as in SQLite. Expired entries (older
than the message retention or the user max age) are misses and are dropped when read. Text is kept in the
clear: memory is not at rest, so no encryption here.

A message is kept as one bytes object, its encoded record (the one SQLite and Redis keep) with when it was
learned and its deletions, and decoded when read. Bytes are not containers, so the cyclic garbage collector
never visits them: held as objects, a million messages were four million tracked objects, and a full
collection walked them all (half a second with the event loop stopped). Users stay objects, handed out as
the same object while unchanged (the renderer answers a user it has seen by identity): there are few of them,
and every destroy reads two.

Credentials are never evicted (losing one would lock a client out); nonces, request tokens and pending
records are dropped in the order they expire, a few with each new one (``_Expiring``).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar, cast

from gateway.auth.credentials import (
    BasicUser,
    Consumer,
    CredentialEntry,
    CredentialKind,
    OAuth2Grant,
    RequestToken,
    Token,
    credential_entries,
)
from gateway.config import StoreConfig
from gateway.model import DirectMessage, User
from gateway.store import codec
from gateway.store.base import Deletion, StoreSize, latest

K = TypeVar("K")
V = TypeVar("V")

_DEFAULTS = StoreConfig()
_DELETION_BYTES = 64  # a timestamp and a deleter, roughly


def _when(deletion: Deletion) -> float:
    return deletion.at


class _Lru(Generic[K, V]):
    """Least recently used first out, bounded by entries and by the sizes given with each ``put``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("memory store bounds must be positive")
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[0]

    def peek(self, key: K) -> V | None:
        item = self._data.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, size: int) -> None:
        self.discard(key)
        self._data[key] = (value, size)
        self.bytes += size
        while self._data and (len(self._data) > self._max_entries or self.bytes > self._max_bytes):
            _, (_, evicted) = self._data.popitem(last=False)
            self.bytes -= evicted

    def replace(self, key: K, value: V) -> None:
        """Change a value in place: neither its size nor its recency."""
        _, size = self._data[key]
        self._data[key] = (value, size)

    def discard(self, key: K) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def values_by_key(self) -> Iterator[tuple[K, V]]:
        """Every (key, value), least recently used first, without touching the order."""
        return ((key, value) for key, (value, _) in self._data.items())

    def __len__(self) -> int:
        return len(self._data)


class _Expiring(Mapping[K, V]):
    """Short-lived records (nonces, request tokens, onboarding's pending records), each found until the
    moment it expires. Expired ones are dropped in the order they expire, a few with each ``put``, so the
    records held are about one lifetime's worth and no call walks them all. As a mapping it shows what it
    still holds, expired or not."""

    def __init__(self) -> None:
        self._live: dict[K, tuple[V, float]] = {}
        self._expiries: list[tuple[float, int, K]] = []  # a heap: the next to expire first
        self._order = itertools.count()  # ties in expiry are broken by this, never by comparing keys

    def put(self, key: K, value: V, expires_at: float, now: float) -> None:
        self.drop_expired(now)
        self._live[key] = (value, expires_at)
        heapq.heappush(self._expiries, (expires_at, next(self._order), key))

    def find(self, key: K, now: float) -> V | None:
        item = self._live.get(key)
        return item[0] if item is not None and item[1] > now else None

    def take(self, key: K, now: float) -> V | None:
        item = self._live.pop(key, None)
        return item[0] if item is not None and item[1] > now else None

    def drop_expired(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expires_at, _, key = heapq.heappop(expiries)
            item = self._live.get(key)
            if item is not None and item[1] == expires_at:  # not put again since, with a later expiry
                del self._live[key]

    def __getitem__(self, key: K) -> V:
        return self._live[key][0]

    def __iter__(self) -> Iterator[K]:
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)


def _user_key(user_id: str) -> tuple[str, str]:
    """Messages are keyed by their id, users by this: a tuple is never equal to a string."""
    return ("u", user_id)


def _message_entry(record: dict[str, Any], learned_at: float, deletions: list[list[Any]] | None) -> bytes:
    """What the store keeps for a message: its record, when it was learned and its deletions (a [by, at] pair
    per deleter), encoded together, so that a read touches one object. A copy of exactly its length: the bytes
    orjson returns keep the footprint of its 4 KB buffer (about 4.1 KB of resident memory each when kept,
    against 341 for a copy)."""
    entry = {**record, "learned_at": learned_at}
    if deletions:
        entry["deletions"] = deletions
    return bytes(memoryview(codec.dumps(entry)))


class MemoryStore:
    def __init__(
        self,
        max_entries: int = _DEFAULTS.memory_max_entries,
        *,
        max_bytes: int = _DEFAULTS.memory_max_bytes,
        message_retention: float = _DEFAULTS.message_retention,
        user_max_age: float = _DEFAULTS.user_max_age,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if message_retention <= 0 or user_max_age <= 0:
            raise ValueError("message_retention and user_max_age must be positive")
        self._cache: _Lru[str | tuple[str, str], bytes | tuple[User, float]] = _Lru(max_entries, max_bytes)
        self._message_retention = message_retention
        self._user_max_age = user_max_age
        self._clock = clock
        self._consumers: dict[str, Consumer] = {}
        self._tokens: dict[str, Token] = {}
        self._request_tokens: _Expiring[str, RequestToken] = _Expiring()
        self._basic_users: dict[str, BasicUser] = {}
        self._nonces: _Expiring[tuple[str, str], float] = _Expiring()  # the value: when it expires
        self._pending: _Expiring[str, bytes] = _Expiring()
        # Small ids ([routes] small_ids): never evicted, like credentials; a small id is its list index + 1.
        self._small_by_id: dict[str, int] = {}
        self._id_by_small: list[str] = []

    @property
    def cached_bytes(self) -> int:
        """The approximate size of every cached message and user (credentials are not counted)."""
        return self._cache.bytes

    def _message(self, message_id: str) -> dict[str, Any] | None:
        """A message's decoded entry, unless it is missing or expired (then dropped). Reading a message does
        not make it recent: the gateway reads one to destroy it, and learning it again is what counts."""
        data = self._cache.peek(message_id)
        if data is None:
            return None
        entry = codec.loads(cast(bytes, data))  # a message's key holds its encoded record
        if entry["learned_at"] + self._message_retention <= self._clock():
            self._cache.discard(message_id)
            return None
        return entry

    async def get_message(self, message_id: str) -> DirectMessage | None:
        entry = self._message(message_id)
        return None if entry is None else codec.message_from_record(entry)

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        now = self._clock()
        for message in messages:
            previous = self._message(message.id)
            # Learning a message again refreshes it but never forgets a recorded deletion.
            deletions = previous.get("deletions") if previous is not None else None
            record = codec.message_to_record(message)
            size = len(message.id) + len(codec.dumps(record)) + _DELETION_BYTES * len(deletions or ())
            self._cache.put(message.id, _message_entry(record, now, deletions), size)

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        message = await self.get_message(message_id)
        if message is None:
            return None, {}
        return message, await self.get_users({message.sender_id, message.recipient_id})

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for user_id in user_ids:
            key = _user_key(user_id)
            entry = self._cache.get(key)  # a user read is a use: every destroy reads two
            if entry is None:
                continue
            user, fetched_at = cast("tuple[User, float]", entry)  # a user's key holds (user, fetched at)
            if fetched_at + self._user_max_age <= self._clock():
                self._cache.discard(key)  # expired: purged on read
            else:
                found[user_id] = user
        return found

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        for user in users:
            size = len(user.id) + len(codec.dumps(codec.user_to_record(user)))
            self._cache.put(_user_key(user.id), (user, now), size)

    async def size(self) -> StoreSize:
        """Walks the cache, which ``memory_max_entries`` bounds; a message's age is read from its entry."""
        now = self._clock()
        messages = users = 0
        for _key, value in self._cache.values_by_key():
            if isinstance(value, tuple):  # a user's (user, fetched at); a message's record is bytes
                users += value[1] + self._user_max_age > now
            else:
                messages += codec.loads(value)["learned_at"] + self._message_retention > now
        return StoreSize(messages=messages, users=users)

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        self._mark_deleted(message_id, by)

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        for message_id, by in deletions:
            self._mark_deleted(message_id, by)

    def _mark_deleted(self, message_id: str, by: str | None) -> None:
        entry = self._message(message_id)
        if entry is not None:
            deletions = [pair for pair in entry.pop("deletions", ()) if pair[0] != by]
            deletions.append([by, self._clock()])
            self._cache.replace(message_id, _message_entry(entry, entry["learned_at"], deletions))

    async def get_deletions(self, message_id: str) -> tuple[Deletion, ...]:
        entry = self._message(message_id)
        if entry is None:
            return ()
        return tuple(sorted((Deletion(at=at, by=by) for by, at in entry.get("deletions", ())), key=_when))

    async def get_deletion(self, message_id: str) -> Deletion | None:
        return latest(await self.get_deletions(message_id))

    # Credentials. No method awaits between reading and writing, so each is atomic on the event loop. ----

    async def put_consumer(self, consumer: Consumer) -> None:
        self._consumers[consumer.key] = consumer

    async def get_consumer(self, key: str) -> Consumer | None:
        return self._consumers.get(key)

    async def put_token(self, token: Token) -> None:
        if token.consumer_key not in self._consumers:
            raise ValueError(f"no consumer {token.consumer_key!r}")
        self._tokens[token.token] = token

    async def get_token(self, token: str) -> Token | None:
        return self._tokens.get(token)

    async def put_request_token(self, token: RequestToken) -> None:
        self._request_tokens.put(token.token, token, token.expires_at, self._clock())

    async def get_request_token(self, token: str) -> RequestToken | None:
        return self._request_tokens.find(token, self._clock())

    async def take_request_token(self, token: str) -> RequestToken | None:
        return self._request_tokens.take(token, self._clock())

    async def put_user(self, user: BasicUser) -> None:
        self._basic_users[user.username] = user

    async def get_user(self, username: str) -> BasicUser | None:
        return self._basic_users.get(username)

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        user = self._basic_users.get(username)
        if user is not None:
            self._basic_users[username] = replace(user, grant=grant)

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        if kind == "consumer":
            if self._consumers.pop(key, None) is None:
                return False
            for token in [t.token for t in self._tokens.values() if t.consumer_key == key]:
                del self._tokens[token]
            return True
        if kind == "token":
            return self._tokens.pop(key, None) is not None
        if kind == "user":
            return self._basic_users.pop(key, None) is not None
        raise ValueError(f"unknown credential kind {kind!r}")

    async def list_credentials(self) -> list[CredentialEntry]:
        return credential_entries(
            ((c.key, c.via_upstream_app) for c in self._consumers.values()),
            ((t.token, t.consumer_key, t.mapping) for t in self._tokens.values()),
            ((u.username, u.grant) for u in self._basic_users.values()),
        )

    async def remember_nonce(
        self, scope: str, nonce: str, expires_at: float, *, now: float | None = None, timestamp: int | None = None
    ) -> bool:
        # Kept per scope and nonce, whatever the timestamp: stricter than the contract asks.
        if now is None:
            now = time.time()  # nonces expire on the wall clock their expires_at was computed from
        if self._nonces.find((scope, nonce), now) is not None:
            return False  # live: a replay
        self._nonces.put((scope, nonce), expires_at, expires_at, now)
        return True

    async def small_ids(self, ids: Sequence[str]) -> list[int]:
        smalls = []
        for v2_id in ids:
            small = self._small_by_id.get(v2_id)
            if small is None:
                self._id_by_small.append(v2_id)
                small = self._small_by_id[v2_id] = len(self._id_by_small)
            smalls.append(small)
        return smalls

    async def v2_ids(self, smalls: Iterable[int]) -> dict[int, str]:
        given = len(self._id_by_small)
        return {small: self._id_by_small[small - 1] for small in smalls if 0 < small <= given}

    async def put_pending(self, key: str, record: bytes, expires_at: float) -> None:
        self._pending.put(key, record, expires_at, time.time())

    async def get_pending(self, key: str) -> bytes | None:
        return self._pending.find(key, time.time())

    async def take_pending(self, key: str) -> bytes | None:
        return self._pending.take(key, time.time())

    async def ping(self) -> None:
        return None  # in-process: always answers

    async def close(self) -> None:
        return None
