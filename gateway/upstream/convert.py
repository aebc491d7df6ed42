"""v2 JSON to the neutral model. The only place that knows what v2 bodies look like."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.errors import UpstreamFailure
from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url, User


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def user_from_v2(data: dict[str, Any]) -> User:
    metrics = data.get("public_metrics") or {}
    return User(
        id=str(data["id"]),
        username=data.get("username"),
        name=data.get("name"),
        description=data.get("description"),
        location=data.get("location") or None,
        url=data.get("url") or None,
        protected=bool(data.get("protected", False)),
        verified=bool(data.get("verified", False)),
        created_at=parse_time(data.get("created_at")),
        profile_image_url=data.get("profile_image_url") or None,
        followers_count=metrics.get("followers_count"),
        following_count=metrics.get("following_count"),
        tweet_count=metrics.get("tweet_count"),
        listed_count=metrics.get("listed_count"),
        like_count=metrics.get("like_count"),
    )


def users_from_includes(body: dict[str, Any]) -> list[User]:
    return [user_from_v2(u) for u in (body.get("includes") or {}).get("users") or () if "id" in u]


def recipient_of(event: dict[str, Any]) -> str | None:
    """The other side of a one-to-one message, or None for a group message (legacy DMs had no groups).

    One-to-one conversation ids are ``{smaller}-{larger}``; a note to self has both halves equal. Without
    such an id, ``participant_ids`` naming exactly one other user also makes a one-to-one message.
    """
    sender = str(event["sender_id"])
    conversation = str(event.get("dm_conversation_id") or "")
    halves = conversation.split("-")
    if len(halves) == 2 and all(h.isascii() and h.isdigit() for h in halves):
        if sender not in halves:
            raise UpstreamFailure(f"sender of event {event.get('id')} is not in conversation {conversation}")
        return halves[1] if halves[0] == sender else halves[0]
    participants = {str(p) for p in event.get("participant_ids") or ()}
    if participants == {sender}:
        return sender  # a note to self
    others = participants - {sender}
    if len(others) != 1:
        return None
    (other,) = others
    if not (other.isascii() and other.isdigit()):
        raise UpstreamFailure(f"event {event.get('id')} names participant {other!r}, not a user id")
    return other


def entities_from_v2(event: dict[str, Any]) -> Entities:
    source = event.get("entities") or event
    return Entities(
        hashtags=tuple(
            Hashtag(text=h["tag"], start=h["start"], end=h["end"]) for h in source.get("hashtags") or ()
        ),
        urls=tuple(
            Url(
                url=u["url"],
                expanded_url=u.get("expanded_url"),
                display_url=u.get("display_url"),
                start=u["start"],
                end=u["end"],
            )
            for u in source.get("urls") or ()
        ),
        mentions=tuple(
            Mention(username=m["username"], user_id=m.get("id"), start=m["start"], end=m["end"])
            for m in source.get("mentions") or ()
        ),
    )


def message_from_v2(event: dict[str, Any]) -> DirectMessage | None:
    """A legacy-style DM from a v2 event, or None for what legacy clients never saw as a DM: events that
    are not messages (joins, leaves) and messages to a group."""
    if event.get("event_type", "MessageCreate") != "MessageCreate":
        return None
    try:
        recipient_id = recipient_of(event)
        if recipient_id is None:
            return None
        created_at = parse_time(event.get("created_at"))
        if created_at is None:
            raise UpstreamFailure(f"event {event.get('id')} has no usable created_at")
        return DirectMessage(
            id=str(event["id"]),
            text=event.get("text") or "",
            created_at=created_at,
            sender_id=str(event["sender_id"]),
            recipient_id=recipient_id,
            conversation_id=event.get("dm_conversation_id"),
            entities=entities_from_v2(event),
        )
    except (KeyError, TypeError) as exc:
        raise UpstreamFailure(f"malformed v2 event: missing {exc}") from exc
