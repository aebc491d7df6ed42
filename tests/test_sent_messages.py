"""A message sent through the v2 pass-through is learned, so its later legacy destroy needs no v2 lookup."""

from __future__ import annotations

import asyncio

from gateway.passthrough import FOLLOW_UPS_KEY
from tests.conftest import MICK_TOKEN, SEAN_TOKEN, store_of

SEND = "/2/dm_conversations/with/{}/messages"
SEAN = {"Authorization": f"Bearer {SEAN_TOKEN}"}


async def settled(client) -> None:
    """Wait for the gateway's background lookups of sent messages."""
    await asyncio.gather(*client.server.app[FOLLOW_UPS_KEY])


async def test_the_emulator_sends_as_v2_does(gateway, emulator) -> None:
    response = await gateway.post(SEND.format("776627022"), json={"text": "hello <again> & more"}, headers=SEAN)
    assert response.status == 201
    data = (await response.json())["data"]
    assert data["dm_conversation_id"] == "38895958-776627022"
    event = emulator.state.events[data["dm_event_id"]]
    assert (event["sender_id"], event["text"]) == ("38895958", "hello <again> & more")
    for bad in ({"text": ""}, {"nothing": 1}, {"text": "x" * 10_001}):
        assert (await gateway.post(SEND.format("776627022"), json=bad, headers=SEAN)).status == 400
    assert (await gateway.post(SEND.format("38895958"), json={"text": "me"}, headers=SEAN)).status == 400


async def test_a_message_sent_through_the_gateway_is_learned(gateway, emulator) -> None:
    response = await gateway.post(SEND.format("776627022"), json={"text": "learn me"}, headers=SEAN)
    event_id = (await response.json())["data"]["dm_event_id"]
    await settled(gateway)
    stored = await store_of(gateway).get_message(event_id)
    assert stored is not None
    assert (stored.text, stored.sender_id, stored.recipient_id) == ("learn me", "38895958", "776627022")

    emulator.state.requests.clear()
    destroy = await gateway.post(f"/1.1/direct_messages/destroy.json?id={event_id}")
    assert destroy.status == 200
    body = await destroy.json()
    assert (body["text"], body["sender_screen_name"]) == ("learn me", "theSeanCook")
    assert not [r for r in emulator.state.requests if r.method == "GET" and r.path.startswith("/2/dm_events")]


async def test_a_send_signed_with_oauth1_or_refused_is_not_looked_up(gateway, emulator) -> None:
    refused = await gateway.post(SEND.format("776627022"), json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert refused.status == 401
    await settled(gateway)
    assert [r.method for r in emulator.state.requests] == ["POST"]
    # A send by another user is learned with that user's own token.
    response = await gateway.post(
        SEND.format("38895958"), json={"text": "from mick"}, headers={"Authorization": f"Bearer {MICK_TOKEN}"}
    )
    event_id = (await response.json())["data"]["dm_event_id"]
    await settled(gateway)
    lookup = [r for r in emulator.state.requests if r.method == "GET"]
    assert len(lookup) == 1 and lookup[0].headers["Authorization"] == f"Bearer {MICK_TOKEN}"
    assert (await store_of(gateway).get_message(event_id)).sender_id == "776627022"
