"""Model objects to and from plain records (dicts of JSON types), the form every backend persists.

DM text may be encrypted at rest: given a ``TextCipher``, a message record carries ``text_enc`` (a Fernet
token, from the ``cryptography`` package) instead of ``text``. Records written before encryption was turned
on keep ``text`` and stay readable. A ``text_enc`` that the configured key cannot open (another key, or no key
at all) is never returned as text: ``read_message`` logs it and answers a miss, so the gateway asks v2 again.

Credential secrets are encrypted with the same key. A v2 grant's record carries ``access_token_enc`` and
``refresh_token_enc`` instead of ``access_token`` and ``refresh_token``. A consumer's or a token's secret,
stored on its own, is *sealed*: the byte 0xFF and then the Fernet token, bytes that no clear secret can be
(a clear secret is stored as UTF-8 text, in which 0xFF never occurs). Secrets written in clear before the key
was set stay readable, and are sealed when they are written again. A secret the key cannot open is an
``UndecryptableText`` error for the store to report: a credential is never treated as missing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from gateway.auth.credentials import OAuth2Grant, RequestToken
from gateway.model import DirectMessage, Entities, Hashtag, Media, Mention, Url, User
from gateway.store.base import StoreError

#: 2: a message record may carry ``attachment`` (its media, as a list of Media's fields). Version 1 records,
#: which never do, read as they always did.
RECORD_VERSION = 2

log = logging.getLogger("gateway.store")


class UndecryptableText(Exception):
    """Stored text or a stored secret cannot be opened with the configured key (or there is no key)."""


@contextmanager
def opened(what: str) -> Iterator[None]:
    """Reads a credential record inside: one the configured key cannot open is a ``StoreError`` naming
    ``what`` (a backend and the record, never its content), not a missing credential."""
    try:
        yield
    except UndecryptableText as exc:
        raise StoreError(f"{what} cannot be read: {exc}") from None


class TextCipher:
    """Encrypts and decrypts DM text with one Fernet key (AES-128-CBC with HMAC-SHA256, authenticated)."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)  # ValueError for anything but the urlsafe base64 of 32 bytes

    def __repr__(self) -> str:
        return "TextCipher(...)"  # never the key

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str | bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError, TypeError, ValueError):
            raise UndecryptableText("it does not open with the configured key") from None


def cipher_for(key: str | None) -> TextCipher | None:
    return TextCipher(key) if key else None


_NO_KEY = "it is encrypted and no store.encryption_key is configured"

#: The first byte of a sealed secret: never the first byte of a secret stored in clear (UTF-8 text).
SEALED = b"\xff"


def seal(secret: str, cipher: TextCipher | None) -> str | bytes:
    """What to store for ``secret``: the secret itself without a cipher, else 0xFF and its Fernet token."""
    return secret if cipher is None else SEALED + cipher.encrypt(secret).encode("ascii")


def unseal(stored: str | bytes, cipher: TextCipher | None) -> str:
    """The secret a stored value holds, sealed or in clear (as text, or its UTF-8 bytes as Redis gives it)."""
    if isinstance(stored, str):
        return stored
    if not stored.startswith(SEALED):
        try:
            return stored.decode("utf-8")
        except UnicodeDecodeError:
            raise UndecryptableText("it is neither text nor sealed") from None
    if cipher is None:
        raise UndecryptableText(_NO_KEY)
    return cipher.decrypt(stored[len(SEALED) :])


def seal_request_token(token: RequestToken, cipher: TextCipher | None) -> str | bytes:
    """A pending request token as one stored value: all of it, secrets and verifiers included, sealed."""
    return seal(dumps(dataclasses.asdict(token)).decode("utf-8"), cipher)


def unseal_request_token(stored: str | bytes, cipher: TextCipher | None) -> RequestToken:
    """The request token ``seal_request_token`` stored; ``UndecryptableText`` if it cannot be read."""
    try:
        return RequestToken(**loads(unseal(stored, cipher)))
    except (TypeError, ValueError) as exc:
        raise UndecryptableText(f"not a request token record ({type(exc).__name__})") from None


