"""The v2 pass-through: /2/... through the gateway is the emulator's own answer, and the gateway learns from it."""

from __future__ import annotations

import gzip
import socket
import zlib
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.learn import BoundedDecoder, learn_from_v2
from gateway.model import DirectMessage
from gateway.store.memory import MemoryStore
from gateway.upstream.client import DM_EVENT_FIELDS, USER_FIELDS
from tests.conftest import MICK_TOKEN, PLAIN_IDS, SEAN_TOKEN, SEED_002_ID, gateway_config, store_of

SEAN = {"Authorization": f"Bearer {SEAN_TOKEN}"}
MICK = {"Authorization": f"Bearer {MICK_TOKEN}"}
# Everything a legacy view needs: a pass-through request asking for this much is learned from.
FULL_QUERY = f"dm_event.fields={DM_EVENT_FIELDS}&expansions=sender_id,participant_ids&user.fields={USER_FIELDS}"
RATE_HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")


def upstream_calls(emulator: Any) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


async def direct(emulator: Any, method: str, path: str, **kwargs: Any) -> tuple[int, bytes, Any]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, emulator.url + path, **kwargs) as response,
    ):
        return response.status, await response.read(), response.headers


async def test_get_dm_events_passes_through_as_upstream_answers(make_gateway, emulator) -> None:
    client = await make_gateway()
    path = "/2/dm_events?dm_event.fields=created_at,sender_id&max_results=3"
    response = await client.get(path, headers={**SEAN, "X-Request-Id": "pass-1"})
    body = await response.read()
    status, expected, direct_headers = await direct(emulator, "GET", path, headers=SEAN)
    assert response.status == status == 200
    assert body == expected
    assert orjson.loads(body)["meta"]["result_count"] == 3
    assert response.headers["Content-Type"] == direct_headers["Content-Type"]
    for name in RATE_HEADERS:
        assert name in response.headers
    # The gateway's own call and the direct one share a quota: one apart.
    assert int(response.headers["x-rate-limit-remaining"]) == int(direct_headers["x-rate-limit-remaining"]) + 1
    assert response.headers["X-Request-Id"] == "pass-1"
    sent = emulator.state.requests[0]
    assert (sent.method, sent.path, sent.query) == (
        "GET",
        "/2/dm_events",
        {"dm_event.fields": "created_at,sender_id", "max_results": "3"},
    )
    assert sent.headers["Authorization"] == f"Bearer {SEAN_TOKEN}"
    sent_headers = {name.lower(): value for name, value in sent.headers.items()}
    assert sent_headers["x-request-id"] == "pass-1"
    assert sent_headers["x-forwarded-for"] == "127.0.0.1"
    assert sent_headers["x-forwarded-proto"] == "http"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/2/dm_events/1583890000000000003", {"Authorization": "Bearer nobody"}, 401),
        ("/2/dm_events/999999999999", SEAN, 404),
        ("/2/no_such_endpoint", SEAN, 404),
    ],
)
async def test_error_answers_pass_through_unchanged(make_gateway, emulator, path, headers, status) -> None:
    client = await make_gateway()
    response = await client.get(path, headers=headers)
    body = await response.read()
    expected_status, expected, direct_headers = await direct(emulator, "GET", path, headers=headers)
    assert response.status == expected_status == status
    assert body == expected
    assert response.headers["Content-Type"] == direct_headers["Content-Type"] == "application/problem+json"
    assert orjson.loads(body)["status"] == status  # v2's problem, not a legacy {"errors": [...]}


async def test_delete_passes_through_and_deletes(make_gateway, emulator) -> None:
    client = await make_gateway()
    response = await client.delete(f"/2/dm_events/{PLAIN_IDS[0]}", headers=SEAN)
    assert response.status == 200
    assert orjson.loads(await response.read()) == {"data": {"deleted": True}}
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], "38895958")
    assert upstream_calls(emulator) == [("DELETE", f"/2/dm_events/{PLAIN_IDS[0]}")]


