"""A shared store on Redis, for several gateway replicas behind one load balancer.

Every key starts with a namespaced, versioned prefix (``dmgw:v1:`` unless told otherwise):

    msg:{id}                  a message record (JSON), with a TTL
    del:{id}                  hash: its deletions, deleter -> when, with a TTL
    user:{id}                 a v2 user record (JSON), with a TTL
    consumer:{key}            an OAuth 1.0a consumer's secret (maybe sealed)   (no TTL)
    consumer_via:{key}        present when the consumer acts through the upstream app (no TTL)
    token:{token}             hash: consumer, secret (maybe sealed), and a mapped one's
                              upstream_token, upstream_secret (maybe sealed) or upstream_user (no TTL)
    consumer_tokens:{key}     set of the consumer's token names                 (no TTL)
    request_token:{token}     a pending request token, one record (maybe sealed), until it expires
    basic:{username}          hash: password_hash (scrypt), grant (JSON)        (no TTL)
    nonce:{scope}:{nonce}     when it expires on the gateway's clock; ``:`` and ``%`` in the nonce are %-escaped
    small:next                the last small id given ([routes] small_ids)      (no TTL)
    small:by_id               hash: v2 id -> small id                           (no TTL)
    small:ids                 hash: small id -> v2 id                           (no TTL)
    index:msg, index:user     sorted sets: each live message's (user's) id, scored by when it expires, with a TTL

Cached data expires on its own, so Redis needs no cleanup job; credentials never expire. The TTLs come from
``[store]``: ``message_retention`` for messages and deletions, ``user_max_age`` for users. Message and user
records also carry when they were learned (``learned_at``, ``fetched_at``), and a read past the TTL's age is a
miss even before Redis expires the key (after the TTL was shortened, or with another clock in tests). With an
``encryption_key`` a message record holds ``text_enc``, a Fernet token, instead of ``text``, a grant holds its v2
tokens as Fernet tokens, and a consumer's or token's secret is sealed, 0xFF and a Fernet token (see codec.py).

Every check-then-write on one record (a deletion only for a known message, a nonce accepted once, a request
token taken once, a grant only for a known user) is one Lua script, so replicas cannot interleave. A script names
every key it touches in KEYS, and touches the keys of one record only (or the small-id map's), so it runs on a
Redis Cluster as well. What spans records is done in steps ordered so that concurrent writers still agree in the
end: a token is added to its consumer's set (only while the consumer exists) before its record is written, and
the consumer is checked again after, so a token whose consumer was removed meanwhile goes too; removing a
consumer drops it and its set, then each of its tokens still naming it.

``redis+cluster://HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` for TLS) selects redis-py's cluster client.
There every key puts its record's name in a hash tag, ``msg:{id}``, ``del:{id}`` (the braces are in the key),
so a message and its deletions, or a consumer and its token set and flag, share a hash slot; ``}`` and ``%`` in
a name are %-escaped and an empty name is ``{%}``. The small-id map's keys share the tag ``{map}``
(``small:{map}:next``...). A plain ``redis://`` store keeps the names above, without braces, so existing data
is read as before. Writes of several messages or users, and deletions of several messages, are split per hash
slot by the client (users' pipelines) or by the store (messages' and deletions' scripts); none is atomic as a
whole.

Any Redis failure becomes ``StoreError``, which the service treats as a miss. Each call is bounded as a whole
by ``socket_timeout`` (connecting, every command it sends and every reply), not each send and reply: redis-py's
own socket timeout costs a timer for every reply it reads and, on Python 3.11, a task for every send.

The two index sets let ``size`` count without SCAN: every write of a message or user also sets its id's score
to its expiry, in the same script or pipeline (no extra round trip; on a cluster the index has a slot of its
own, so it goes in a pipeline sent beside the messages' scripts), and ``ZCOUNT`` from now answers in O(log n).
Once a minute (``INDEX_TRIM_INTERVAL``, in each process) such a write also drops the ids already expired and
renews the set's TTL, to the records' TTL and that minute, so a set holds little more than the live records and
goes with the last of them. Records written before the index existed are not counted until written again; they
expire with their TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import unquote

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

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
from gateway.model import DirectMessage, User
from gateway.store import codec
from gateway.store.base import Deletion, Outcome, StoreError, StoreSize, TurnBatch, answer_each, latest

DEFAULT_PREFIX = "dmgw:v1:"
DAY = 24 * 3600

# KEYS: consumer, its token set. ARGV: token. Adds the token to the set while the consumer exists.
_ADD_TOKEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: token. ARGV: consumer key, secret, then the token's mapping as field and value pairs (none for an
# unmapped token). Replaces the record whole; returns the consumer it named before, if any.
_WRITE_TOKEN = """
local previous = redis.call('HGET', KEYS[1], 'consumer')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'consumer', ARGV[1], 'secret', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return previous
"""

# KEYS: token. ARGV: consumer key. Deletes the token if it still belongs to that consumer.
_DROP_TOKEN_OF = """
if redis.call('HGET', KEYS[1], 'consumer') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: consumer, its token set, its via-upstream-app flag. Returns the token names, or nil for no consumer.
_REMOVE_CONSUMER = """
if redis.call('DEL', KEYS[1]) == 0 then return false end
redis.call('DEL', KEYS[3])
local tokens = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return tokens
"""

