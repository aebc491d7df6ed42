"""Media attachments: an events send with ``message_data.attachment`` goes to v2 with its media id, and the
message is read back with it in every dialect (events: ``message_data.attachment``; classic v1.1 and
StatusNet JSON: ``entities.media``), from v2's ``attachments.media_keys`` expanded with ``media.fields``, from
the store as from v2. What the gateway cannot carry is refused with the dialect's 400, with nothing sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

import orjson
import pytest

from gateway.emulator import EmulatorServer
from gateway.model import DirectMessage, Media
from gateway.store import codec
from tests.conftest import store_of
from tests.golden_files import assert_golden
from tests.v1_1_calls import frozen_emulator

SEAN_ID = "38895958"
MICK_ID = "776627022"
PHOTO_ID = "1583890000000000100"  # seeded media uploaded by Sean
SKETCH_ID = "1583890000000000101"
FIRST_SENT_ID = "1583890000000000008"
NEW = "/1.1/direct_messages/events/new.json"
PHOTO = Media(
    id=PHOTO_ID,
    key=f"3_{PHOTO_ID}",
    type="photo",
    url="https://pbs.twimg.com/media/Fh1PhotoOfTheBay.jpg",
    width=1200,
    height=800,
    alt_text="The bay at dusk",
)


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with frozen_emulator() as server:
        yield server


def send(message_data: dict, recipient_id: str = MICK_ID) -> dict:
    return {
        "event": {
            "type": "message_create",
            "message_create": {"target": {"recipient_id": recipient_id}, "message_data": message_data},
        }
    }


def with_media(media_id: object = PHOTO_ID, **extra: object) -> dict:
    return send({"text": "look", "attachment": {"type": "media", "media": {"id": media_id}}, **extra})


async def ok(response) -> bytes:
    body = await response.read()
    assert response.status == 200, body
    return body


async def test_an_attachment_is_sent_read_back_and_destroyed_with_its_body(gateway, emulator) -> None:
    body = await ok(await gateway.post(NEW, json=with_media()))
    assert_golden("v1_1_events/new_attachment.json", body)
    event = orjson.loads(body)["event"]
    assert event["id"] == FIRST_SENT_ID
    media = event["message_create"]["message_data"]["attachment"]["media"]
    assert (media["id_str"], media["media_url_https"]) == (PHOTO_ID, PHOTO.url)
    # v2 got the media id: the event it made carries the media key.
    assert emulator.state.events[FIRST_SENT_ID]["attachments"] == {"media_keys": [f"3_{PHOTO_ID}"]}
    assert (await store_of(gateway).get_message(FIRST_SENT_ID)).attachment == PHOTO

    shown = await ok(await gateway.get("/1.1/direct_messages/events/show.json", params={"id": FIRST_SENT_ID}))
    assert orjson.loads(shown) == orjson.loads(body)
    listed = orjson.loads(await ok(await gateway.get("/1.1/direct_messages/events/list.json")))
    assert listed["events"][0] == event
    classic = await ok(await gateway.get("/1.1/direct_messages/sent.json", params={"count": "1"}))
    assert_golden("v1_1/sent_attachment.json", classic)
    assert orjson.loads(classic)[0]["entities"]["media"] == [{**media}]
    statusnet = await ok(await gateway.get("/api/direct_messages/sent.json", params={"count": "1"}))
    assert_golden("statusnet/sent_attachment.json", statusnet)
    assert orjson.loads(statusnet)[0]["entities"] == {"media": [media]}

    emulator.state.requests.clear()
    destroyed = await ok(await gateway.post("/api/direct_messages/destroy.json", data={"id": FIRST_SENT_ID}))
    assert orjson.loads(destroyed) == orjson.loads(statusnet)[0]
    # The body came from the store: v2 was asked only to delete.
    assert [(r.method, r.path) for r in emulator.state.requests] == [("DELETE", f"/2/dm_events/{FIRST_SENT_ID}")]


async def test_an_attachment_read_from_v2_is_expanded(gateway, emulator) -> None:
    """A message the gateway never saw: the lookup expands its media key with media.fields."""
    emulator.state.events["1583890000000000050"] = {
        "id": "1583890000000000050",
        "event_type": "MessageCreate",
        "text": "a sketch",
        "created_at": "2023-11-14T22:00:00.000Z",
        "dm_conversation_id": f"{SEAN_ID}-{MICK_ID}",
        "sender_id": MICK_ID,
        "attachments": {"media_keys": [f"3_{SKETCH_ID}"]},
    }
    body = orjson.loads(
        await ok(await gateway.get("/1.1/direct_messages/show.json", params={"id": "1583890000000000050"}))
    )
    [media] = body["entities"]["media"]
    assert media["id"] == int(SKETCH_ID) and media["sizes"] == {"large": {"w": 640, "h": 480, "resize": "fit"}}
    assert media["ext_alt_text"] is None
    lookup = next(r for r in emulator.state.requests if r.path == "/2/dm_events/1583890000000000050")
    assert "attachments.media_keys" in lookup.query["expansions"].split(",") and "url" in lookup.query["media.fields"]


BAD = "event.message_create.message_data"


@pytest.mark.parametrize(
    ("document", "code", "message"),
    [
        # A second attachment: v2 takes one per message.
        (send({"text": "two", "attachment": [{"type": "media", "media": {"id": PHOTO_ID}}, {"type": "media", "media": {"id": SKETCH_ID}}]}), 324, "The validation of media ids failed."),
        (with_media("not-an-id"), 324, "The validation of media ids failed."),
        (send({"text": "x", "attachment": {"type": "media", "media": {}}}), 324, "The validation of media ids failed."),
        (send({"text": "x", "attachment": {"type": "location", "location": {}}}), 44, f"{BAD}.attachment.type parameter is invalid."),
        (with_media(location={"type": "shared_coordinate"}), 44, f"{BAD}.location parameter is invalid."),
        (send({"text": "pick", "quick_reply": {"type": "options", "options": [{"label": "a"}]}}), 44, f"{BAD}.quick_reply parameter is invalid."),
        (send({"text": "go", "ctas": [{"type": "web_url", "label": "x", "url": "https://example.com"}]}), 44, f"{BAD}.ctas parameter is invalid."),
    ],
)  # fmt: skip
async def test_what_cannot_be_carried_is_refused_before_sending(gateway, emulator, document, code, message) -> None:
    events_before = dict(emulator.state.events)
    response = await gateway.post(NEW, json=document)
    assert response.status == 400
    assert orjson.loads(await response.read()) == {"errors": [{"code": code, "message": message}]}
    assert [r for r in emulator.state.requests if r.method == "POST"] == []
    assert emulator.state.events == events_before


@pytest.mark.parametrize("media_id", ["1583890000000000999", "1583890000000000007"])
async def test_a_media_id_v2_refuses_is_the_dialects_400_and_no_message(gateway, emulator, media_id) -> None:
    """Unknown media, or media someone else uploaded: v2 refuses the send whole, nothing is made."""
    if media_id.endswith("7"):
        emulator.state.media[media_id] = {"media_key": f"3_{media_id}", "type": "photo", "owner_id": MICK_ID}
    events_before = dict(emulator.state.events)
    response = await gateway.post(NEW, json=with_media(media_id))
    body = await response.read()
    assert response.status == 400, body
    assert_golden("v1_1_events/new_refused_media.json", body)
    assert emulator.state.events == events_before  # v2 refused the one POST: no message exists
    assert [(r.method, r.path) for r in emulator.state.requests if r.method == "POST"] == [
        ("POST", f"/2/dm_conversations/with/{MICK_ID}/messages")
    ]


def test_the_codec_keeps_the_attachment_and_reads_older_records() -> None:
    from datetime import datetime

    message = DirectMessage("12", "look", datetime(2023, 1, 1, tzinfo=UTC), SEAN_ID, MICK_ID, attachment=PHOTO)
    record = codec.loads(codec.dumps(codec.message_to_record(message)))
    assert record["v"] == 2 and codec.message_from_record(record) == message
    del record["attachment"]
    record["v"] = 1
    assert codec.message_from_record(record).attachment is None