async def test_a_post_body_is_forwarded(make_gateway, emulator) -> None:
    client = await make_gateway()
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "emulator-oauth2-refresh-theSeanCook",
        "client_id": "emulator-client",
    }
    response = await client.post("/2/oauth2/token", data=form)
    assert response.status == 200, await response.text()
    issued = orjson.loads(await response.read())
    assert issued["access_token"] and issued["refresh_token"] != form["refresh_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert emulator.state.token_refreshes == 1
    sent = emulator.state.requests[0]
    assert (sent.method, sent.path) == ("POST", "/2/oauth2/token")
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_a_json_body_is_streamed_upstream(make_gateway, emulator) -> None:
    client = await make_gateway()
    payload = orjson.dumps({"text": "x" * 200_000})  # over server.max_body_bytes: streamed, not buffered
    response = await client.post(
        "/2/dm_conversations/with/1/messages", data=payload, headers={**SEAN, "Content-Type": "application/json"}
    )
    # v2 refuses a text that long; what matters is that the gateway let v2 judge it, and did not reshape it.
    assert response.status == 400
    assert orjson.loads(await response.read())["type"] == "about:blank"
    sent = emulator.state.requests[0]
    assert (sent.method, sent.path, sent.headers["Content-Type"]) == (
        "POST",
        "/2/dm_conversations/with/1/messages",
        "application/json",
    )


async def test_hop_by_hop_headers_stay_with_the_gateway(make_gateway, emulator) -> None:
    client = await make_gateway()
    headers = {
        **SEAN,
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "Upgrade": "websocket",
        "X-End-To-End": "kept",
    }
    response = await client.get("/2/users/me", headers=headers)
    assert response.status == 200
    sent = {name.lower(): value for name, value in emulator.state.requests[0].headers.items()}
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "te", "upgrade"):
        assert name not in sent, name
    assert sent.get("connection", "keep-alive").lower() == "keep-alive"  # the gateway's own, if any
    assert sent["x-end-to-end"] == "kept"
    assert sent["host"] != f"127.0.0.1:{client.port}"


async def test_a_learned_message_spares_the_legacy_destroy_its_lookup(make_gateway, emulator) -> None:
    client = await make_gateway()
    response = await client.get(f"/2/dm_events/{SEED_002_ID}?{FULL_QUERY}", headers=SEAN)
    assert response.status == 200
    learned = await store_of(client).get_message(SEED_002_ID)
    assert learned is not None and (learned.sender_id, learned.recipient_id) == ("776627022", "38895958")
    # The event expands its sender only; the recipient comes from a user lookup through the pass-through.
    response = await client.get(f"/2/users?ids=38895958&user.fields={USER_FIELDS}", headers=SEAN)
    assert response.status == 200
    assert set(await store_of(client).get_users(["776627022", "38895958"])) == {"776627022", "38895958"}
    emulator.state.requests.clear()
    response = await client.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert response.status == 200, await response.text()
    assert orjson.loads(await response.read())["id_str"] == SEED_002_ID
    # No lookup of the message: only whom the caller acts for (the store answers a participant only).
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{SEED_002_ID}")]