# KEYS: token. Returns the consumer it belonged to, or nil for no token.
_REMOVE_TOKEN = """
local consumer = redis.call('HGET', KEYS[1], 'consumer')
if not consumer then return false end
redis.call('DEL', KEYS[1])
return consumer
"""

# KEYS: consumer, its via-upstream-app flag. ARGV: secret, "1" when it acts through the upstream app.
_PUT_CONSUMER = """
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1') else redis.call('DEL', KEYS[2]) end
return 0
"""

# KEYS: basic user. ARGV: password hash, grant record. Replaced whole, never merged.
_PUT_BASIC_USER = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'password_hash', ARGV[1], 'grant', ARGV[2])
return 0
"""

# KEYS: a pending request token. Read and deleted at once, so that of concurrent takers only one gets it (the
# script rather than GETDEL, which older servers lack).
_TAKE = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
"""

# KEYS: basic user. ARGV: grant record.
_PUT_GRANT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'grant', ARGV[1]) end
return 0
"""

# A message's deletions are a hash of each deleter ("" for none known) and when it deleted the message. Before,
# a message had one deletion, a JSON string (v, at, by) under the same key: the scripts take it as that hash.

# KEYS: a message's key and its deletions' key, for each deletion; ARGV: the TTL, then each deletion's
# deleter and time.
_MARK_DELETED = """
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local key = KEYS[i + 1]
    if redis.call('TYPE', key).ok == 'string' then
      local old = cjson.decode(redis.call('GET', key))
      redis.call('DEL', key)
      local by = old.by
      if by == cjson.null then by = '' end
      redis.call('HSET', key, by, string.format('%.17g', old.at))
    end
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return 0
"""

# KEYS: a nonce. ARGV: when it expires and now, both on the gateway's clock (epoch seconds), and the Redis TTL
# in milliseconds (0: already expired, store nothing). A live nonce is never replaced. A value of 1 was written
# by earlier versions, which left the expiry to Redis: live for as long as Redis keeps it.
_REMEMBER_NONCE = """
local seen = redis.call('GET', KEYS[1])
if seen then
  local expires = tonumber(seen)
  if seen == '1' or expires == nil or expires > tonumber(ARGV[2]) then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) end
return 1
"""
#: How long past its expiry Redis may keep a nonce: its TTL is only for cleanup, so it errs long.
_NONCE_TTL_SLACK_MS = 60_000
# KEYS: a message's deletions' key. Returns them as deleter, time, deleter, time...
_GET_DELETIONS = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'hash' then return redis.call('HGETALL', KEYS[1]) end
if kind == 'string' then
  local old = cjson.decode(redis.call('GET', KEYS[1]))
  local by = old.by
  if by == cjson.null then by = '' end
  return {by, string.format('%.17g', old.at)}
end
return {}
"""

# KEYS: each message's key and its deletions' key, then, on a single server, the messages' index. ARGV: the
# messages' TTL, the deletions' TTL, the index score (when the messages expire), the score below which the index
# is trimmed ('' for no trim this time) and the index's TTL, then each message's id and record. One command for
# what would be two per message and one for the index.
_LEARN = """
local n = math.floor(#KEYS / 2)
for i = 1, n do
  redis.call('SET', KEYS[2 * i - 1], ARGV[5 + 2 * i], 'EX', ARGV[1])
  redis.call('EXPIRE', KEYS[2 * i], ARGV[2])
end
if #KEYS > 2 * n then
  local index = KEYS[#KEYS]
  for i = 1, n do redis.call('ZADD', index, ARGV[3], ARGV[4 + 2 * i]) end
  if ARGV[4] ~= '' then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[4])
    redis.call('EXPIRE', index, ARGV[5])
  end
end
return 0
"""

