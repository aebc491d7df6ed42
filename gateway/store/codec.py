"""Model objects to and from plain records (dicts of JSON types), the form every backend persists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from gateway.auth.credentials import OAuth2Grant
from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url, User

RECORD_VERSION = 1


def _date(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def message_to_record(message: DirectMessage) -> dict[str, Any]:
    entities = message.entities
    return {
        "v": RECORD_VERSION,
        "id": message.id,
        "text": message.text,
        "created_at": _date(message.created_at),
        "sender_id": message.sender_id,
        "recipient_id": message.recipient_id,
        "conversation_id": message.conversation_id,
        "hashtags": [[h.text, h.start, h.end] for h in entities.hashtags],
        "urls": [[u.url, u.expanded_url, u.display_url, u.start, u.end] for u in entities.urls],
        "mentions": [[m.username, m.user_id, m.start, m.end] for m in entities.mentions],
    }


def message_from_record(record: dict[str, Any]) -> DirectMessage:
    created_at = _parse_date(record["created_at"])
    assert created_at is not None
    return DirectMessage(
        id=record["id"],
        text=record["text"],
        created_at=created_at,
        sender_id=record["sender_id"],
        recipient_id=record["recipient_id"],
        conversation_id=record["conversation_id"],
        entities=Entities(
            hashtags=tuple(Hashtag(*item) for item in record["hashtags"]),
            urls=tuple(Url(*item) for item in record["urls"]),
            mentions=tuple(Mention(*item) for item in record["mentions"]),
        ),
    )


_USER_FIELDS = (
    "id", "username", "name", "description", "location", "url", "protected", "verified",
    "profile_image_url", "followers_count", "following_count", "tweet_count", "listed_count", "like_count",
)  # fmt: skip


def user_to_record(user: User) -> dict[str, Any]:
    record: dict[str, Any] = {"v": RECORD_VERSION}
    record.update((name, getattr(user, name)) for name in _USER_FIELDS)
    record["created_at"] = _date(user.created_at)
    return record


def user_from_record(record: dict[str, Any]) -> User:
    values = {name: record[name] for name in _USER_FIELDS}
    return User(created_at=_parse_date(record["created_at"]), **values)


def grant_to_record(grant: OAuth2Grant) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "expires_at": grant.expires_at,
    }


def grant_from_record(record: dict[str, Any]) -> OAuth2Grant:
    return OAuth2Grant(
        access_token=record["access_token"],
        refresh_token=record["refresh_token"],
        expires_at=record["expires_at"],
    )


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def loads(data: bytes | str) -> dict[str, Any]:
    return orjson.loads(data)