async def test_a_sparse_answer_is_not_learned(make_gateway, emulator) -> None:
    client = await make_gateway()
    response = await client.get(
        f"/2/dm_events/{SEED_002_ID}?dm_event.fields=sender_id&expansions=sender_id", headers=SEAN
    )
    assert response.status == 200
    assert await store_of(client).get_message(SEED_002_ID) is None
    emulator.state.requests.clear()
    assert (await client.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")).status == 200
    assert ("GET", f"/2/dm_events/{SEED_002_ID}") in upstream_calls(emulator)


async def test_a_gzip_body_passes_through_compressed_and_is_learned(make_gateway, emulator) -> None:
    emulator.state.compress_responses = True
    client = await make_gateway()
    path = f"/2/dm_events?{FULL_QUERY}"
    response = await client.get(path, headers={**SEAN, "Accept-Encoding": "gzip"}, auto_decompress=False)
    raw = await response.read()
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    _, expected, _ = await direct(emulator, "GET", path, headers={**SEAN, "Accept-Encoding": "gzip"})
    assert raw == expected
    events = orjson.loads(gzip.decompress(raw))["data"]
    assert PLAIN_IDS[0] in {e["id"] for e in events}
    store = store_of(client)
    assert await store.get_message(PLAIN_IDS[0]) is not None
    assert (await store.get_users(["38895958"])).get("38895958") is not None


async def test_no_compression_reaches_a_client_that_did_not_ask(make_gateway, emulator) -> None:
    emulator.state.compress_responses = True
    client = await make_gateway()
    response = await client.get("/2/users/me", headers={**SEAN, "Accept-Encoding": "identity"}, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert orjson.loads(await response.read())["data"]["id"] == "38895958"


async def test_a_body_over_the_cap_streams_whole_but_is_not_learned(make_gateway, emulator) -> None:
    client = await make_gateway(upstream={"max_response_bytes": 1024})
    response = await client.get(f"/2/dm_events?{FULL_QUERY}", headers=SEAN)
    body = await response.read()
    assert response.status == 200 and len(body) > 1024
    assert len(orjson.loads(body)["data"]) > 1
    assert await store_of(client).get_message(PLAIN_IDS[0]) is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_upstream_down_is_a_v2_bad_gateway(aiohttp_client, emulator) -> None:
    config = gateway_config(emulator, upstream={"base_url": f"http://127.0.0.1:{_closed_port()}"})
    client = await aiohttp_client(create_app(config))
    response = await client.get("/2/dm_events", headers=SEAN)
    assert response.status == 502
    assert response.headers["Content-Type"] == "application/problem+json"
    body = orjson.loads(await response.read())
    assert body["title"] == "Bad Gateway" and body["type"] == "about:blank" and body["status"] == 502
    assert body["detail"]
    assert "errors" not in body


async def test_upstream_dropping_the_connection_is_a_v2_bad_gateway(make_gateway, emulator) -> None:
    from gateway.emulator import FaultRule

    emulator.state.faults.append(FaultRule.from_json({"path": "/2/dm_events", "action": "reset"}))
    client = await make_gateway()
    response = await client.get("/2/dm_events", headers=SEAN)
    assert response.status == 502
    assert response.headers["Content-Type"] == "application/problem+json"
    assert orjson.loads(await response.read())["title"] == "Bad Gateway"


async def test_upstream_too_slow_is_a_v2_gateway_timeout(make_gateway, emulator) -> None:
    from gateway.emulator import FaultRule

    emulator.state.faults.append(FaultRule.from_json({"path": "/2/users/me", "action": "delay", "delay": 3}))
    client = await make_gateway(upstream={"timeout": 0.5})
    response = await client.get("/2/users/me", headers=SEAN)
    assert response.status == 504
    body = orjson.loads(await response.read())
    assert (body["title"], body["status"], body["type"]) == ("Gateway Timeout", 504, "about:blank")


async def test_relearning_keeps_a_recorded_deletion(make_gateway, emulator) -> None:
    client = await make_gateway()
    store = store_of(client)
    upstream_text = emulator.state.events[PLAIN_IDS[0]]["text"]
    stale = DirectMessage(
        id=PLAIN_IDS[0],
        text="stale copy",
        created_at=datetime(2020, 1, 1, tzinfo=UTC),
        sender_id="38895958",
        recipient_id="776627022",
    )
    await store.put_messages([stale])
    await store.mark_deleted(PLAIN_IDS[0], "38895958")  # Sean deleted it through the gateway
    # Mick, the other side, still sees it; reading it through the pass-through learns it again.
    response = await client.get(f"/2/dm_events/{PLAIN_IDS[0]}?{FULL_QUERY}", headers=MICK)
    assert response.status == 200
    relearned = await store.get_message(PLAIN_IDS[0])
    assert relearned is not None and relearned.text == upstream_text != "stale copy"
    deletion = await store.get_deletion(PLAIN_IDS[0])
    assert deletion is not None and deletion.by == "38895958"


# --- gateway.learn on its own -------------------------------------------------------------------------

EVENT = {
    "id": "7",
    "event_type": "MessageCreate",
    "text": "hi",
    "created_at": "2023-01-01T00:00:00.000Z",
    "dm_conversation_id": "1-2",
    "sender_id": "1",
}
FULL_PATH = f"/2/dm_events?{FULL_QUERY}"


async def test_learn_skips_malformed_events_and_keeps_the_rest() -> None:
    store = MemoryStore()
    bad = {**EVENT, "id": "8", "dm_conversation_id": "3-4"}  # sender outside its conversation
    group = {**EVENT, "id": "9", "dm_conversation_id": "group", "participant_ids": ["1", "2", "3"]}
    body = orjson.dumps(
        {"data": [bad, EVENT, group, "junk"], "includes": {"users": [{"id": "1", "name": "A", "username": "a"}]}}
    )
    await learn_from_v2(store, "GET", FULL_PATH, body)
    assert (await store.get_message("7")) is not None
    assert await store.get_message("8") is None and await store.get_message("9") is None
    assert set(await store.get_users(["1"])) == {"1"}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"data": 5}', b'{"data": null}'])
async def test_learn_ignores_bodies_it_cannot_read(body: bytes) -> None:
    store = MemoryStore()
    await learn_from_v2(store, "GET", FULL_PATH, body)
    assert await store.get_message("7") is None


async def test_learn_reads_only_dm_and_user_gets() -> None:
    store = MemoryStore()
    body = orjson.dumps({"data": EVENT})
    await learn_from_v2(store, "DELETE", f"/2/dm_events/7?{FULL_QUERY}", body)
    await learn_from_v2(store, "GET", f"/2/tweets/7?{FULL_QUERY}", body)
    assert await store.get_message("7") is None
    await learn_from_v2(store, "GET", f"/2/dm_conversations/1-2/dm_events?{FULL_QUERY}", body)
    assert await store.get_message("7") is not None


async def test_learn_survives_a_failing_store() -> None:
    class Broken(MemoryStore):
        async def put_messages(self, messages: Any) -> None:
            raise RuntimeError("store down")

    await learn_from_v2(Broken(), "GET", FULL_PATH, orjson.dumps({"data": [EVENT]}))


async def test_learn_users_from_the_users_endpoint_but_not_tweets() -> None:
    store = MemoryStore()
    users = {"data": [{"id": "5", "name": "E", "username": "e"}, {"id": "6", "text": "a tweet"}]}
    await learn_from_v2(store, "GET", f"/2/users?ids=5,6&user.fields={USER_FIELDS}", orjson.dumps(users))
    assert set(await store.get_users(["5", "6"])) == {"5"}
    await learn_from_v2(
        store, "GET", "/2/users?ids=7", orjson.dumps({"data": [{"id": "7", "name": "G", "username": "g"}]})
    )
    assert await store.get_users(["7"]) == {}  # too sparse to stand for the user


def test_bounded_decoder() -> None:
    data = b'{"data": []}' * 100
    decoder = BoundedDecoder(10_000)
    assert decoder.decode("gzip", gzip.compress(data)) == data
    assert decoder.decode("deflate", zlib.compress(data)) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decoder.decode("deflate", raw.compress(data) + raw.flush()) == data
    assert decoder.decode("", data) == data
    assert decoder.decode("gzip", b"not gzip") is None
    assert decoder.decode("compress", data) is None
    assert BoundedDecoder(100).decode("gzip", gzip.compress(data)) is None  # a zip bomb stops at the cap
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        assert decoder.decode("br", b"anything") is None  # without brotli, br bodies are not learned
    else:
        assert decoder.decode("br", brotli.compress(data)) == data