# KEYS: the counter, v2 id -> small, small -> v2 id. ARGV: v2 ids. Returns each one's small id, giving the
# next ones, in ARGV's order, to those that have none: one script, so replicas never give one twice.
_SMALL_IDS = """
local out = {}
for i, id in ipairs(ARGV) do
  local small = redis.call('HGET', KEYS[2], id)
  if not small then
    small = redis.call('INCR', KEYS[1])
    redis.call('HSET', KEYS[2], id, small)
    redis.call('HSET', KEYS[3], small, id)
  end
  out[i] = tonumber(small)
end
return out
"""

#: How often (seconds on the store's clock) a write also trims its kind's index set and renews its TTL.
INDEX_TRIM_INTERVAL = 60
IndexArgs = tuple[float, float | str, int]
"""A write's index score, the score below which the index is trimmed ("" for none) and the index's TTL."""

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def redis_client(url: str, **options: Any) -> Redis | RedisCluster:
    """A client for ``url``: ``redis://`` or ``rediss://`` (one server), or
    ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` for TLS), whose nodes
    are where the cluster client starts discovering the cluster."""
    if not is_cluster_url(url):
        return Redis.from_url(url, **options)
    scheme, rest = url.split("://", 1)
    userinfo, _, hosts = rest.partition("/")[0].rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return RedisCluster(
        startup_nodes=nodes,
        ssl=scheme == "rediss+cluster",
        username=unquote(username) or None,
        password=unquote(password) or None,
        **options,
    )


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        message_ttl: int = 30 * DAY,
        user_ttl: int = 7 * DAY,
        deletion_ttl: int = 30 * DAY,
        socket_timeout: float = 2.0,
        encryption_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, ttl in (("message_ttl", message_ttl), ("user_ttl", user_ttl), ("deletion_ttl", deletion_ttl)):
            if int(ttl) < 1:
                raise ValueError(f"{name} must be at least one second, got {ttl!r}")
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        self.cluster = is_cluster_url(url)
        if self.cluster and ("{" in prefix or "}" in prefix):
            raise ValueError("on a Redis Cluster the key prefix must not hold '{' or '}' (keys carry hash tags)")
        self.prefix = prefix
        self.message_ttl = int(message_ttl)
        self.user_ttl = int(user_ttl)
        self.deletion_ttl = int(deletion_ttl)
        self._cipher = codec.cipher_for(encryption_key)
        self._clock = clock
        self._closed = False
        self._index_trimmed: dict[str, float] = {}  # kind -> when this process last trimmed its index
        # Messages asked for with their users in one turn of the event loop, read together at its end; and
        # the reads under way, held here until they answer.
        self._wanted: TurnBatch[str, tuple[DirectMessage | None, dict[str, User]]] = TurnBatch(self._read_wanted)
        self._reading: set[asyncio.Task[None]] = set()
        self._call_timeout = socket_timeout  # a whole call's bound (see ``_guard``)
        try:
            # One quick retry heals a pooled connection the server dropped; a dead server fails within seconds.
            self._client: Any = redis_client(
                url,
                socket_timeout=None,  # not redis-py's default: each call is bounded as a whole instead
                socket_connect_timeout=socket_timeout,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
            )
        except (ValueError, TypeError) as exc:
            raise StoreError(f"redis: bad store URL ({exc.__class__.__name__})") from None
        self._add_token = self._client.register_script(_ADD_TOKEN)
        self._write_token = self._client.register_script(_WRITE_TOKEN)
        self._drop_token_of = self._client.register_script(_DROP_TOKEN_OF)
        self._remove_consumer = self._client.register_script(_REMOVE_CONSUMER)
        self._remove_token = self._client.register_script(_REMOVE_TOKEN)
        self._put_consumer = self._client.register_script(_PUT_CONSUMER)
        self._put_basic_user = self._client.register_script(_PUT_BASIC_USER)
        self._take = self._client.register_script(_TAKE)
        self._put_grant = self._client.register_script(_PUT_GRANT)
        self._mark_deleted = self._client.register_script(_MARK_DELETED)
        self._remember_nonce = self._client.register_script(_REMEMBER_NONCE)
        self._get_deletions = self._client.register_script(_GET_DELETIONS)
        self._small_ids = self._client.register_script(_SMALL_IDS)
        self._learn = self._client.register_script(_LEARN)

    @classmethod
    async def open(cls, url: str, **options: Any) -> RedisStore:
        """A store whose server answered a PING: an unreachable Redis fails here, at start-up. The script that
        writes learned messages is loaded then (on a cluster, on every primary): a store-miss destroy's first
        write is then one command sent at once, not a refused one, a load and a second try, so a replica asked
        for the message next already reads it."""
        store = cls(url, **options)
        try:
            async with store._guard():
                await store._client.ping()
                await store._client.script_load(_LEARN)
        except BaseException:
            await store.close()
            raise
        return store

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """One call to Redis: within ``socket_timeout`` in all, and any failure a ``StoreError``. (A call cut
        short leaves no reply behind: redis-py drops a connection whose read was cancelled.)"""
        if self._closed:
            raise StoreError("redis store is closed")
        try:
            async with asyncio.timeout(self._call_timeout):
                yield
        except TimeoutError as exc:
            raise StoreError(f"redis: no answer within {self._call_timeout}s") from exc
        except (RedisError, RedisClusterException, OSError) as exc:  # the cluster's own errors are apart
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc

    def _key(self, kind: str, name: str) -> str:
        if self.cluster:
            return f"{self.prefix}{kind}:{{{_tag(name)}}}"
        return f"{self.prefix}{kind}:{name}"

    def _small_key(self, name: str) -> str:
        """A key of the small-id map: one counter numbers every id, so on a cluster its keys share one tag."""
        return f"{self.prefix}small:{{map}}:{name}" if self.cluster else self._key("small", name)

    def _by_slot(self, items: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
        """``items`` (key, value) in groups whose keys share a hash slot: one group on a single server."""
        if not self.cluster:
            return [items]
        groups: dict[int, list[tuple[str, Any]]] = defaultdict(list)
        for key, value in items:
            groups[key_slot(key.encode())].append((key, value))
        return list(groups.values())

    # Messages and users ----------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> DirectMessage | None:
        async with self._guard():
            data = await self._client.get(self._key("msg", message_id))
        return None if data is None else _decode(self._message, data)

    def _message(self, record: dict[str, Any]) -> DirectMessage | None:
        if _older_than(record.get("learned_at"), self.message_ttl, self._clock()):
            return None
        return codec.read_message(record, self._cipher)

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        """One script writes the messages, renews their recorded deletions (a deletion lives on while its
        message is remembered; EXPIRE skips a missing key) and adds them to the index. On a cluster, one
        script per hash slot, and the index, in a slot of its own, by a pipeline beside them."""
        now = self._clock()
        items = [(self._key("msg", m.id), (m.id, codec.dumps(self._message_record(m, now)))) for m in messages]
        if not items:
            return
        ttls = [self.message_ttl, max(self.deletion_ttl, self.message_ttl)]
        index = self._index_args("msg", self.message_ttl, now)

        def learn(group: list[tuple[str, tuple[str, bytes]]], *index_key: str) -> Awaitable[Any]:
            """``_LEARN`` for ``group``: each message's key and its deletions' key, then each id and record."""
            keys = [
                key for message_key, (message_id, _) in group for key in (message_key, self._key("del", message_id))
            ]
            records = [value for _, id_and_record in group for value in id_and_record]
            return self._learn(keys=[*keys, *index_key], args=[*ttls, *index, *records])

        async with self._guard():
            if not self.cluster:
                await learn(items, self._key("index", "msg"))
                return
            async with self._client.pipeline(transaction=False) as pipe:
                self._index(pipe, "msg", [message_id for _, (message_id, _) in items], index)
                await asyncio.gather(pipe.execute(), *map(learn, self._by_slot(items)))

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        """The message and its users (every destroy's read). The calls made in one turn of the event loop are
        answered together after it: one MGET of all their messages, then one of all their users, where each
        alone cost a round trip or two, and a round trip costs the gateway more CPU than the keys it reads
        (docs/PERFORMANCE.md). A record that cannot be read fails its own caller only."""
        if self._closed:
            raise StoreError("redis store is closed")
        return await self._wanted.ask(message_id)

    def _read_wanted(
        self, callers: list[tuple[str, asyncio.Future[tuple[DirectMessage | None, dict[str, User]]]]]
    ) -> None:
        """Start the read for the callers of ``get_message_with_users`` still waiting."""
        reading = asyncio.ensure_future(self._answer_wanted(callers))
        self._reading.add(reading)
        reading.add_done_callback(self._reading.discard)

    async def _answer_wanted(
        self, callers: list[tuple[str, asyncio.Future[tuple[DirectMessage | None, dict[str, User]]]]]
    ) -> None:
        outcomes: list[Outcome]
        try:
            outcomes = await self._messages_with_users([message_id for message_id, _ in callers])
        except Exception as exc:  # noqa: BLE001 - Redis failing (StoreError), or anything else, is every caller's
            outcomes = [(False, exc)] * len(callers)
        answer_each(callers, outcomes)

    async def _messages_with_users(self, message_ids: list[str]) -> list[Outcome]:
        """For each id, (True, (the message or None if not kept, its users)), or (False, the ``StoreError`` of a
        record that cannot be read: the message's, or one of its users'); Redis failing is raised for all."""
        async with self._guard():
            values = await self._mget([self._key("msg", message_id) for message_id in message_ids])
        messages = [_decoded(self._message, data) for data in values]
        user_ids = sorted({i for m in messages if isinstance(m, DirectMessage) for i in (m.sender_id, m.recipient_id)})
        users = await self._users(user_ids)
        outcomes: list[Outcome] = []
        for message in messages:
            if not isinstance(message, DirectMessage):
                outcomes.append((True, (None, {})) if message is None else (False, message))
                continue
            pair = {i: users.get(i) for i in (message.sender_id, message.recipient_id)}
            unreadable = next((user for user in pair.values() if isinstance(user, StoreError)), None)
            if unreadable is not None:
                outcomes.append((False, unreadable))
            else:
                outcomes.append((True, (message, {i: u for i, u in pair.items() if isinstance(u, User)})))
        return outcomes

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for user_id, user in (await self._users(sorted(set(user_ids)))).items():
            if isinstance(user, StoreError):
                raise user
            if user is not None:
                found[user_id] = user
        return found

    async def _users(self, ids: list[str]) -> dict[str, User | StoreError | None]:
        """Each of ``ids`` that is kept: its user, or None past its age, or the ``StoreError`` of a record that
        cannot be read."""
        if not ids:
            return {}
        async with self._guard():
            values = await self._mget([self._key("user", user_id) for user_id in ids])
        return {
            user_id: _decoded(self._user, data) for user_id, data in zip(ids, values, strict=True) if data is not None
        }

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        # A cluster's client splits the read per slot; MGET itself needs every key in one slot.
        return cast(
            list[bytes | None], await (self._client.mget_nonatomic(keys) if self.cluster else self._client.mget(keys))
        )

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        records = [(u.id, codec.dumps({**codec.user_to_record(u), "fetched_at": now})) for u in users]
        if not records:
            return
        async with self._guard(), self._client.pipeline(transaction=False) as pipe:
            for user_id, record in records:
                pipe.set(self._key("user", user_id), record, ex=self.user_ttl)
            self._index(pipe, "user", [user_id for user_id, _ in records], self._index_args("user", self.user_ttl, now))
            await pipe.execute()

    def _index_args(self, kind: str, ttl: int, now: float) -> IndexArgs:
        """How records of ``kind`` written now, to live ``ttl`` seconds, go into its index: their score (when
        they expire); and, once per ``INDEX_TRIM_INTERVAL``, the score below which ids leave it (now: they have
        expired) and the set's TTL, renewed past every record written until the next renewal, so an idle store
        keeps no stale index for long. Otherwise no trim ("") this time."""
        if now - self._index_trimmed.get(kind, -math.inf) < INDEX_TRIM_INTERVAL:
            return now + ttl, "", 0
        self._index_trimmed[kind] = now
        return now + ttl, now, ttl + INDEX_TRIM_INTERVAL

    def _index(self, pipe: Any, kind: str, ids: list[str], index: IndexArgs) -> None:
        """Queue on ``pipe`` what ``_index_args`` said for ``ids``."""
        key = self._key("index", kind)
        score, trim_below, index_ttl = index
        pipe.zadd(key, dict.fromkeys(ids, score))
        if trim_below != "":
            pipe.zremrangebyscore(key, "-inf", trim_below)
            pipe.expire(key, index_ttl)

    async def size(self) -> StoreSize:
        """Two ZCOUNTs of the index sets from now on: O(log n), in one round trip."""
        now = self._clock()
        async with self._guard(), self._client.pipeline(transaction=False) as pipe:
            pipe.zcount(self._key("index", "msg"), f"({now!r}", "+inf")
            pipe.zcount(self._key("index", "user"), f"({now!r}", "+inf")
            messages, users = await pipe.execute()
        return StoreSize(messages=int(messages), users=int(users))

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        await self.mark_deleted_many([(message_id, by)])

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        """One script for all of them (on a cluster, one for each hash slot): one round trip, and each
        deletion lands only on a message still there, as the script checks and writes with nothing in between.
        A message's deletions share one TTL, renewed by each new one."""
        if not deletions:
            return
        at = repr(float(self._clock()))
        items = [(self._key("msg", message_id), (message_id, by)) for message_id, by in deletions]
        async with self._guard():
            for group in self._by_slot(items):
                keys: list[str] = []
                args: list[Any] = [self.deletion_ttl]
                for message_key, (message_id, by) in group:
                    keys += (message_key, self._key("del", message_id))
                    args += (by or "", at)
                await self._mark_deleted(keys=keys, args=args)

    def _message_record(self, message: DirectMessage, now: float) -> dict[str, Any]:
        return {**codec.message_to_record(message, self._cipher), "learned_at": now}

    def _user(self, record: dict[str, Any]) -> User | None:
        if _older_than(record.get("fetched_at"), self.user_ttl, self._clock()):
            return None
        return codec.user_from_record(record)

    async def get_deletions(self, message_id: str) -> tuple[Deletion, ...]:
        async with self._guard():
            flat = await self._get_deletions(keys=[self._key("del", message_id)])
        try:
            pairs = zip(flat[::2], flat[1::2], strict=True)
            found = [Deletion(at=float(at), by=_text(by) or None) for by, at in pairs]
        except (ValueError, TypeError) as exc:
            raise StoreError(f"redis: unreadable deletions ({exc.__class__.__name__})") from None
        return tuple(sorted(found, key=lambda deletion: deletion.at))

    async def get_deletion(self, message_id: str) -> Deletion | None:
        return latest(await self.get_deletions(message_id))

    # Credentials -----------------------------------------------------------------------------------

    async def put_consumer(self, consumer: Consumer) -> None:
        keys = [self._key("consumer", consumer.key), self._key("consumer_via", consumer.key)]
        args = [codec.seal(consumer.secret, self._cipher), "1" if consumer.via_upstream_app else "0"]
        async with self._guard():
            await self._put_consumer(keys=keys, args=args)

    async def get_consumer(self, key: str) -> Consumer | None:
        async with self._guard():
            secret, via = await self._client.mget(self._key("consumer", key), self._key("consumer_via", key))
        if secret is None:
            return None
        return Consumer(key=key, secret=self._secret(secret, f"consumer {key!r}"), via_upstream_app=via is not None)

    async def put_token(self, token: Token) -> None:
        """Joins the consumer's set (while the consumer exists), then writes the record, then checks the
        consumer once more: a consumer removed in between takes the token with it, here or in its removal."""
        consumer = [self._key("consumer", token.consumer_key), self._key("consumer_tokens", token.consumer_key)]
        key = self._key("token", token.token)
        args = [token.consumer_key, codec.seal(token.secret, self._cipher)]
        if token.upstream_token is not None and token.upstream_secret is not None:
            args += ["upstream_token", token.upstream_token]
            args += ["upstream_secret", codec.seal(token.upstream_secret, self._cipher)]
        if token.upstream_user is not None:
            args += ["upstream_user", token.upstream_user]
        async with self._guard():
            if not await self._add_token(keys=consumer, args=[token.token]):
                raise ValueError(f"no consumer {token.consumer_key!r}")
            previous = await self._write_token(keys=[key], args=args)
            if previous is not None and _text(previous) != token.consumer_key:
                await self._client.srem(self._key("consumer_tokens", _text(previous)), token.token)
            if not await self._client.exists(consumer[0]):
                await self._drop_token_of(keys=[key], args=[token.consumer_key])
                raise ValueError(f"no consumer {token.consumer_key!r}")

    async def get_token(self, token: str) -> Token | None:
        async with self._guard():
            fields = await self._client.hgetall(self._key("token", token))
        if not fields:
            return None
        try:
            consumer_key, secret = _text(fields[b"consumer"]), fields[b"secret"]
        except KeyError as exc:
            raise StoreError(f"redis: token record without {exc}") from None
        upstream_token, upstream_secret = fields.get(b"upstream_token"), fields.get(b"upstream_secret")
        upstream_user = fields.get(b"upstream_user")
        return Token(
            token=token,
            consumer_key=consumer_key,
            secret=self._secret(secret, f"token {token!r}"),
            upstream_token=None if upstream_token is None else _text(upstream_token),
            upstream_secret=None if upstream_secret is None else self._secret(upstream_secret, f"token {token!r}"),
            upstream_user=None if upstream_user is None else _text(upstream_user),
        )

    async def put_request_token(self, token: RequestToken) -> None:
        ttl_ms = max(1, int((token.expires_at - self._clock()) * 1000))
        async with self._guard():
            await self._client.set(
                self._key("request_token", token.token), codec.seal_request_token(token, self._cipher), px=ttl_ms
            )

    async def get_request_token(self, token: str) -> RequestToken | None:
        async with self._guard():
            stored = await self._client.get(self._key("request_token", token))
        return self._request_token(stored, token)

    async def take_request_token(self, token: str) -> RequestToken | None:
        async with self._guard():
            stored = await self._take(keys=[self._key("request_token", token)])
        return self._request_token(stored, token)

    def _request_token(self, stored: bytes | str | None, token: str) -> RequestToken | None:
        if stored is None:
            return None
        with codec.opened(f"redis: request token {token!r}"):
            found = codec.unseal_request_token(stored, self._cipher)
        return found if found.expires_at > self._clock() else None

    async def put_user(self, user: BasicUser) -> None:
        args: list[str | bytes] = [user.password_hash, self._grant_record(user.grant)]
        async with self._guard():
            await self._put_basic_user(keys=[self._key("basic", user.username)], args=args)

    async def get_user(self, username: str) -> BasicUser | None:
        async with self._guard():
            fields = await self._client.hgetall(self._key("basic", username))
        if not fields:
            return None
        try:
            password_hash = _text(fields[b"password_hash"])
            grant = fields[b"grant"]
        except KeyError as exc:
            raise StoreError(f"redis: basic user record without {exc}") from None
        return BasicUser(username=username, password_hash=password_hash, grant=self._grant(grant, username))

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        record = self._grant_record(grant)
        async with self._guard():
            await self._put_grant(keys=[self._key("basic", username)], args=[record])

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        async with self._guard():
            if kind == "consumer":
                keys = [self._key("consumer", key), self._key("consumer_tokens", key), self._key("consumer_via", key)]
                tokens = await self._remove_consumer(keys=keys)
                if tokens is None:
                    return False
                for token in tokens:  # a token moved to another consumer meanwhile stays
                    await self._drop_token_of(keys=[self._key("token", _text(token))], args=[key])
                return True
            if kind == "token":
                consumer = await self._remove_token(keys=[self._key("token", key)])
                if consumer is None:
                    return False
                await self._client.srem(self._key("consumer_tokens", _text(consumer)), key)
                return True
            if kind == "user":
                return bool(await self._client.delete(self._key("basic", key)))
        raise ValueError(f"unknown credential kind {kind!r}")

    async def list_credentials(self) -> list[CredentialEntry]:
        async with self._guard():
            consumers = await self._names("consumer")
            token_names = await self._names("token")
            usernames = await self._names("basic")
            async with self._client.pipeline(transaction=False) as pipe:
                for name in consumers:
                    pipe.exists(self._key("consumer_via", name))
                for name in token_names:
                    pipe.hmget(self._key("token", name), "consumer", "upstream_token", "upstream_user")
                for name in usernames:
                    pipe.hget(self._key("basic", name), "grant")
                values = await pipe.execute()
        # A key removed between the scan and the reads is simply left out.
        via, values = values[: len(consumers)], values[len(consumers) :]
        owners, grants = values[: len(token_names)], values[len(token_names) :]
        tokens = [
            (name, _text(owner), _mapping(name, owner, mapped_to, user))
            for name, (owner, mapped_to, user) in zip(token_names, owners, strict=True)
            if owner is not None
        ]
        users = [
            (name, self._grant(grant, name)) for name, grant in zip(usernames, grants, strict=True) if grant is not None
        ]
        return credential_entries(zip(consumers, map(bool, via), strict=True), tokens, users)

    def _secret(self, stored: bytes | str, what: str) -> str:
        """The secret a consumer's or token's value holds; one that cannot be read is a ``StoreError`` naming
        ``what`` (never the secret), not a missing credential."""
        with codec.opened(f"redis: the secret of {what}"):
            return codec.unseal(stored, self._cipher)

    def _grant_record(self, grant: OAuth2Grant) -> bytes:
        return codec.dumps(codec.grant_to_record(grant, self._cipher))

    def _grant(self, data: bytes | str, username: str) -> OAuth2Grant:
        with codec.opened(f"redis: the upstream grant of user {username!r}"):
            return _decode(lambda record: codec.grant_from_record(record, self._cipher), data)

    async def _names(self, kind: str) -> list[str]:
        """The names after ``{prefix}{kind}:`` of every such key, found with SCAN (never KEYS); on a cluster,
        the client's SCAN visits every primary, and the name comes out of its hash tag."""
        start = f"{self.prefix}{kind}:"
        pattern = _GLOB_SPECIAL.sub(r"\\\1", start) + "*"
        names = set()
        async for key in self._client.scan_iter(match=pattern, count=500):
            name = _text(key)[len(start) :]
            names.add(_untag(name[1:-1]) if self.cluster else name)
        return sorted(names)

    async def remember_nonce(
        self, scope: str, nonce: str, expires_at: float, *, now: float | None = None, timestamp: int | None = None
    ) -> bool:
        # Kept per scope and nonce, whatever the timestamp: stricter than the contract asks.
        key = self._key("nonce", f"{scope}:{nonce.replace('%', '%25').replace(':', '%3A')}")
        if now is None:
            now = time.time()
        # The check and the write are one script, so replicas cannot interleave. Whether the nonce is live is
        # decided by the gateway's clock (the expiry is the value, compared with ``now``); Redis's TTL, the
        # nonce's remaining life plus a minute, only lets Redis drop it some time after it died.
        life_ms = max(0, math.ceil((expires_at - now) * 1000))
        ttl_ms = life_ms + _NONCE_TTL_SLACK_MS if life_ms else 0
        async with self._guard():
            accepted = await self._remember_nonce(keys=[key], args=[repr(float(expires_at)), repr(float(now)), ttl_ms])
        return bool(accepted)

    async def small_ids(self, ids: Sequence[str]) -> list[int]:
        if not ids:
            return []
        keys = [self._small_key(name) for name in ("next", "by_id", "ids")]
        async with self._guard():
            smalls = await self._small_ids(keys=keys, args=list(ids))
        return [int(small) for small in smalls]

    async def v2_ids(self, smalls: Iterable[int]) -> dict[int, str]:
        wanted = sorted({small for small in smalls if small > 0})
        if not wanted:
            return {}
        async with self._guard():
            values = await self._client.hmget(self._small_key("ids"), [str(small) for small in wanted])
        return {small: _text(value) for small, value in zip(wanted, values, strict=True) if value is not None}

    async def put_pending(self, key: str, record: bytes, expires_at: float) -> None:
        life_ms = math.ceil((expires_at - time.time()) * 1000)
        if life_ms <= 0:
            return
        async with self._guard():
            await self._client.set(self._key("pending", key), record, px=life_ms)

    async def get_pending(self, key: str) -> bytes | None:
        async with self._guard():
            record = await self._client.get(self._key("pending", key))
        return cast("bytes | None", record)  # replies are bytes: the client does not decode them

    async def take_pending(self, key: str) -> bytes | None:
        async with self._guard():
            record = await self._client.getdel(self._key("pending", key))
        return cast("bytes | None", record)  # replies are bytes: the client does not decode them

    async def ping(self) -> None:
        async with self._guard():
            await self._client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closing a client whose server vanished has nothing left to release.
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self._client.aclose()


def _mapping(name: str, owner: bytes, upstream_token: bytes | None, upstream_user: bytes | None) -> str:
    user = None if upstream_user is None else _text(upstream_user)
    return Token(name, _text(owner), "", None if upstream_token is None else _text(upstream_token), None, user).mapping


def _tag(name: str) -> str:
    """``name`` as a hash tag's content: never empty, and with no ``}`` to end the tag early."""
    return name.replace("%", "%25").replace("}", "%7D") or "%"


def _untag(tag: str) -> str:
    return "" if tag == "%" else tag.replace("%7D", "}").replace("%25", "%")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _older_than(stamp: Any, max_age: int, now: float) -> bool:
    """True when ``stamp`` (a learned-at time; None in records from before it was kept) is ``max_age`` old."""
    return isinstance(stamp, int | float) and stamp + max_age <= now


def _decoded(build: Any, data: bytes | str | None) -> Any:
    """``_decode`` of a value that may be missing (None), with a record that cannot be read as its error."""
    if data is None:
        return None
    try:
        return _decode(build, data)
    except StoreError as exc:
        return exc


def _decode(build: Any, data: bytes | str) -> Any:
    try:
        return build(orjson.loads(data))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:  # not a record
        raise StoreError(f"redis: unreadable record ({exc.__class__.__name__})") from None
