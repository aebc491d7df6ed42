"""The emulator's world: users, DM events, credentials, per-user deletions, faults and recorded requests.

Everything lives in plain dicts shaped like v2 JSON, so the seed file, the stored data and the
responses are the same objects seen at different moments. ``reset`` brings back the seed, which
lets one server be reused across tests and demo runs.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulator.codes import AuthorizationCodeBook
from gateway.emulator.faults import FaultRule
from gateway.emulator.grants import GrantBook
from gateway.emulator.oauth1 import OAuth1Keys
from gateway.emulator.request_tokens import RequestTokenBook
from gateway.emulator.ratelimit import DEFAULT_LIMITS, FIFTEEN_MINUTES, Limit, RateLimiter

Event = dict[str, Any]
User = dict[str, Any]

_ONE_TO_ONE = re.compile(r"([0-9]+)-([0-9]+)", re.ASCII)
_REQUIRED_EVENT_KEYS = ("id", "event_type", "created_at", "dm_conversation_id", "sender_id")
_REQUIRED_USER_KEYS = ("id", "name", "username")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the emulator received it, so tests can check what the gateway really sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @classmethod
    def of(cls, request: web.BaseRequest) -> RecordedRequest:
        return cls(
            method=request.method,
            path=request.path,
            query={name: request.query[name] for name in request.query},
            headers={str(name): value for name, value in request.headers.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers}


def newest_first(event: Event) -> tuple[str, int]:
    """Sort key of v2's listing order: creation time, then the snowflake id as a tie-break.

    The timestamps all share one ISO 8601 format, so comparing them as strings orders them in time.
    """
    return event["created_at"], int(event["id"])


class EmulatorState:
    """All mutable emulator data. Tests may read and change it directly between requests."""

    users: dict[str, User]
    events: dict[str, Event]
    # Uploaded media by media id (the part of the media key after "_"), each with its uploader's owner_id.
    media: dict[str, dict[str, Any]]
    tokens: dict[str, str]
    oauth1: OAuth1Keys
    oauth2: GrantBook
    # Request tokens of OAuth 1.0a sign-ins under way (``/oauth/request_token`` to ``/oauth/access_token``).
    logins: RequestTokenBook
    # Authorization codes of OAuth 2.0 sign-ins (``/i/oauth2/authorize`` to ``/2/oauth2/token``).
    codes: AuthorizationCodeBook
    conversations: dict[str, frozenset[str]]
    limiter: RateLimiter
    # When on, JSON answers are gzip-compressed for a request whose Accept-Encoding names gzip, as X's do.
    compress_responses: bool

    def __init__(self, seed: Mapping[str, Any], *, clock: Callable[[], float] = time.time) -> None:
        self._seed = copy.deepcopy(dict(seed))
        self._clock = clock
        self._deleted: set[tuple[str, str]] = set()
        self.faults: list[FaultRule] = []
        self.requests: list[RecordedRequest] = []
        self.compress_responses = False
        self.reset()

    @classmethod
    def from_seed(cls, seed: Mapping[str, Any], *, clock: Callable[[], float] = time.time) -> EmulatorState:
        """A state holding a private copy of ``seed``; ``clock`` drives rate-limit windows and credentials."""
        return cls(seed, clock=clock)

    def reset(self) -> None:
        """Back to the seed: its data, limits and grants; no deletions, faults, requests, nonces, counters
        or sign-ins under way; access tokens issued by sign-ins are gone.

        Refreshed OAuth 2.0 tokens vanish and the seed's refresh tokens work again.
        """
        seed = copy.deepcopy(self._seed)
        self.users = _index(seed.get("users", []), _REQUIRED_USER_KEYS, "user")
        self.events = _index(seed.get("events", []), _REQUIRED_EVENT_KEYS, "event")
        self.media = {
            item["media_key"].rpartition("_")[2]: item
            for item in _checked(seed.get("media", []), ("media_key", "type", "owner_id"), "media")
        }
        self.tokens = dict(seed.get("tokens", {}))
        self.oauth1 = OAuth1Keys.from_seed(seed.get("oauth1", {}))
        self.oauth2 = GrantBook.from_seed(seed.get("oauth2", {}))
        self.logins = RequestTokenBook()
        self.codes = AuthorizationCodeBook()
        self.conversations = {
            conversation_id: frozenset(member_ids)
            for conversation_id, member_ids in seed.get("conversations", {}).items()
        }
        self.limiter = RateLimiter(DEFAULT_LIMITS, self._clock)
        for endpoint, config in seed.get("rate_limits", {}).items():
            limit = Limit.from_json(config)
            self.set_rate_limit(endpoint, limit.limit, limit.window)
        self._deleted.clear()
        self.faults.clear()
        self.requests.clear()
        self.compress_responses = False

    def set_rate_limit(self, endpoint: str, limit: int, window: float = FIFTEEN_MINUTES) -> None:
        """Limit ``endpoint`` (as ``"DELETE /2/dm_events/:id"``) from now on, with fresh windows."""
        if endpoint not in DEFAULT_LIMITS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(DEFAULT_LIMITS)}")
        self.limiter.configure(endpoint, Limit(limit, window))

    def rate_limit_for(self, endpoint: str) -> Limit:
        return self.limiter.limits[endpoint]

    def now(self) -> float:
        """The emulator's time, in epoch seconds: what timestamps and expiries are judged against."""
        return self._clock()

    def expire_access_token(self, token: str) -> None:
        """Let an OAuth 2.0 access token expire now; ``KeyError`` for a seed ``tokens`` entry or a stranger.

        The plain ``tokens`` never expire; delete one from ``tokens`` to revoke it instead.
        """
        self.oauth2.expire(token, self._clock())

    @property
    def token_refreshes(self) -> int:
        """How many refreshes ``POST /2/oauth2/token`` has granted since the last reset."""
        return self.oauth2.refreshes

    def valid_refresh_tokens(self) -> frozenset[str]:
        """The refresh tokens that would be honoured now: the seed's unspent ones and those issued since."""
        return frozenset(self.oauth2.refresh)

    def record(self, request: web.BaseRequest) -> None:
        self.requests.append(RecordedRequest.of(request))

    def user_named(self, username: str) -> User | None:
        """The user with this username, matched without regard to case as on X; None for no one."""
        wanted = username.lower()
        return next((u for u in self.users.values() if str(u["username"]).lower() == wanted), None)

    def participants(self, conversation_id: str) -> frozenset[str]:
        """Members of a conversation: the seed's list for a group, else the two ids in a one-to-one id."""
        if conversation_id in self.conversations:
            return self.conversations[conversation_id]
        one_to_one = _ONE_TO_ONE.fullmatch(conversation_id)
        return frozenset(one_to_one.groups()) if one_to_one else frozenset()

    def is_participant(self, event: Event, user_id: str) -> bool:
        return user_id == event["sender_id"] or user_id in self.participants(event["dm_conversation_id"])

    def is_deleted_for(self, event_id: str, user_id: str) -> bool:
        return (event_id, user_id) in self._deleted

    def delete_for(self, event_id: str, user_id: str) -> None:
        """Hide the event from this user only; v2 deletes a DM for the caller, never for the others."""
        self._deleted.add((event_id, user_id))

    def visible_events(self, user_id: str) -> list[Event]:
        """The events this user can still see, newest first."""
        visible = (
            event
            for event in self.events.values()
            if self.is_participant(event, user_id) and not self.is_deleted_for(event["id"], user_id)
        )
        return sorted(visible, key=newest_first, reverse=True)


def _index(items: list[dict[str, Any]], required: tuple[str, ...], kind: str) -> dict[str, dict[str, Any]]:
    """Objects by id, refusing a seed entry that lacks a key the handlers rely on."""
    return {item["id"]: item for item in _checked(items, required, kind)}


def _checked(items: list[dict[str, Any]], required: tuple[str, ...], kind: str) -> list[dict[str, Any]]:
    for item in items:
        missing = [key for key in required if key not in item]
        if missing:
            raise ValueError(f"seed {kind} {item.get('id', '?')!r} lacks {', '.join(missing)}")
    return items


STATE_KEY = web.AppKey("emulator_state", EmulatorState)
