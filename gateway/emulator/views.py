"""Turning stored v2 objects into response bodies: field selection, expansions and ``includes``.

v2 sends only the fields a client asked for, and users only when an expansion names them; the
gateway must cope with exactly that sparseness, so the emulator reproduces it faithfully.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from gateway.emulator.problems import resource_not_found

EVENT_FIELDS = frozenset(
    "id text event_type created_at dm_conversation_id sender_id participant_ids referenced_tweets"
    " attachments entities".split()
)
BASE_EVENT_FIELDS = ("id", "event_type", "text")

USER_FIELDS = frozenset(
    "id name username created_at description entities location pinned_tweet_id profile_image_url"
    " protected public_metrics url verified verified_type most_recent_tweet_id receives_your_dm".split()
)
BASE_USER_FIELDS = ("id", "name", "username")

MEDIA_FIELDS = frozenset(
    "media_key type url duration_ms height width preview_image_url public_metrics alt_text variants".split()
)
BASE_MEDIA_FIELDS = ("media_key", "type")

EXPANSIONS = frozenset({"sender_id", "participant_ids", "referenced_tweets.id", "attachments.media_keys"})
USER_EXPANSIONS = ("sender_id", "participant_ids")


def pick(obj: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """The requested fields the object actually has, in the object's own order."""
    return {name: value for name, value in obj.items() if name in fields}


def event_view(event: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """An event with ``fields`` added to the id, type and text v2 always sends."""
    return pick(event, {*BASE_EVENT_FIELDS, *fields})


def user_view(user: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """A user with ``fields`` on top of the id, name and username v2 always sends."""
    return pick(user, {*BASE_USER_FIELDS, *fields})


def expanded_users(
    events: Iterable[Mapping[str, Any]],
    expansions: Collection[str],
    users: Mapping[str, Mapping[str, Any]],
    user_fields: Collection[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The users the expansions name, each once, and a not-found error for each id that names nobody."""
    found: dict[str, dict[str, Any]] = {}
    missing: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        for expansion in USER_EXPANSIONS:
            if expansion not in expansions:
                continue
            for user_id in _ids(event.get(expansion)):
                if user_id in users:
                    found.setdefault(user_id, user_view(users[user_id], user_fields))
                else:
                    missing.setdefault((expansion, user_id), resource_not_found("user", expansion, user_id, "user"))
    return list(found.values()), list(missing.values())


def expanded_media(
    events: Iterable[Mapping[str, Any]],
    expansions: Collection[str],
    media: Mapping[str, Mapping[str, Any]],
    media_fields: Collection[str],
) -> list[dict[str, Any]]:
    """The media of the events' attachments when ``attachments.media_keys`` is expanded, each once, with
    ``media_fields`` on top of the key and type v2 always sends."""
    if "attachments.media_keys" not in expansions:
        return []
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        for key in event.get("attachments", {}).get("media_keys", ()):
            item = media.get(key.rpartition("_")[2])
            if item is not None:
                found.setdefault(key, pick(item, {*BASE_MEDIA_FIELDS, *media_fields}))
    return list(found.values())


def _ids(value: str | list[str] | None) -> list[str]:
    """``sender_id`` holds one id and ``participant_ids`` a list; either may be absent."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def document(
    data: Any,
    users: list[dict[str, Any]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    media: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A v2 response body; empty ``data``, ``includes`` and ``errors`` are left out, as v2 does."""
    body: dict[str, Any] = {}
    if data:
        body["data"] = data
    includes: dict[str, Any] = {}
    if users:
        includes["users"] = users
    if media:
        includes["media"] = media
    if includes:
        body["includes"] = includes
    if errors:
        body["errors"] = errors
    if meta is not None:
        body["meta"] = meta
    return body
