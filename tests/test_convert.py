"""v2 JSON to the neutral model: users, recipients, entities and message events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import UpstreamFailure
from gateway.model import Entities, Hashtag, Mention, Url, User
from gateway.upstream.convert import (
    entities_from_v2,
    message_from_v2,
    parse_time,
    recipient_of,
    user_from_v2,
    users_from_includes,
)

FULL_USER: dict[str, Any] = {
    "id": "2244994945",
    "username": "XDevelopers",
    "name": "Developers",
    "description": "The voice of the X Dev team",
    "location": "127.0.0.1",
    "url": "https://t.co/3ZX3TNiZCY",
    "protected": False,
    "verified": True,
    "created_at": "2013-12-14T04:35:55.000Z",
    "profile_image_url": "https://pbs.twimg.com/profile_images/1/x_normal.jpg",
    "public_metrics": {
        "followers_count": 570842,
        "following_count": 2048,
        "tweet_count": 14052,
        "listed_count": 1672,
        "like_count": 3,
    },
}


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "1583890000000000003",
        "event_type": "MessageCreate",
        "text": "hello",
        "created_at": "2022-10-22T19:00:00.000Z",
        "sender_id": "111",
        "dm_conversation_id": "111-222",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


# Users -------------------------------------------------------------------------------------------------


def test_user_with_every_field() -> None:
    user = user_from_v2(FULL_USER)
    assert user == User(
        id="2244994945",
        username="XDevelopers",
        name="Developers",
        description="The voice of the X Dev team",
        location="127.0.0.1",
        url="https://t.co/3ZX3TNiZCY",
        protected=False,
        verified=True,
        created_at=datetime(2013, 12, 14, 4, 35, 55, tzinfo=UTC),
        profile_image_url="https://pbs.twimg.com/profile_images/1/x_normal.jpg",
        followers_count=570842,
        following_count=2048,
        tweet_count=14052,
        listed_count=1672,
        like_count=3,
    )
    assert user.known


def test_user_with_only_an_id() -> None:
    user = user_from_v2({"id": "5"})
    assert user == User(id="5")
    assert user.location is None and user.url is None and user.followers_count is None
    assert user.protected is False and user.verified is False
    assert not user.known


def test_user_numeric_id_becomes_a_string() -> None:
    assert user_from_v2({"id": 12, "username": "a"}).id == "12"


def test_user_empty_url_location_and_image_become_none() -> None:
    user = user_from_v2({**FULL_USER, "url": "", "location": "", "profile_image_url": ""})
    assert user.url is None and user.location is None and user.profile_image_url is None


def test_user_missing_location_is_none() -> None:
    data = dict(FULL_USER)
    del data["location"]
    assert user_from_v2(data).location is None


def test_user_description_is_kept_even_when_empty() -> None:
    assert user_from_v2({**FULL_USER, "description": ""}).description == ""


def test_user_partial_or_null_metrics() -> None:
    partial = user_from_v2({"id": "1", "public_metrics": {"followers_count": 0}})
    assert partial.followers_count == 0  # zero is a count, not "unknown"
    assert partial.following_count is None and partial.like_count is None
    assert user_from_v2({"id": "1", "public_metrics": None}).followers_count is None


def test_user_unparseable_created_at_is_none() -> None:
    assert user_from_v2({"id": "1", "created_at": "yesterday"}).created_at is None
    assert user_from_v2({"id": "1", "created_at": 1234567890}).created_at is None


def test_users_from_includes_skips_entries_without_an_id() -> None:
    body = {"data": [], "includes": {"users": [{"id": "1", "username": "a"}, {"username": "no-id"}, {"id": 2}]}}
    assert [u.id for u in users_from_includes(body)] == ["1", "2"]
    assert users_from_includes({"data": []}) == []
    assert users_from_includes({"includes": None}) == []
    assert users_from_includes({"includes": {"users": None}}) == []


def test_parse_time() -> None:
    parsed = parse_time("2022-10-22T19:00:00.000Z")
    assert parsed == datetime(2022, 10, 22, 19, tzinfo=UTC)
    assert parsed is not None and parsed.utcoffset() == timedelta(0)
    assert parse_time(None) is None
    assert parse_time("") is None
    assert parse_time("not a date") is None


# Recipients --------------------------------------------------------------------------------------------


def test_recipient_of_one_to_one_both_orders() -> None:
    assert recipient_of({"sender_id": "111", "dm_conversation_id": "111-222"}) == "222"
    assert recipient_of({"sender_id": "222", "dm_conversation_id": "111-222"}) == "111"


def test_recipient_of_numeric_sender() -> None:
    assert recipient_of({"sender_id": 222, "dm_conversation_id": "111-222"}) == "111"


def test_recipient_of_note_to_self() -> None:
    assert recipient_of({"sender_id": "333", "dm_conversation_id": "333-333"}) == "333"


def test_recipient_of_note_to_self_named_only_by_participants() -> None:
    assert (
        recipient_of({"sender_id": "333", "dm_conversation_id": "1580000000000000000", "participant_ids": ["333"]})
        == "333"
    )


def test_recipient_of_sender_outside_the_conversation_is_impossible() -> None:
    with pytest.raises(UpstreamFailure):
        recipient_of({"id": "9", "sender_id": "999", "dm_conversation_id": "111-222"})


def test_recipient_of_from_participant_ids() -> None:
    event_ = {"sender_id": "111", "dm_conversation_id": "1580000000000000000", "participant_ids": ["111", "222"]}
    assert recipient_of(event_) == "222"
    assert recipient_of({"sender_id": "111", "participant_ids": [222]}) == "222"
    assert recipient_of({"sender_id": "111", "participant_ids": ["222"]}) == "222"


def test_recipient_of_a_group_is_none() -> None:
    group = {"sender_id": "111", "dm_conversation_id": "1580000000000000000", "participant_ids": ["111", "333", "222"]}
    assert recipient_of(group) is None
    # v2 sends no participant_ids for group messages at all.
    assert recipient_of({"sender_id": "111", "dm_conversation_id": "1580000000000000000"}) is None


@pytest.mark.parametrize("conversation", ["111-222-333", "111-abc", "-111", "111-", "١١١-222"])
def test_recipient_of_unusual_conversation_ids_fall_back_to_participants(conversation: str) -> None:
    assert (
        recipient_of({"sender_id": "111", "dm_conversation_id": conversation, "participant_ids": ["111", "4"]}) == "4"
    )
    assert recipient_of({"sender_id": "111", "dm_conversation_id": conversation}) is None


def test_recipient_of_non_numeric_participant_is_impossible() -> None:
    with pytest.raises(UpstreamFailure):
        recipient_of({"id": "9", "sender_id": "111", "participant_ids": ["111", "someone"]})


# Entities ----------------------------------------------------------------------------------------------

V2_ENTITIES: dict[str, Any] = {
    "hashtags": [{"start": 0, "end": 4, "tag": "dev"}],
    "urls": [
        {
            "start": 5,
            "end": 28,
            "url": "https://t.co/abc",
            "expanded_url": "https://developer.x.com/",
            "display_url": "developer.x.com",
        },
        {"start": 29, "end": 45, "url": "https://t.co/def"},
    ],
    "mentions": [
        {"start": 46, "end": 55, "username": "someone", "id": "777"},
        {"start": 56, "end": 60, "username": "ab"},
    ],
}
EXPECTED_ENTITIES = Entities(
    hashtags=(Hashtag("dev", 0, 4),),
    urls=(
        Url("https://t.co/abc", "https://developer.x.com/", "developer.x.com", 5, 28),
        Url("https://t.co/def", None, None, 29, 45),
    ),
    mentions=(Mention("someone", "777", 46, 55), Mention("ab", None, 56, 60)),
)


def test_entities_under_the_entities_key() -> None:
    assert entities_from_v2({"text": "x", "entities": V2_ENTITIES}) == EXPECTED_ENTITIES


def test_entities_at_top_level() -> None:
    assert entities_from_v2({"text": "x", **V2_ENTITIES}) == EXPECTED_ENTITIES


def test_no_entities() -> None:
    assert entities_from_v2({"text": "x"}) == Entities()
    assert entities_from_v2({"text": "x", "entities": None}) == Entities()
    assert entities_from_v2({"text": "x", "entities": {"hashtags": None}}) == Entities()


def test_message_carries_entities_from_either_place() -> None:
    nested = message_from_v2(event(entities=V2_ENTITIES))
    top = message_from_v2(event(**V2_ENTITIES))
    assert nested is not None and top is not None
    assert nested.entities == top.entities == EXPECTED_ENTITIES


def test_malformed_entity_is_an_upstream_failure() -> None:
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(entities={"hashtags": [{"tag": "x"}]}))  # no start/end
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(entities={"urls": ["https://t.co/abc"]}))


# Messages ----------------------------------------------------------------------------------------------


def test_message_from_v2() -> None:
    message = message_from_v2(event())
    assert message is not None
    assert message.id == "1583890000000000003"
    assert message.text == "hello"
    assert message.created_at == datetime(2022, 10, 22, 19, tzinfo=UTC)
    assert message.created_at.utcoffset() == timedelta(0)
    assert message.sender_id == "111"
    assert message.recipient_id == "222"
    assert message.conversation_id == "111-222"
    assert message.entities == Entities()


def test_message_numeric_ids_become_strings() -> None:
    message = message_from_v2(event(id=42, sender_id=222))
    assert message is not None
    assert (message.id, message.sender_id, message.recipient_id) == ("42", "222", "111")


def test_message_event_type_defaults_to_message_create() -> None:
    message = message_from_v2(event(event_type=...))
    assert message is not None and message.id == "1583890000000000003"


def test_message_without_text_has_empty_text() -> None:
    message = message_from_v2(event(text=...))
    assert message is not None and message.text == ""


@pytest.mark.parametrize("event_type", ["ParticipantsJoin", "ParticipantsLeave", "messagecreate", ""])
def test_events_that_are_not_messages_are_none(event_type: str) -> None:
    # Even a join event with no created_at or sender is simply not a message, never an error.
    assert message_from_v2(event(event_type=event_type)) is None
    assert message_from_v2({"id": "1", "event_type": event_type}) is None


def test_group_message_is_none() -> None:
    assert message_from_v2(event(dm_conversation_id="1580000000000000000", participant_ids=...)) is None


@pytest.mark.parametrize("created_at", [..., None, "", "not-a-date", 1666465200])
def test_missing_or_bad_created_at(created_at: Any) -> None:
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(created_at=created_at))


def test_missing_sender_id() -> None:
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(sender_id=...))


def test_missing_id() -> None:
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(id=...))


def test_sender_outside_the_conversation() -> None:
    with pytest.raises(UpstreamFailure):
        message_from_v2(event(sender_id="999"))
