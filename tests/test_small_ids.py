"""``[routes] small_ids``: the families named there see small ids in place of v2's, and name them back.

Round trips through list, show, users/show, send and destroy, across two gateways on one store (SQLite and
Redis) and across a restart on one SQLite file; unknown small ids are each dialect's not-found with nothing
sent upstream.
"""

from __future__ import annotations

import orjson
import pytest

from gateway.config import ConfigError, load_config
from tests.conftest import ENTITIES_ID, PLAIN_IDS, SEED_002_ID, VANISHED_SENDER_ID, store_of

SMALL = {"small_ids": ["statusnet", "v1_1"]}
SEAN_ID = "38895958"
MICK_ID = "776627022"
# Sean's received messages in the seed, newest first.
RECEIVED = [VANISHED_SENDER_ID, PLAIN_IDS[1], ENTITIES_ID, SEED_002_ID]


def upstream(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


async def _list(client, path: str = "/api/direct_messages.json", **query: str) -> list[dict]:
    response = await client.get(path, params=query)
    assert response.status == 200, await response.text()
    return orjson.loads(await response.read())


async def test_small_ids_shared_by_two_gateways_and_named_back(make_gateway, emulator, shared_store) -> None:
    first = await make_gateway(store=shared_store, routes=SMALL)
    second = await make_gateway(store=shared_store, routes=SMALL)
    listed = await _list(first)
    ids = [item["id"] for item in listed]
    # Small, unique, and newer messages have larger ones (given oldest first).
    assert all(isinstance(i, int) and 0 < i < 2**31 for i in ids)
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(RECEIVED)
    # StatusNet writes the users' ids as strings (seed 003), the users' own ids as numbers.
    assert all(0 < int(item["sender_id"]) < 2**31 and 0 < int(item["recipient_id"]) < 2**31 for item in listed)
    assert all(str(item["sender"]["id"]) == item["sender_id"] for item in listed)
    # The other replica shows the same small ids, in the StatusNet and the v1.1 dialect.
    assert [item["id"] for item in await _list(second)] == ids
    v1_1 = await _list(second, "/1.1/direct_messages.json")
    assert [item["id"] for item in v1_1] == ids and [item["id_str"] for item in v1_1] == [str(i) for i in ids]
    shown = await second.get("/1.1/direct_messages/show.json", params={"id": str(ids[1])})
    assert shown.status == 200
    assert orjson.loads(await shown.read())["id"] == ids[1]
    assert ("GET", f"/2/dm_events/{RECEIVED[1]}") in upstream(emulator)
    # since_id and max_id name small ids; they bound by the v2 ids they stand for.
    assert [item["id"] for item in await _list(first, since_id=str(ids[1]))] == ids[:1]
    assert [item["id"] for item in await _list(first, max_id=str(ids[2]))] == ids[2:]
    # users/show by a small user id.
    sean_small = listed[0]["recipient"]["id"]
    user = await second.get(f"/api/users/show/{sean_small}.json")
    assert user.status == 200
    assert orjson.loads(await user.read())["id"] == sean_small
    assert ("GET", f"/2/users/{SEAN_ID}") in upstream(emulator)
    # Destroy by small id through the other replica: v2 is asked to delete the v2 id.
    emulator.state.requests.clear()
    destroyed = await second.post(f"/api/direct_messages/destroy/{ids[1]}.json")
    assert destroyed.status == 200, await destroyed.text()
    assert orjson.loads(await destroyed.read())["id"] == ids[1]
    assert ("DELETE", f"/2/dm_events/{RECEIVED[1]}") in upstream(emulator)
    assert await shared_store.v2_ids([ids[1]]) == {ids[1]: RECEIVED[1]}


async def test_a_send_names_its_recipient_by_small_id(make_gateway, emulator) -> None:
    client = await make_gateway(routes=SMALL)
    listed = await _list(client)
    mick_small = next(item["sender"]["id"] for item in listed if item["sender"]["screen_name"] == "s0c1alm3dia")
    sent = await client.post("/api/direct_messages/new.json", data={"user": str(mick_small), "text": "hello"})
    assert sent.status == 200, await sent.text()
    body = orjson.loads(await sent.read())
    assert body["recipient_id"] == str(mick_small) and 0 < body["id"] < 2**31
    assert ("POST", f"/2/dm_conversations/with/{MICK_ID}/messages") in upstream(emulator)


async def test_small_ids_survive_a_restart(make_gateway, emulator, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    before = await make_gateway(store_url=url, routes=SMALL)
    ids = [item["id"] for item in await _list(before)]
    await before.close()
    after = await make_gateway(store_url=url, routes=SMALL)
    emulator.state.requests.clear()
    destroyed = await after.delete(f"/1/direct_messages/destroy/{ids[0]}.json")
    assert destroyed.status == 200
    assert orjson.loads(await destroyed.read())["id"] == ids[0]
    assert ("DELETE", f"/2/dm_events/{RECEIVED[0]}") in upstream(emulator)
    assert [item["id"] for item in await _list(after, "/api/direct_messages/sent.json")]  # new ones follow
    assert [item["id"] for item in await _list(after)] == ids[1:]


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("POST", "/api/direct_messages/destroy/999.json", 404, {"error": "No direct message with that ID found.", "request": "/api/direct_messages/destroy/999.json"}),
        ("GET", "/1.1/direct_messages/show.json?id=999", 404, {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}),
        ("DELETE", "/1.1/direct_messages/events/destroy.json?id=999", 404, {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}),
        ("GET", "/api/direct_messages.json?since_id=999", 404, {"error": "No direct message with that ID found.", "request": "/api/direct_messages.json"}),
        ("GET", f"/api/users/show/{SEAN_ID}.json", 404, {"error": "Not found.", "request": f"/api/users/show/{SEAN_ID}.json"}),
        ("POST", "/api/direct_messages/new.json?user=999&text=hi", 403, None),
    ],
)  # fmt: skip
async def test_an_unknown_small_id_is_not_found(make_gateway, emulator, method, path, status, body) -> None:
    client = await make_gateway(routes=SMALL)
    await _list(client)  # some small ids are given, but not 999; a v2 id is not a small id
    emulator.state.requests.clear()
    response = await client.request(method, path)
    assert response.status == status, await response.text()
    if body is not None:
        assert orjson.loads(await response.read()) == body
    assert upstream(emulator) == []


