"""The store failing under a running gateway: Redis going away and coming back, an SQLite file that stops
answering, a writer killed with SIGKILL, and learning racing destroys. A store fault is a cache miss, never
an outage and never a wrong answer; once the fault is gone the store is used again without a restart."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.emulator import EmulatorServer, FaultRule
from gateway.keys import SERVICE_KEY
from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url
from gateway.store.base import Store, StoreError
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from gateway.upstream.client import DM_EVENT_FIELDS, USER_FIELDS
from gateway.upstream.convert import message_from_v2
from tests.conftest import (
    ENTITIES_ID,
    HOSTILE_TEXT_ID,
    MICK_TOKEN,
    PLAIN_IDS,
    SEAN_TOKEN,
    SEED_002_ID,
    XDEV_TOKEN,
    GatewayFactory,
    settled,
)
from tests.relay import TcpRelay
from tests.relay import relayed_redis_store as relayed_store

SEAN_ID = "38895958"
MICK_ID = "776627022"
XDEV_ID = "2244994945"
FULL_QUERY = f"dm_event.fields={DM_EVENT_FIELDS}&expansions=sender_id,participant_ids&user.fields={USER_FIELDS}"
ROOT = Path(__file__).resolve().parent.parent


def upstream_calls(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# 1. Redis goes away and comes back ----------------------------------------------------------------------


@pytest.fixture
async def relayed_redis_store(redis_url: str) -> AsyncIterator[tuple[RedisStore, TcpRelay]]:
    async with relayed_store(redis_url, socket_timeout=1) as pair:
        yield pair


# A delete that fails: the first attempt and the gateway's retries of it (upstream.retries, 2 by default).
FAIL_ONE_DELETE = 3


async def test_redis_outage_destroys_from_upstream_and_the_store_returns_without_restart(
    make_gateway: GatewayFactory, emulator: EmulatorServer, relayed_redis_store: tuple[RedisStore, TcpRelay]
) -> None:
    store, relay = relayed_redis_store
    client = await make_gateway(store=store)

    relay.cut()
    with pytest.raises(StoreError):
        await store.get_message(SEED_002_ID)  # the outage is real: the store cannot answer

    response = await client.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert response.status == 200, await response.text()
    body = orjson.loads(await response.read())
    assert (body["id_str"], body["text"]) == (SEED_002_ID, "hello, tworld.")
    assert (body["sender_id_str"], body["recipient_id_str"]) == (MICK_ID, SEAN_ID)
    assert (body["sender"]["screen_name"], body["recipient"]["screen_name"]) == ("s0c1alm3dia", "theSeanCook")
    calls = upstream_calls(emulator)
    assert calls[0] == ("GET", f"/2/dm_events/{SEED_002_ID}")  # the body was built before the delete
    assert calls[-1] == ("DELETE", f"/2/dm_events/{SEED_002_ID}")
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)
    assert relay.refused > 0

    await settled(client)  # what the destroy left to write after its answer, tried while Redis is away
    relay.restore()  # same gateway, same store object: no restart
    assert await store.get_message(SEED_002_ID) is None  # nothing was written during the outage

    # Learn a message through a delete that fails upstream: the lookup lands in the store again.
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    failed = await client.post(f"/1.1/direct_messages/destroy.json?id={PLAIN_IDS[0]}")
    assert failed.status == 503
    learned = await (await settled(client)).get_message(PLAIN_IDS[0])
    assert learned is not None and learned.text == "second message" and learned.recipient_id == MICK_ID
    assert set(await store.get_users([SEAN_ID, MICK_ID])) == {SEAN_ID, MICK_ID}

    emulator.state.requests.clear()
    second = await client.post(f"/1.1/direct_messages/destroy.json?id={PLAIN_IDS[0]}")
    assert second.status == 200, await second.text()
    body = orjson.loads(await second.read())
    assert (body["id_str"], body["text"], body["sender_id_str"]) == (PLAIN_IDS[0], "second message", SEAN_ID)
    # From the store, for a participant: whom the caller acts for is asked once.
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{PLAIN_IDS[0]}")]
    await client.server.app[SERVICE_KEY].drain()  # the deletion is recorded after the answer
    assert await store.get_deletion(PLAIN_IDS[0]) is not None


# 2. The SQLite file stops answering ---------------------------------------------------------------------


class FailingConnection:
    """Stands in for the store's ``sqlite3.Connection`` and, while ``failing``, answers every statement with
    SQLite's own ``disk I/O error``, as a file on a disk that went bad or a network mount that dropped would.

    Why this and not the file itself: the tests may run as root, where taking the permissions away blocks
    nothing, and the store keeps its connections open for its life, so moving or replacing the file would
    never reach them (the open descriptors still name the old inode). The fault therefore sits at the two
    boundaries every store call crosses, the worker thread's read-write connection and the event loop's
    read-only one, and raises exactly what sqlite3 raises for an unreadable file; the store's own error
    handling does the rest."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.failing = True
        self.raised = 0

    def _check(self) -> None:
        if self.failing:
            self.raised += 1
            raise sqlite3.OperationalError("disk I/O error")

    def execute(self, *args: Any) -> sqlite3.Cursor:
        self._check()
        return self.real.execute(*args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        self._check()
        return self.real.executemany(*args)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    @property
    def total_changes(self) -> int:  # read after a commit (a checkpoint may be due)
        return self.real.total_changes

    def close(self) -> None:
        self.real.close()


async def test_sqlite_file_failing_mid_run_destroys_from_upstream_and_recovers(
    make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "faulty.sqlite3"
    client = await make_gateway(store_url=f"sqlite:///{path}")
    store = await settled(client)
    assert isinstance(store, SQLiteStore)

    # Before the fault: ENTITIES_ID is learned through a failed delete.
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    assert (await client.post(f"/1.1/direct_messages/destroy.json?id={ENTITIES_ID}")).status == 503
    assert await (await settled(client)).get_message(ENTITIES_ID) is not None

    real, real_reader = store._worker.db, store._loop_db
    assert real is not None and real_reader is not None
    fault, reader_fault = FailingConnection(real), FailingConnection(real_reader)
    store._worker.db = fault  # type: ignore[assignment]
    store._loop_db = store._writer.db = reader_fault  # type: ignore[assignment]
    try:
        emulator.state.requests.clear()
        # A stored message cannot be read now: the body comes from v2, the delete still happens.
        response = await client.post(f"/1.1/direct_messages/destroy.json?id={ENTITIES_ID}")
        assert response.status == 200, await response.text()
        body = orjson.loads(await response.read())
        assert (body["id_str"], body["sender_id_str"], body["recipient_id_str"]) == (ENTITIES_ID, XDEV_ID, SEAN_ID)
        assert body["text"] == "Ship it #v2 https://t.co/abc123 @theSeanCook"
        assert upstream_calls(emulator)[0] == ("GET", f"/2/dm_events/{ENTITIES_ID}")
        assert upstream_calls(emulator)[-1] == ("DELETE", f"/2/dm_events/{ENTITIES_ID}")
        assert emulator.state.is_deleted_for(ENTITIES_ID, SEAN_ID)

        response = await client.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
        assert response.status == 200, await response.text()
        assert orjson.loads(await response.read())["text"] == "hello, tworld."
        assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)
        assert fault.raised > 0 and reader_fault.raised > 0
        with pytest.raises(StoreError, match="disk I/O error"):
            await store.get_message(ENTITIES_ID)
        await settled(client)  # what the destroys left to write after their answers, tried on the failing disk
    finally:
        fault.failing = reader_fault.failing = False  # the disk is back: the same connections work again

    # Nothing the fault swallowed was half-written; what was stored before is intact.
    assert await store.get_message(SEED_002_ID) is None
    assert await store.get_deletion(ENTITIES_ID) is None
    assert (await store.get_message(ENTITIES_ID)) is not None

    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    assert (await client.post(f"/1.1/direct_messages/destroy.json?id={PLAIN_IDS[1]}")).status == 503
    assert (await (await settled(client)).get_message(PLAIN_IDS[1])) is not None
    emulator.state.requests.clear()
    response = await client.post(f"/1.1/direct_messages/destroy.json?id={PLAIN_IDS[1]}")
    assert response.status == 200, await response.text()
    assert orjson.loads(await response.read())["text"] == "third message"
    # From the store, for a participant: whom the caller acts for is asked once.
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{PLAIN_IDS[1]}")]
    assert await store.get_deletion(PLAIN_IDS[1]) is not None

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()


# 3. SIGKILL while writing -------------------------------------------------------------------------------


def numbered_message(i: int) -> DirectMessage:
    """Message ``i`` of the kill test: varied text, offsets and entities, so a torn record would show."""
    text = f"message {i} #tag{i} https://t.co/{i} @user{i} ünï 😀 " + "x" * (i % 97)
    return DirectMessage(
        id=str(10_000_000 + i),
        text=text,
        created_at=datetime(2021, 1, 1, tzinfo=UTC) + timedelta(seconds=i, microseconds=i % 1000),
        sender_id=str(100 + i % 7),
        recipient_id=str(200 + i % 5),
        conversation_id=f"{100 + i % 7}-{200 + i % 5}",
        entities=Entities(
            hashtags=(Hashtag(f"tag{i}", 0, 3 + i % 5),),
            urls=(Url(f"https://t.co/{i}", f"https://example.com/{i}" if i % 2 else None, None, 4, 9),),
            mentions=(Mention(f"user{i}", str(i) if i % 3 else None, 10, 15),),
        ),
    )


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.store.sqlite import SQLiteStore
    from tests.test_store_faults import numbered_message

    async def main(path):
        store = await SQLiteStore.open(path)
        for i in range(1_000_000):
            await store.put_messages([numbered_message(i)])
            print(f"acked {i}", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_sigkill_loses_no_acknowledged_write_and_leaves_the_file_sound(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(  # noqa: ASYNC220 - read line by line below, killed mid-write
        [sys.executable, "-c", _WRITER, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        while len(acked) < 50:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(int(line.split()[1]))
        assert len(acked) >= 50, child.stderr.read() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        # Acks already in the pipe when the kill landed were acknowledged too.
        acked.extend(int(line.split()[1]) for line in child.stdout if line.startswith("acked "))
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL, "the writer finished instead of being killed"
    assert acked == list(range(len(acked)))

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    store = await SQLiteStore.open(str(path))
    try:
        for i in acked:
            assert await store.get_message(str(10_000_000 + i)) == numbered_message(i)
    finally:
        await store.close()


# 4. Learning races destroying ---------------------------------------------------------------------------

# Each message with the two participants who may delete it (both will), as (token, user id).
RACED = {
    SEED_002_ID: ((SEAN_TOKEN, SEAN_ID), (MICK_TOKEN, MICK_ID)),
    PLAIN_IDS[0]: ((SEAN_TOKEN, SEAN_ID), (MICK_TOKEN, MICK_ID)),
    PLAIN_IDS[1]: ((SEAN_TOKEN, SEAN_ID), (MICK_TOKEN, MICK_ID)),
    ENTITIES_ID: ((SEAN_TOKEN, SEAN_ID), (XDEV_TOKEN, XDEV_ID)),
    HOSTILE_TEXT_ID: ((SEAN_TOKEN, SEAN_ID), (XDEV_TOKEN, XDEV_ID)),
}


async def v2_copies(emulator: EmulatorServer) -> dict[str, DirectMessage]:
    """Each raced message as v2 describes it, read straight from the emulator."""
    copies = {}
    async with aiohttp.ClientSession() as session:
        for message_id, ((token, _), _) in RACED.items():
            async with session.get(f"{emulator.url}/2/dm_events/{message_id}?{FULL_QUERY}", headers=bearer(token)) as r:
                assert r.status == 200
                message = message_from_v2((await r.json())["data"])
            assert message is not None
            copies[message_id] = message
    return copies


async def test_concurrent_learning_and_destroying_never_gives_a_wrong_body(
    make_gateway: GatewayFactory, emulator: EmulatorServer, shared_store: Store
) -> None:
    """Legacy destroys (each message by both its participants), pass-through GETs that learn the same
    messages, and direct writes of earlier-learned copies, all at once. "Stale" copies have v2's content
    (what a replica learned a moment ago): the store cannot know data it was never told changed, but it must
    never mix one message's record into another's, forget a deletion when a message is learned again, or
    leave anything but v2's data behind."""
    client = await make_gateway(store=shared_store)
    expected = await v2_copies(emulator)
    rng = random.Random(20240611)
    answered: list[tuple[str, dict[str, Any]]] = []

    async def pause() -> None:
        await asyncio.sleep(rng.random() * 0.01)

    async def destroy(message_id: str, token: str) -> None:
        await pause()
        response = await client.post(f"/1.1/direct_messages/destroy.json?id={message_id}", headers=bearer(token))
        assert response.status == 200, await response.text()
        answered.append((message_id, orjson.loads(await response.read())))

    async def read_through(message_id: str, token: str) -> None:
        await pause()
        response = await client.get(f"/2/dm_events/{message_id}?{FULL_QUERY}", headers=bearer(token))
        assert response.status in (200, 404), await response.text()  # 404 once this caller deleted it
        if response.status == 200:
            assert (await response.json())["data"]["id"] == message_id

    async def put_stale(ids: list[str]) -> None:
        await pause()
        await shared_store.put_messages([expected[i] for i in ids])

    tasks = []
    for message_id, participants in RACED.items():
        for token, _ in participants:
            tasks.append(destroy(message_id, token))
            tasks += [read_through(message_id, token) for _ in range(3)]
    ids = list(RACED)
    for _ in range(12):
        tasks.append(put_stale(rng.sample(ids, rng.randint(1, len(ids)))))
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)

    await client.server.app[SERVICE_KEY].drain()  # deletions are recorded after their answers
    assert len(answered) == 2 * len(RACED)
    for message_id, body in answered:
        message = expected[message_id]
        assert body["id_str"] == message_id
        assert body["text"] == message.text
        assert (body["sender_id_str"], body["recipient_id_str"]) == (message.sender_id, message.recipient_id)
        assert (body["sender"]["id_str"], body["recipient"]["id_str"]) == (message.sender_id, message.recipient_id)
    for message_id, participants in RACED.items():
        for _, user_id in participants:
            assert emulator.state.is_deleted_for(message_id, user_id)
        deletion = await shared_store.get_deletion(message_id)
        assert deletion is not None, f"the deletion of {message_id} was lost"
        assert await shared_store.get_message(message_id) == expected[message_id]

    # Learning every message once more still keeps every deletion.
    await shared_store.put_messages(expected.values())
    for message_id in RACED:
        assert await shared_store.get_deletion(message_id) is not None