def _date(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def message_to_record(message: DirectMessage, cipher: TextCipher | None = None) -> dict[str, Any]:
    entities = message.entities
    text_field = ("text", message.text) if cipher is None else ("text_enc", cipher.encrypt(message.text))
    record = {
        "v": RECORD_VERSION,
        "id": message.id,
        text_field[0]: text_field[1],
        "created_at": _date(message.created_at),
        "sender_id": message.sender_id,
        "recipient_id": message.recipient_id,
        "conversation_id": message.conversation_id,
        "hashtags": [[h.text, h.start, h.end] for h in entities.hashtags],
        "urls": [[u.url, u.expanded_url, u.display_url, u.start, u.end] for u in entities.urls],
        "mentions": [[m.username, m.user_id, m.start, m.end] for m in entities.mentions],
    }
    if message.attachment is not None:
        record["attachment"] = [getattr(message.attachment, name) for name in _MEDIA_FIELDS]
    return record


_MEDIA_FIELDS = Media.__slots__


def message_from_record(record: dict[str, Any], cipher: TextCipher | None = None) -> DirectMessage:
    """Raises ``UndecryptableText`` for encrypted text the cipher cannot open; ``read_message`` turns it into a miss."""
    created_at = _parse_date(record["created_at"])
    assert created_at is not None
    if "text_enc" in record:
        if cipher is None:
            raise UndecryptableText(_NO_KEY)
        text = cipher.decrypt(record["text_enc"])
    else:
        text = record["text"]
    return DirectMessage(
        id=record["id"],
        text=text,
        created_at=created_at,
        sender_id=record["sender_id"],
        recipient_id=record["recipient_id"],
        conversation_id=record["conversation_id"],
        entities=_entities(record["hashtags"], record["urls"], record["mentions"]),
        attachment=Media(*attachment) if (attachment := record.get("attachment")) else None,
    )


#: Most messages carry no entities; one shared (immutable) value stands for none at all.
NO_ENTITIES = Entities()


def _entities(hashtags: list[list[Any]], urls: list[list[Any]], mentions: list[list[Any]]) -> Entities:
    if not (hashtags or urls or mentions):
        return NO_ENTITIES
    return Entities(
        hashtags=tuple(Hashtag(*item) for item in hashtags),
        urls=tuple(Url(*item) for item in urls),
        mentions=tuple(Mention(*item) for item in mentions),
    )


def read_message(record: dict[str, Any], cipher: TextCipher | None = None) -> DirectMessage | None:
    """The message in ``record``, or None (logged, never the ciphertext) when its text cannot be decrypted."""
    try:
        return message_from_record(record, cipher)
    except UndecryptableText as exc:
        log.warning("stored message %s treated as a miss: %s", record.get("id"), exc)
        return None


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


def grant_to_record(grant: OAuth2Grant, cipher: TextCipher | None = None) -> dict[str, Any]:
    if cipher is None:
        tokens = {"access_token": grant.access_token, "refresh_token": grant.refresh_token}
    else:
        refresh = grant.refresh_token
        tokens = {
            "access_token_enc": cipher.encrypt(grant.access_token),
            "refresh_token_enc": cipher.encrypt(refresh) if refresh is not None else None,
        }
    record = {"v": RECORD_VERSION, **tokens, "expires_at": grant.expires_at}
    if grant.user_id is not None:
        record["user_id"] = grant.user_id
    return record


def grant_from_record(record: dict[str, Any], cipher: TextCipher | None = None) -> OAuth2Grant:
    """Raises ``UndecryptableText`` for encrypted tokens the cipher cannot open."""
    if "access_token_enc" not in record:
        access, refresh = record["access_token"], record["refresh_token"]
    elif cipher is None:
        raise UndecryptableText(_NO_KEY)
    else:
        access = cipher.decrypt(record["access_token_enc"])
        sealed_refresh = record["refresh_token_enc"]
        refresh = cipher.decrypt(sealed_refresh) if sealed_refresh is not None else None
    return OAuth2Grant(
        access_token=access, refresh_token=refresh, expires_at=record["expires_at"], user_id=record.get("user_id")
    )


def dumps(record: Any) -> bytes:
    return orjson.dumps(record)


def loads(data: bytes | str) -> dict[str, Any]:
    return orjson.loads(data)
