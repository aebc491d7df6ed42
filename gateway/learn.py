"""Learning from v2 bodies that pass through the gateway on their way to someone else.

An integrator calling v2 through the pass-through (``gateway.passthrough``) reads the same DMs and users a
legacy destroy later needs; keeping them in the store spares that destroy its v2 lookups. Learning is a
side effect only: nothing here raises, and a body that is not what it should be is simply not learned.

A body is learned only when its request asked for every field the legacy view is built from. v2 sends the
fields a caller asked for and no more, so a sparse event (no ``created_at``, no ``entities``) or a sparse
user would otherwise overwrite what the gateway's own, complete lookups stored.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from gateway.errors import UpstreamFailure
from gateway.model import DirectMessage, Media, User
from gateway.store.base import MessageStore
from gateway.upstream.client import USER_FIELDS
from gateway.upstream.convert import media_from_includes, message_from_v2, user_from_v2, users_from_includes

log = logging.getLogger("gateway.learn")

_DM_PATH = re.compile(r"/2/(?:dm_events(?:/[^/]+)?|dm_conversations/.+/dm_events)")
_USERS_PATH = re.compile(r"/2/users(?:/.*)?")

# What a legacy view of a message needs beyond the id, text and type v2 always sends.
_NEEDED_EVENT_FIELDS = frozenset({"created_at", "sender_id", "dm_conversation_id", "entities"})
_NEEDED_USER_FIELDS = frozenset(USER_FIELDS.split(","))


def learnable(method: str, path: str) -> bool:
    """Whether a response to this request is one ``learn_from_v2`` reads (``path`` may carry a query)."""
    bare = urlsplit(path).path
    return method.upper() == "GET" and bool(_DM_PATH.fullmatch(bare) or _USERS_PATH.fullmatch(bare))


async def learn_from_v2(store: MessageStore, method: str, path: str, body: bytes) -> None:
    """Put the DMs and users of a v2 response body into ``store``. Never raises for bad input or a bad store.

    ``path`` is the request's path with its query (which says what fields the body can hold); ``body`` is
    the decoded JSON response body.
    """
    if not learnable(method, path):
        return
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(document, dict):
        return
    parts = urlsplit(path)
    query = _fields_asked(parts.query)
    messages: list[DirectMessage] = []
    users: list[User] = []
    if _DM_PATH.fullmatch(parts.path):
        if _NEEDED_EVENT_FIELDS <= query.get("dm_event.fields", frozenset()):
            messages = _messages(document.get("data"), _media(document))
    elif _USERS_PATH.fullmatch(parts.path):
        users.extend(_users(document.get("data")))
    if _NEEDED_USER_FIELDS <= query.get("user.fields", frozenset()):
        try:
            users.extend(users_from_includes(document))
        except (UpstreamFailure, KeyError, TypeError, AttributeError, ValueError):
            pass
    else:
        users = []  # sparse users would overwrite complete ones
    if messages:
        await _quietly(store.put_messages(messages), "put_messages")
    if users:
        await _quietly(store.put_users(_unique(users)), "put_users")


def _fields_asked(query: str) -> dict[str, frozenset[str]]:
    asked: dict[str, set[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        asked.setdefault(name, set()).update(v.strip() for v in value.split(","))
    return {name: frozenset(values) for name, values in asked.items()}


def _media(document: dict[str, Any]) -> dict[str, Media]:
    try:
        return media_from_includes(document)
    except (UpstreamFailure, AttributeError, ValueError):
        return {}


def _messages(data: Any, media: dict[str, Media]) -> list[DirectMessage]:
    events = data if isinstance(data, list) else [data]
    messages = []
    for event in events:
        if not isinstance(event, dict):
            continue
        try:
            message = message_from_v2(event, media)
        except (UpstreamFailure, AttributeError, ValueError):
            continue
        # An attachment the request did not expand would be stored as a bare media id: leave it to v2.
        if message is not None and (message.attachment is None or message.attachment.key in media):
            messages.append(message)
    return messages


def _users(data: Any) -> list[User]:
    items = data if isinstance(data, list) else [data]
    users = []
    for item in items:
        # The /2/users/{id}/tweets family answers tweets; a user always has a username, a tweet never.
        if isinstance(item, dict) and "id" in item and "username" in item and "text" not in item:
            try:
                users.append(user_from_v2(item))
            except (UpstreamFailure, KeyError, TypeError, AttributeError, ValueError):
                continue
    return users


def _unique(users: Iterable[User]) -> list[User]:
    return list({user.id: user for user in users}.values())


async def _quietly(call: Any, what: str) -> None:
    try:
        await call
    except Exception:  # noqa: BLE001 - learning must never fail the response it learned from
        log.warning("learning from a pass-through body failed in %s", what, exc_info=True)


class BoundedDecoder:
    """Decodes a Content-Encoding (gzip, deflate, br, or a chain of them) to at most ``limit`` bytes.

    ``decode`` returns None when the coding is unknown, brotli is not installed, the data is corrupt or
    the decoded body would pass the limit: in every case the body is not learned.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def decode(self, content_encoding: str, data: bytes) -> bytes | None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        try:
            for coding in reversed(codings):
                if coding == "identity":
                    continue
                result = self._one(coding, data)
                if result is None:
                    return None
                data = result
        except (zlib.error, OSError, EOFError, ValueError):
            return None
        except Exception:  # noqa: BLE001 - brotli's own error type
            return None
        return data if len(data) <= self.limit else None

    def _one(self, coding: str, data: bytes) -> bytes | None:
        if coding in ("gzip", "x-gzip"):
            return self._zlib(data, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            try:
                return self._zlib(data, zlib.MAX_WBITS)
            except zlib.error:
                return self._zlib(data, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
        if coding == "br":
            try:
                import brotli  # type: ignore[import-not-found]
            except ImportError:
                return None
            decoded: bytes = brotli.decompress(data)
            return decoded if len(decoded) <= self.limit else None
        return None

    def _zlib(self, data: bytes, wbits: int) -> bytes | None:
        decoder = zlib.decompressobj(wbits)
        decoded = decoder.decompress(data, self.limit + 1)
        if len(decoded) > self.limit or decoder.unconsumed_tail:
            return None
        decoded += decoder.flush()
        if not decoder.eof or len(decoded) > self.limit:
            return None
        return decoded
