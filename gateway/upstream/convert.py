"""v2 JSON to the neutral model. The only place that knows what v2 bodies look like.

v2's answers are taken as they come, so every value is checked for the type it must have: an optional field
of another type counts as absent, and an id that is not one, or a message or entity that cannot be read, is
an ``UpstreamFailure`` (an answer the gateway cannot use), never an exception of Python's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.errors import UpstreamFailure
from gateway.ids import is_id
from gateway.model import DirectMessage, Entities, Hashtag, Media, Mention, Url, User


def parse_time(value: Any) -> datetime | None:
    """A v2 time, or None: also for one that cannot be told in UTC (the first or last hours of the calendar
    with an offset that takes them past it)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed


def v2_id(value: Any, what: str) -> str:
    """An id in a v2 answer (a user's or an event's): digits, as v2 sends ids, or a number."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not is_id(text):
        raise UpstreamFailure(f"v2 named {what} by {str(value)[:40]!r}, not an id")
    return text


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _array(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def user_from_v2(data: dict[str, Any]) -> User:
    metrics = _object(data.get("public_metrics"))
    return User(
        id=v2_id(data.get("id"), "a user"),
        username=_text(data.get("username")),
        name=_text(data.get("name")),
        description=_text(data.get("description")),
        location=_text(data.get("location")) or None,
        url=_text(data.get("url")) or None,
        protected=data.get("protected") is True,
        verified=data.get("verified") is True,
        created_at=parse_time(data.get("created_at")),
        profile_image_url=_text(data.get("profile_image_url")) or None,
        followers_count=_count(metrics.get("followers_count")),
        following_count=_count(metrics.get("following_count")),
        tweet_count=_count(metrics.get("tweet_count")),
        listed_count=_count(metrics.get("listed_count")),
        like_count=_count(metrics.get("like_count")),
    )


def user_from_answer(body: dict[str, Any]) -> User | None:
    """The user of a v2 lookup of one (by id, by username, ``/2/users/me``), or None when v2 answered
    ``errors`` alone: it knows no such user."""
    data = body.get("data")
    if data is None:
        return None
    if not isinstance(data, dict) or "id" not in data:
        raise UpstreamFailure("v2 answered a user lookup with data that is no user")
    return user_from_v2(data)


def users_from_answer(body: dict[str, Any]) -> list[User]:
    """The users of a v2 lookup of several (``/2/users``, ``/2/users/by``), in v2's order; v2 leaves
    ``data`` out when it knows none of them."""
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise UpstreamFailure("v2 listed users as something other than an array")
    return [user_from_v2(u) for u in data if isinstance(u, dict) and "id" in u]


def included_users(body: dict[str, Any]) -> list[dict[str, Any]]:
    """v2's JSON of each user in a v2 answer's ``includes.users`` (those with an id), for ``user_from_v2``."""
    users = _object(body.get("includes")).get("users")
    return [u for u in _array(users) if isinstance(u, dict) and "id" in u]


def users_from_includes(body: dict[str, Any]) -> list[User]:
    return [user_from_v2(u) for u in included_users(body)]


def recipient_of(event: dict[str, Any]) -> str | None:
    """The other side of a one-to-one message, or None for a group message (legacy DMs had no groups).

    One-to-one conversation ids are ``{smaller}-{larger}``; a note to self has both halves equal. Without
    such an id, ``participant_ids`` naming exactly one other user also makes a one-to-one message.
    """
    sender = v2_id(event.get("sender_id"), "a sender")
    conversation = _text(event.get("dm_conversation_id")) or ""
    halves = conversation.split("-")
    if len(halves) == 2 and all(h.isascii() and h.isdigit() for h in halves):
        if sender not in halves:
            event_id = str(event.get("id"))[:40]
            raise UpstreamFailure(f"sender of event {event_id} is not in conversation {conversation[:80]}")
        other = halves[1] if halves[0] == sender else halves[0]
        return v2_id(other, "a participant")
    participants = {str(p) for p in _array(event.get("participant_ids")) if isinstance(p, str | int)}
    if participants == {sender}:
        return sender  # a note to self
    others = participants - {sender}
    if len(others) != 1:
        return None
    (other,) = others
    return v2_id(other, "a participant")


def _span(entity: Any) -> tuple[dict[str, Any], int, int]:
    """An entity with its start and end, which must be numbers."""
    if not isinstance(entity, dict):
        raise UpstreamFailure(f"an entity that is not an object: {str(entity)[:40]!r}")
    start, end = _count(entity.get("start")), _count(entity.get("end"))
    if start is None or end is None:
        raise UpstreamFailure("an entity without a numeric start and end")
    return entity, start, end


def _required(entity: dict[str, Any], name: str) -> str:
    value = entity.get(name)
    if not isinstance(value, str):
        raise UpstreamFailure(f"an entity without {name}")
    return value


def entities_from_v2(event: dict[str, Any]) -> Entities:
    nested = event.get("entities")
    source = nested if isinstance(nested, dict) and nested else event
    hashtags = [_span(h) for h in _array(source.get("hashtags"))]
    urls = [_span(u) for u in _array(source.get("urls"))]
    mentions = [_span(m) for m in _array(source.get("mentions"))]
    return Entities(
        hashtags=tuple(Hashtag(text=_required(h, "tag"), start=start, end=end) for h, start, end in hashtags),
        urls=tuple(
            Url(
                url=_required(u, "url"),
                expanded_url=_text(u.get("expanded_url")),
                display_url=_text(u.get("display_url")),
                start=start,
                end=end,
            )
            for u, start, end in urls
        ),
        mentions=tuple(
            Mention(
                username=_required(m, "username"),
                user_id=v2_id(m["id"], "a mentioned user") if m.get("id") is not None else None,
                start=start,
                end=end,
            )
            for m, start, end in mentions
        ),
    )


def media_from_includes(body: dict[str, Any]) -> dict[str, Media]:
    """The media objects of a v2 answer's ``includes.media`` (``expansions=attachments.media_keys``), by
    media key."""
    found: dict[str, Media] = {}
    for item in _array(_object(body.get("includes")).get("media")):
        if not isinstance(item, dict) or not isinstance(item.get("media_key"), str):
            continue
        key = item["media_key"]
        found[key] = Media(
            id=_media_id(key),
            key=key,
            type=_text(item.get("type")),
            url=_text(item.get("url")) or _text(item.get("preview_image_url")),
            width=_count(item.get("width")),
            height=_count(item.get("height")),
            alt_text=_text(item.get("alt_text")),
        )
    return found


def _media_id(key: str) -> str:
    """The media id in a media key (``3_1583890000000000100``: type, then the id an upload answered)."""
    return v2_id(key.rpartition("_")[2], "a media key")


def _attachment(event: dict[str, Any], media: dict[str, Media] | None) -> Media | None:
    """The event's media attachment, expanded when ``media`` has it (else known by its id alone)."""
    keys = _array(_object(event.get("attachments")).get("media_keys"))
    if not keys:
        return None
    key = keys[0]
    if not isinstance(key, str):
        raise UpstreamFailure("an attachment whose media key is not a string")
    return (media or {}).get(key) or Media(id=_media_id(key), key=key)


def message_from_v2(event: dict[str, Any], media: dict[str, Media] | None = None) -> DirectMessage | None:
    """A legacy-style DM from a v2 event, or None for what legacy clients never saw as a DM: events that
    are not messages (joins, leaves) and messages to a group. ``media`` is the answer's
    ``media_from_includes``, for the event's attachment."""
    if event.get("event_type", "MessageCreate") != "MessageCreate":
        return None
    recipient_id = recipient_of(event)
    if recipient_id is None:
        return None
    created_at = parse_time(event.get("created_at"))
    if created_at is None:
        raise UpstreamFailure(f"event {str(event.get('id'))[:40]} has no usable created_at")
    return DirectMessage(
        id=v2_id(event.get("id"), "an event"),
        text=_text(event.get("text")) or "",
        created_at=created_at,
        sender_id=v2_id(event.get("sender_id"), "a sender"),
        recipient_id=recipient_id,
        conversation_id=_text(event.get("dm_conversation_id")),
        entities=entities_from_v2(event),
        attachment=_attachment(event, media),
    )
