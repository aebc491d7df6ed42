"""The neutral model: the only currency between dialects, the service, the store and the upstream edge.

v2 JSON becomes these objects in ``gateway.upstream.convert``; legacy shapes are made from them in
``gateway.render``. Every object is frozen, so a value read from the store can be shared freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Hashtag:
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Url:
    url: str
    expanded_url: str | None
    display_url: str | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Mention:
    username: str
    user_id: str | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Entities:
    hashtags: tuple[Hashtag, ...] = ()
    urls: tuple[Url, ...] = ()
    mentions: tuple[Mention, ...] = ()


@dataclass(frozen=True, slots=True)
class User:
    """A user as far as v2 describes one. Counts and optional fields are None when v2 did not say."""

    id: str
    username: str | None = None
    name: str | None = None
    description: str | None = None
    location: str | None = None
    url: str | None = None
    protected: bool = False
    verified: bool = False
    created_at: datetime | None = None
    profile_image_url: str | None = None
    followers_count: int | None = None
    following_count: int | None = None
    tweet_count: int | None = None
    listed_count: int | None = None
    like_count: int | None = None

    @property
    def known(self) -> bool:
        """False for a placeholder made from an id alone (a suspended or deleted account)."""
        return self.username is not None

    def __hash__(self) -> int:
        # Equal users have equal ids, so the id alone is a valid hash, and a cheap one: a user is hashed for
        # every body that renders it (the renderer's cache of rendered users is keyed by the user).
        return hash(self.id)


@dataclass(frozen=True, slots=True)
class Media:
    """A message's attachment: v2's media object (``attachments.media_keys`` expanded with
    ``media.fields``). ``id`` is the media id an upload answered and a send names; ``url`` is the picture
    (a video's preview image). What v2 did not say is None."""

    id: str
    key: str | None = None
    type: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    alt_text: str | None = None


@dataclass(frozen=True, slots=True)
class DirectMessage:
    id: str
    text: str
    created_at: datetime
    sender_id: str
    recipient_id: str
    conversation_id: str | None = None
    entities: Entities = field(default_factory=Entities)
    #: The one media attachment v2 allows a message, if it has one.
    attachment: Media | None = None


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message with both of its users: everything a dialect needs to render a legacy DM."""

    message: DirectMessage
    sender: User
    recipient: User


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The upstream's rate-limit state, carried to legacy clients in their dialect's header names."""

    limit: int
    remaining: int
    reset: int


class UpstreamCredential(Protocol):
    """What the gateway presents to X API v2 on a caller's behalf; ``gateway.auth.upstream`` has the kinds
    (a bearer token, OAuth 1.0a re-signing, a refreshable OAuth 2.0 grant)."""

    async def authorization(self, method: str, url: str) -> str:
        """The ``Authorization`` header value for one request (``url`` includes its query string)."""

    async def renew(self, rejected: str) -> bool:
        """Called after v2 answered 401 to ``rejected``; True if a retry with a new header is worthwhile."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and the credential the gateway presents upstream on their behalf.

    ``source`` says how the caller proved who they are (bearer, sidecar, oauth1, basic); ``identity`` is a
    stable name for that caller that is never a secret (a bearer token appears only as a digest), used to
    know whether a recorded deletion was theirs. Credentials render their own ``repr`` without secrets, so
    a Principal is safe in a log line or a traceback.
    """

    credential: UpstreamCredential
    source: str
    identity: str


@dataclass(frozen=True, slots=True)
class DestroyDM:
    """Delete one direct message. ``want_body`` is False for dialects that answer 204."""

    id: str
    want_body: bool = True
    include_entities: bool = True


@dataclass(frozen=True, slots=True)
class ShowDM:
    """Read one direct message, as v2 shows it to the caller now. ``users_shown`` is False for dialects
    that show users by id only: their users are still learned, but a failure to look them up is not the
    caller's problem."""

    id: str
    include_entities: bool = True
    users_shown: bool = True


@dataclass(frozen=True, slots=True)
class ListDMs:
    """A page of the caller's one-to-one messages, newest first, paged the way the classic APIs paged.

    ``box`` is ``received`` (sent to the caller) or ``sent`` (sent by the caller). ``since_id`` and
    ``max_id`` bound the ids (greater than, at most); ``page`` counts from 1 in pages of ``count``.
    """

    box: str
    count: int
    since_id: int | None = None
    max_id: int | None = None
    page: int = 1
    include_entities: bool = True


@dataclass(frozen=True, slots=True)
class ListEvents:
    """A page of the caller's one-to-one messages, sent and received, paged by an opaque cursor (v2's
    pagination token)."""

    count: int
    cursor: str | None = None


#: The longest message text v2 accepts, in characters.
MAX_TEXT = 10_000


@dataclass(frozen=True, slots=True)
class SendDM:
    """Send a one-to-one message to the user named by id or by screen name (exactly one of them), with at
    most one media attachment (``media_id``, as an upload answered it)."""

    text: str
    recipient_id: str | None = None
    screen_name: str | None = None
    include_entities: bool = True
    media_id: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyCredentials:
    """The user the caller's credential acts for, as v2 describes them now."""


@dataclass(frozen=True, slots=True)
class ShowUser:
    """One user, by id or by screen name (exactly one of them)."""

    user_id: str | None = None
    screen_name: str | None = None


#: How many users one lookup may name, ids and screen names together.
MAX_LOOKUP = 100


@dataclass(frozen=True, slots=True)
class LookupUsers:
    """Users by ids and screen names (at most ``MAX_LOOKUP`` in all), each named once."""

    user_ids: tuple[str, ...] = ()
    screen_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """The caller's quota on each of ``endpoints`` (v2 endpoint templates, ``GET /2/dm_events``), as v2
    last reported it."""

    endpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What a client asks of the service itself and is answered without upstream: ``topic`` is ``test``,
    ``configuration``, ``config`` or ``version``. ``server`` and ``path`` say where the client reached the
    API (the host it named, the API's path below it), for answers that tell it."""

    topic: str
    server: str = ""
    path: str = ""


Operation = (
    DestroyDM
    | ShowDM
    | ListDMs
    | ListEvents
    | SendDM
    | VerifyCredentials
    | ShowUser
    | LookupUsers
    | RateLimitStatus
    | ServiceInfo
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the service hands back to a dialect: the message (if one is to be shown), or the messages of a
    list with the cursor of the next page, and the rate-limit state. A user call answers ``users``; a quota
    call answers ``quotas``, each v2 endpoint with the caller's quota there, and ``caller``, a name for the
    caller that is never a secret."""

    view: MessageView | None = None
    rate_limit: RateLimit | None = None
    views: tuple[MessageView, ...] = ()
    next_cursor: str | None = None
    users: tuple[User, ...] = ()
    quotas: tuple[tuple[str, RateLimit], ...] = ()
    caller: str | None = None