async def test_memory_store_gives_small_ids_in_order(make_gateway) -> None:
    client = await make_gateway(routes=SMALL)
    listed = await _list(client)
    # Messages first, oldest first; then their users.
    assert sorted(item["id"] for item in listed) == list(range(1, len(RECEIVED) + 1))


def test_small_ids_names_families() -> None:
    assert load_config(env={}, overrides={"routes": {"small_ids": ["statusnet"]}}).routes.small_ids == ("statusnet",)
    with pytest.raises(ConfigError, match="routes.small_ids: 'twitter' is not a family"):
        load_config(env={}, overrides={"routes": {"small_ids": ["twitter"]}})


async def test_events_and_user_lookups_take_small_ids(make_gateway, emulator) -> None:
    client = await make_gateway(routes={"small_ids": ["v1_1"]})
    events = orjson.loads(await (await client.get("/1.1/direct_messages/events/list.json")).read())["events"]
    ids = [event["id"] for event in events]
    assert all(0 < int(i) < 2**31 for i in ids) and len(set(ids)) == len(ids)
    shown = await client.get("/1.1/direct_messages/events/show.json", params={"id": ids[-1]})
    assert orjson.loads(await shown.read())["event"]["id"] == ids[-1]
    sean, mick = [
        orjson.loads(await (await client.get("/1.1/users/show.json", params={"screen_name": name})).read())["id"]
        for name in ("theSeanCook", "s0c1alm3dia")
    ]
    assert 0 < sean < 2**31 and 0 < mick < 2**31
    looked_up = await client.get("/1.1/users/lookup.json", params={"user_id": f"{sean},{mick},999"})
    assert sorted(user["id"] for user in orjson.loads(await looked_up.read())) == sorted([sean, mick])
    assert any(r.path == "/2/users" and r.query["ids"] == f"{SEAN_ID},{MICK_ID}" for r in emulator.state.requests)
    create = {"target": {"recipient_id": str(mick)}, "message_data": {"text": "hi"}}
    new = {"event": {"type": "message_create", "message_create": create}}
    sent = orjson.loads(await (await client.post("/1.1/direct_messages/events/new.json", json=new)).read())["event"]
    assert sent["message_create"]["target"]["recipient_id"] == str(mick) and int(sent["id"]) < 2**31
    assert ("POST", f"/2/dm_conversations/with/{MICK_ID}/messages") in upstream(emulator)
    # StatusNet, not named in small_ids, still shows v2's ids.
    assert (await _list(client))[0]["id"] == int(VANISHED_SENDER_ID)


async def test_start_up_calls_show_and_take_small_user_ids(make_gateway, emulator) -> None:
    client = await make_gateway(routes=SMALL)
    # Who am I: a small id, with its string twin the same small id, in both families and in XML.
    me = orjson.loads(await (await client.get("/api/account/verify_credentials.json")).read())
    assert 0 < me["id"] < 2**31 and me["id_str"] == str(me["id"])
    v1_1_me = orjson.loads(await (await client.get("/1.1/account/verify_credentials.json")).read())
    assert v1_1_me["id"] == me["id"] and v1_1_me["id_str"] == str(me["id"])
    xml = await (await client.get("/1/account/verify_credentials.xml")).text()
    assert f"<id>{me['id']}</id>" in xml and SEAN_ID not in xml
    # users/show and users/lookup by that small id ask v2 for the v2 id and show the small one.
    emulator.state.requests.clear()
    for path in ("/1/users/show.json", "/1.1/users/show.json"):
        shown = orjson.loads(await (await client.get(path, params={"user_id": str(me["id"])})).read())
        assert (shown["id"], shown["id_str"], shown["screen_name"]) == (me["id"], str(me["id"]), "theSeanCook")
    looked_up = await client.get("/1.1/users/lookup.json", params={"user_id": str(me["id"])})
    looked_up = orjson.loads(await looked_up.read())
    assert [(user["id"], user["id_str"]) for user in looked_up] == [(me["id"], str(me["id"]))]
    assert all(r.query.get("ids", SEAN_ID) == SEAN_ID for r in emulator.state.requests if r.path == "/2/users")
    assert ("GET", f"/2/users/{SEAN_ID}") in upstream(emulator)
    # Another's small user id; an unknown one is not found and asks v2 nothing.
    emulator.state.requests.clear()
    for path, code in (("/1.1/users/show.json", 50), ("/1.1/users/lookup.json", 17)):
        missing = await client.get(path, params={"user_id": "999"})
        assert missing.status == 404 and orjson.loads(await missing.read())["errors"][0]["code"] == code
    missing = await client.get("/api/users/show.json", params={"user_id": "999"})
    assert missing.status == 404 and orjson.loads(await missing.read())["error"] == "Not found."
    assert upstream(emulator) == []


async def test_string_twins_carry_the_small_ids(make_gateway, emulator) -> None:
    client = await make_gateway(routes=SMALL)
    listed = await _list(client)
    for item in listed:
        assert item["id_str"] == str(item["id"]) and 0 < item["id"] < 2**31
        assert item["sender_id_str"] == item["sender_id"] and item["recipient_id_str"] == item["recipient_id"]
        for user in (item["sender"], item["recipient"]):
            assert user["id_str"] == str(user["id"]) and 0 < user["id"] < 2**31
    body = await (await client.get("/api/direct_messages.json")).read()
    assert all(v2_id.encode() not in body for v2_id in (*RECEIVED, SEAN_ID, MICK_ID))


async def test_media_ids_stay_x_media_ids_under_small_ids(make_gateway, emulator) -> None:
    # A media id names an upload the client made at X and names again in an events send: it is not mapped.
    client = await make_gateway(routes=SMALL)
    media_id = next(iter(emulator.state.media))
    listed = await _list(client)
    mick = next(item["sender"]["id"] for item in listed if item["sender"]["screen_name"] == "s0c1alm3dia")
    attachment = {"type": "media", "media": {"id": media_id}}
    create = {"target": {"recipient_id": str(mick)}, "message_data": {"text": "look", "attachment": attachment}}
    new = {"event": {"type": "message_create", "message_create": create}}
    sent = await client.post("/1.1/direct_messages/events/new.json", json=new)
    assert sent.status == 200, await sent.text()
    event = orjson.loads(await sent.read())["event"]
    assert 0 < int(event["id"]) < 2**31
    assert event["message_create"]["message_data"]["attachment"]["media"]["id_str"] == media_id
    sent_list = await _list(client, "/api/direct_messages/sent.json", count="1")
    assert sent_list[0]["id"] == int(event["id"]) and sent_list[0]["id_str"] == event["id"]
    assert sent_list[0]["entities"]["media"][0]["id_str"] == media_id
    v2_id = (await store_of(client).v2_ids([int(event["id"])]))[int(event["id"])]
    assert emulator.state.events[v2_id]["attachments"] == {"media_keys": [f"3_{media_id}"]}
