"""The dialect-blind heart: takes an Operation, talks to the store and upstream, returns model objects.

Ordering matters for the one promise the gateway makes about data: nothing is changed in the store until
the upstream delete has succeeded. The legacy body is assembled *before* the delete (from the store, or from
v2 on a miss), so a message that could not be described is never deleted, and a failed or timed-out delete
leaves the stored message exactly as it was.

Everything else a legacy client does is read from v2 as it is now (v2 decides what the caller may see) and
learned on the way: every message read, listed or sent, and every user named, goes into the store, so a
later destroy can answer its full body without asking v2.

A stored message answers only a participant of it: the caller's own v2 user id (asked of ``GET /2/users/me``
once per credential and remembered; a Basic user's again when their grant changes) must be its sender or
recipient. For anyone else the store counts as a miss, so v2 answers as it would had the gateway never seen
the message. A deletion is recorded after v2 confirmed it and the answer is made: deletions are queued and
handed to the store in batches by one task at a time (``drain()`` waits for them before the store closes),
and so is the message a store-miss destroy read from v2, whatever v2 then answered the delete, put in the
store before its deletion.
Each recorded deletion is a tombstone of its deleter: a retry that v2 answers 404 within the tombstone window
is answered as the first call was, for a caller still a participant; a 404 after a lost attempt
(``NotFoundAfterLostAttempt``) counts as the deletion for a participant only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar

import orjson

from gateway.errors import (
    EmptyText,
    GatewayError,
    InvalidMedia,
    InvalidParameter,
    MessageNotFound,
    MessageToSelf,
    NoUserMatches,
    RecipientNotFound,
    RecipientRefuses,
    TextTooLong,
    UpstreamBadRequest,
    UpstreamFailure,
    UserNotFound,
)
from gateway.ids import is_id
from gateway.model import (
    MAX_TEXT,
    DestroyDM,
    DirectMessage,
    ListDMs,
    ListEvents,
    LookupUsers,
    Media,
    MessageView,
    Operation,
    Outcome,
    Principal,
    RateLimit,
    RateLimitStatus,
    SendDM,
    ServiceInfo,
    ShowDM,
    ShowUser,
    User,
    VerifyCredentials,
)
from gateway.store.base import MessageStore, StoreError
from gateway.upstream.client import NotFoundAfterLostAttempt, UpstreamClient, V2Response
from gateway.upstream.convert import (
    included_users,
    media_from_includes,
    message_from_v2,
    user_from_answer,
    user_from_v2,
    users_from_answer,
)

log = logging.getLogger("gateway.service")
T = TypeVar("T")

#: The largest page v2 lists (``max_results``).
V2_PAGE_SIZE = 100
#: How many v2 pages one classic list call may read to find its page: 5,000 events, far past the 800
#: messages the classic APIs ever returned.
MAX_SCAN_PAGES = 50
#: How many callers' own user ids are remembered (a credential never changes whom it acts for; a Basic
#: user's is remembered with the grant it was asked with, since the user may be given another).
CALLER_CACHE_SIZE = 10_000
#: How many user ids one ``GET /2/users`` may name.
V2_USERS_PER_LOOKUP = 100
#: How many listed events, and how many users named in v2's answers, are remembered as learned (each by a
#: digest of its JSON, with what it was made into: a few hundred bytes whatever the size of a message), and
#: for how long at most: a message listed again unchanged after that is put in the store again, so the
#: store's retention counts from a recent listing. (``DMService`` takes a shorter time for a store that keeps
#: things for less than twice as long.)
LEARNED_SIZE = 5_000
#: v2 event pages kept as they were made into messages and users, by a digest of their bytes, at most.
LEARNED_PAGES = 64
LEARNED_MAX_AGE = 3600.0

L = TypeVar("L")


class Learned(Generic[L]):
    """What v2's answers lately described and the gateway converted and learned (put in the store), by v2's
    id: a digest of v2's JSON for it (``json_digest``), what it was made into, and when. Every list call reads
    v2's newest page again, and a store-miss destroy's lookup names the same sender again and again: what v2
    describes as before is taken from here, neither converted nor put in the store again. Users the gateway
    last put in the store or read from it (with ``NO_DIGEST`` when not from v2's JSON) are shown as they were
    then until ``max_age`` (``latest``), without asking the store again. Something the store turns out not to
    hold is forgotten here, so it is learned when next seen; the least recently learned go first once there
    are ``size``."""

    def __init__(self, size: int, max_age: float) -> None:
        self._size = size
        self._max_age = max_age
        self._entries: OrderedDict[str, tuple[int, L, float]] = OrderedDict()

    def known(self, key: str, digest: int, now: float) -> tuple[L] | None:
        """``(what it was made into,)`` when ``key`` was learned from JSON of this digest less than ``max_age``
        ago; else None."""
        entry = self._live(key, now)
        return (entry[1],) if entry is not None and entry[0] == digest else None

    def latest(self, key: str, now: float) -> tuple[L] | None:
        """``(what it was made into,)`` when ``key`` was learned less than ``max_age`` ago, from whatever JSON;
        else None."""
        entry = self._live(key, now)
        return (entry[1],) if entry is not None else None

    def _live(self, key: str, now: float) -> tuple[int, L, float] | None:
        entry = self._entries.get(key)
        return entry if entry is not None and now - entry[2] < self._max_age else None

    def remember(self, learned: list[tuple[str, int, L]], now: float) -> None:
        for key, digest, value in learned:
            self._entries[key] = (digest, value, now)
            self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)


#: The digest ``Learned`` keeps for something not made from v2's JSON (a user read from the store, or put
#: there from an answer whose JSON was not kept): no JSON's digest matches it, only ``latest`` finds it.
NO_DIGEST = 0


def json_digest(data: dict[str, Any]) -> int:
    """A digest of v2's JSON for one thing: Python's hash of its bytes (64 bits, keyed anew in every process,
    so no one can make two different texts meet on purpose)."""
    return hash(orjson.dumps(data))


@dataclass(frozen=True, slots=True)
class _Unlearned:
    """A message v2's lookup described, with its users, before the store has them: ``new_users`` are those not
    learned lately as they are now (``Learned``), as (id, digest, user), read at ``read_at``."""

    message: DirectMessage
    users: dict[str, User]
    new_users: list[tuple[str, int, User]]
    read_at: float


class DMService:
    def __init__(
        self,
        store: MessageStore,
        upstream: UpstreamClient,
        *,
        tombstone_window: float,
        clock: Callable[[], float] = time.time,
        on_store_error: Callable[[str], None] | None = None,
        on_store_lookup: Callable[[bool], None] | None = None,
        store_max_age: float | None = None,
    ) -> None:
        """``on_store_error`` is called with the operation's name for every store failure served around;
        ``on_store_lookup`` with whether the store had the message, for every message looked up there.
        ``store_max_age`` is the shortest time the store keeps a message or user it was given: what was
        learned is put in the store again after half of it at most."""
        self.store = store
        self.upstream = upstream
        self.tombstone_window = tombstone_window
        self._clock = clock
        self._on_store_error = on_store_error
        self._on_store_lookup = on_store_lookup
        # Principal.identity -> (a digest of a Basic user's grant, else None; the v2 user id it acts for).
        self._callers: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        # Deletions not yet handed to the store, (message id, by) in order, and the one task handing them over.
        self._deletions: dict[tuple[str, str | None], None] = {}
        # Messages store-miss destroys read from v2, to be put in the store by the same task.
        self._unlearned: list[_Unlearned] = []
        self._recorder: asyncio.Task[None] | None = None
        learned_max_age = LEARNED_MAX_AGE if store_max_age is None else min(LEARNED_MAX_AGE, store_max_age / 2)
        self._learned_events: Learned[DirectMessage | None] = Learned(LEARNED_SIZE, learned_max_age)
        self._learned_users: Learned[User] = Learned(LEARNED_SIZE, learned_max_age)
        self._learned_pages: Learned[tuple[tuple[DirectMessage, ...], dict[str, User]]] = Learned(
            LEARNED_PAGES, learned_max_age
        )

    async def run(self, op: Operation, principal: Principal, request_id: str | None = None) -> Outcome:
        """Carry out any legacy operation for the caller: the method for its kind."""
        match op:
            case DestroyDM():
                return await self.destroy(op, principal, request_id)
            case ShowDM():
                return await self.show(op, principal, request_id)
            case ListDMs():
                return await self.list_messages(op, principal, request_id)
            case ListEvents():
                return await self.list_events(op, principal, request_id)
            case SendDM():
                return await self.send(op, principal, request_id)
            case VerifyCredentials():
                return await self.verify_credentials(principal, request_id)
            case ShowUser():
                return await self.show_user(op, principal, request_id)
            case LookupUsers():
                return await self.lookup_users(op, principal, request_id)
            case RateLimitStatus():
                return await self.rate_limit_status(op, principal)
            case ServiceInfo():
                return await self.info()
        raise TypeError(f"not an operation: {op!r}")

    # Destroy -------------------------------------------------------------------------------------------

    async def destroy(self, op: DestroyDM, principal: Principal, request_id: str | None = None) -> Outcome:
        view, unlearned = await self._view(op.id, principal, request_id) if op.want_body else (None, None)
        try:
            return await self._delete(op, view, principal, request_id)
        finally:
            if unlearned is not None:  # learned after the answer, with the deletion record if there is one
                self._write_behind(learned=unlearned)

    async def _delete(
        self, op: DestroyDM, view: MessageView | None, principal: Principal, request_id: str | None
    ) -> Outcome:
        try:
            response = await self.upstream.delete_dm_event(op.id, principal, request_id)
        except NotFoundAfterLostAttempt as exc:
            # An attempt of this very call, whose answer was lost, is the likeliest reason v2 no longer shows
            # the message to the caller: taken as deleted, for a participant of the message only.
            if not await self._is_participant(op.id, view, principal, request_id):
                raise
            log.info("destroy of %s: v2's 404 after a lost attempt taken as the deletion", op.id)
            self._record_deletion(op.id, principal.identity)
            return Outcome(view=view, rate_limit=exc.rate_limit)
        except MessageNotFound:
            # v2 no longer shows the message to this caller. If this very caller deleted it through the
            # gateway a moment ago, this is a retry after a lost response: answer as the first time, if the
            # caller (the user its credential acts for now) is still a participant of the message.
            if await self._deleted_recently_by(op.id, principal) and await self._is_participant(
                op.id, view, principal, request_id
            ):
                return Outcome(view=view)
            raise
        # v2 has deleted it: the caller need not wait for the record, which only serves a retry's tombstone.
        self._record_deletion(op.id, principal.identity)
        return Outcome(view=view, rate_limit=response.rate_limit)

    def _record_deletion(self, message_id: str, by: str | None) -> None:
        """Queue a deletion record for the store (see ``_write_behind``)."""
        self._deletions[message_id, by] = None
        self._write_behind()

    def _write_behind(self, learned: _Unlearned | None = None) -> None:
        """Queue what a destroy leaves for the store after its answer: its deletion record, and the message a
        store miss read from v2 with its users (``learned``). One task hands over everything queued (the
        messages and users in one store call each, then the deletions in one), then whatever was queued
        meanwhile, and so on: no task and no store write of its own per destroy, and on SQLite a busy gateway
        commits many destroys' records together."""
        if learned is not None:
            self._unlearned.append(learned)
        if self._recorder is None:
            self._recorder = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        try:
            while self._deletions or self._unlearned:
                # Taken together: a deletion's message, if v2 had to be asked for it, is put in the store first.
                batch, learned = list(self._deletions), self._unlearned
                self._unlearned = []
                try:
                    if learned:
                        await self._learn_lookups(learned)
                    if batch:
                        await self._quietly(self.store.mark_deleted_many(batch), "mark_deleted", None)
                except Exception:  # a fault in the store itself: logged, later records still go
                    log.exception("recording %d deletions and %d messages failed", len(batch), len(learned))
                finally:
                    for deletion in batch:  # only now can the store answer for them
                        self._deletions.pop(deletion, None)
        finally:
            self._recorder = None

    async def drain(self) -> None:
        """Wait for what destroys left to be written after their answers (``_write_behind``): before the store
        closes."""
        while self._recorder is not None:
            await asyncio.gather(self._recorder, return_exceptions=True)

    async def _deleted_recently_by(self, message_id: str, principal: Principal) -> bool:
        """Whether this caller deleted the message through the gateway within the tombstone window (each
        deleter has a record of its own)."""
        if (message_id, principal.identity) in self._deletions:
            return True  # deleted through this gateway a moment ago, its record not yet in the store
        deletions = await self._quietly(self.store.get_deletions(message_id), "get_deletion", ())
        now = self._clock()
        return any(d.by == principal.identity and now - d.at <= self.tombstone_window for d in deletions)

    async def _is_participant(
        self, message_id: str, view: MessageView | None, principal: Principal, request_id: str | None
    ) -> bool:
        """Whether the caller sends or receives the message: the one in this destroy's view (from the store,
        checked as it was read, or as v2 showed it to the caller), else the store's. A message known to
        neither is not taken to be the caller's."""
        if view is not None:
            message: DirectMessage | None = view.message
        else:
            message = await self._quietly(self.store.get_message(message_id), "get_message", None)
        if message is None:
            return False
        me = await self._caller_id(principal, request_id)
        return me == message.sender_id or me == message.recipient_id

    async def _view(
        self, message_id: str, principal: Principal, request_id: str | None
    ) -> tuple[MessageView, _Unlearned | None]:
        """The message a destroy answers with: the store's, or v2's lookup of it, which is then returned for
        the store as well (see ``_write_behind``): a destroy does not wait for it to be written."""
        message, users = await self._quietly(self.store.get_message_with_users(message_id), "get_message", (None, {}))
        if message is not None:
            # The store answers only a participant of the message. For anyone else it is as though it had
            # never seen the message: v2 answers them (it does not show them the message), and how that
            # answer looks cannot tell them whether the gateway had it.
            me = await self._caller_id(principal, request_id)
            if me != message.sender_id and me != message.recipient_id:
                message, users = None, {}
        if self._on_store_lookup is not None:
            self._on_store_lookup(message is not None)
        unlearned = None
        if message is None:
            response = await self.upstream.get_dm_event(message_id, principal, request_id)
            unlearned = self._read_lookup(response, message_id)
            message, users = unlearned.message, unlearned.users
        sender, recipient = users.get(message.sender_id), users.get(message.recipient_id)
        if sender is not None and recipient is not None:  # the store had both, as it mostly does
            return MessageView(message, sender, recipient), unlearned
        # A user missing from what the store answered is one it lost: asked of it again, and then of v2.
        [view] = await self._views([message], users, principal, request_id, lately=unlearned is not None)
        return view, unlearned

    # Read ----------------------------------------------------------------------------------------------

    async def show(self, op: ShowDM, principal: Principal, request_id: str | None = None) -> Outcome:
        """One message as v2 shows it to the caller now: never from the store, which cannot know whether
        the caller deleted it elsewhere."""
        response = await self.upstream.get_dm_event(op.id, principal, request_id)
        message, users = await self._learn_event(response, op.id)
        [view] = await self._views([message], users, principal, request_id, users_shown=op.users_shown)
        return Outcome(view=view, rate_limit=response.rate_limit)

    async def list_messages(self, op: ListDMs, principal: Principal, request_id: str | None = None) -> Outcome:
        """Classic paging over v2's newest-first event list: keep the caller's messages in ``op.box``
        within the id bounds, skip ``page - 1`` pages of ``count`` of them, and stop reading v2 as soon as
        the page is full, an id at or below ``since_id`` shows up, or v2 has no more."""
        me = await self._caller_id(principal, request_id)
        skip = (op.page - 1) * op.count
        wanted = skip + op.count
        matched: list[DirectMessage] = []
        users: dict[str, User] = {}
        rate_limit: RateLimit | None = None
        token: str | None = None
        for _ in range(MAX_SCAN_PAGES):
            response = await self.upstream.list_dm_events(principal, V2_PAGE_SIZE, token, request_id)
            rate_limit = response.rate_limit or rate_limit
            messages, page_users = await self._learn_page(response)
            users |= page_users
            done = False
            for message in messages:
                number = int(message.id)
                if op.since_id is not None and number <= op.since_id:
                    done = True
                    break
                if op.max_id is not None and number > op.max_id:
                    continue
                if (message.recipient_id if op.box == "received" else message.sender_id) != me:
                    continue
                matched.append(message)
                if len(matched) >= wanted:
                    done = True
                    break
            token = _next_token(response)
            if done or token is None:
                break
        else:
            log.info("list stopped after %d v2 pages without filling page %d", MAX_SCAN_PAGES, op.page)
        views = await self._views(matched[skip:wanted], users, principal, request_id)
        return Outcome(views=tuple(views), rate_limit=rate_limit)

    async def list_events(self, op: ListEvents, principal: Principal, request_id: str | None = None) -> Outcome:
        """One v2 page per legacy page: ``count`` is v2's ``max_results`` and the cursor is v2's token, so
        a page holds fewer than ``count`` messages only where v2's held group messages."""
        try:
            response = await self.upstream.list_dm_events(principal, op.count, op.cursor, request_id)
        except UpstreamBadRequest as exc:
            if op.cursor is None:
                raise
            raise InvalidParameter("cursor", "v2 refused the pagination token") from exc
        messages, users = await self._learn_page(response)
        # Events show users by id only: their lookup (to learn them) may fail without failing the list.
        views = await self._views(messages, users, principal, request_id, users_shown=False)
        return Outcome(views=tuple(views), next_cursor=_next_token(response), rate_limit=response.rate_limit)

    # Send ----------------------------------------------------------------------------------------------

    async def send(self, op: SendDM, principal: Principal, request_id: str | None = None) -> Outcome:
        """Refuse what v2 would refuse, in legacy terms and before anything is sent; send once (a send is
        never repeated); then read the new event back so the answer and the store hold it as v2 does."""
        if not op.text.strip():
            raise EmptyText("no text")
        if len(op.text) > MAX_TEXT:
            raise TextTooLong(f"{len(op.text)} characters")
        me = await self._caller_id(principal, request_id)
        if op.recipient_id is not None and op.recipient_id == me:
            raise MessageToSelf("recipient is the sender")
        recipient = await self._recipient(op, principal, request_id)
        if recipient.id == me:
            raise MessageToSelf("recipient is the sender")
        try:
            response = await self.upstream.send_dm(recipient.id, op.text, principal, request_id, media_id=op.media_id)
        except UpstreamBadRequest as exc:
            if op.media_id is None:
                raise
            # v2 refused the send as a whole (its text and recipient were checked above): the media id.
            raise InvalidMedia("v2 refused the media id") from exc
        data = response.body.get("data")
        event_id = data.get("dm_event_id") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(event_id, str) or not is_id(event_id):
            raise UpstreamFailure("v2 answered the send without data.dm_event_id")
        message, users = await self._read_back(event_id, op, me, recipient, data, principal, request_id)
        [view] = await self._views([message], users, principal, request_id)
        return Outcome(view=view, rate_limit=response.rate_limit)

    async def _recipient(self, op: SendDM, principal: Principal, request_id: str | None) -> User:
        response = await self.upstream.get_recipient(
            principal, user_id=op.recipient_id, username=op.screen_name, request_id=request_id
        )
        data = response.body.get("data")
        if not isinstance(data, dict) or "id" not in data:
            raise RecipientNotFound("v2 knows no such user")
        # Senders write to the same few people: one v2 describes as before is not converted or stored again.
        # ``receives_your_dm``, which only this lookup asks for and no ``User`` holds, is left out, so the
        # user is known alike from here and from the users v2's other answers include.
        now = self._clock()
        described = {key: value for key, value in data.items() if key != "receives_your_dm"}
        users, new = self._users_as_learned([described], now)
        [user] = users.values()
        await self._learn_described([], new, now)
        if data.get("receives_your_dm") is False:
            raise RecipientRefuses("v2 says the recipient does not receive the caller's messages")
        return user

    async def _read_back(
        self,
        event_id: str,
        op: SendDM,
        me: str,
        recipient: User,
        sent: dict[str, Any],
        principal: Principal,
        request_id: str | None,
    ) -> tuple[DirectMessage, dict[str, User]]:
        """The sent message as v2 stores it. The send has happened, so failing to read it back must not
        fail the call (a client would send again): the answer is then made from what was sent, with the
        gateway's clock, and not stored, so a later destroy asks v2 for the real thing."""
        try:
            response = await self.upstream.get_dm_event(event_id, principal, request_id)
            return await self._learn_event(response, event_id)
        except GatewayError as exc:
            log.warning("sent message %s could not be read back: %s", event_id, exc.detail or exc.kind)
        conversation = sent.get("dm_conversation_id")
        message = DirectMessage(
            id=event_id,
            text=op.text,
            created_at=datetime.fromtimestamp(self._clock(), UTC),
            sender_id=me,
            recipient_id=recipient.id,
            conversation_id=conversation if isinstance(conversation, str) else None,
            attachment=Media(id=op.media_id) if op.media_id is not None else None,
        )
        return message, {recipient.id: recipient}

    async def _caller_id(self, principal: Principal, request_id: str | None) -> str:
        """The v2 user id the principal acts for, asked of v2 once per credential; for a Basic user, once per
        grant (an operator may give the user a grant for another account, and a refresh replaces it)."""
        grant = await _grant_digest(principal)
        known = self._callers.get(principal.identity)
        if known is not None and known[0] == grant:
            self._callers.move_to_end(principal.identity)
            return known[1]
        me, _ = await self._ask_me(principal, grant, request_id)
        return me.id

    async def _ask_me(self, principal: Principal, grant: str | None, request_id: str | None) -> tuple[User, V2Response]:
        """The user the principal acts for, asked of v2, learned and remembered as the caller's id."""
        response = await self.upstream.get_me(principal, request_id)
        data = response.body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise UpstreamFailure("v2 answered /2/users/me without a user")
        now = self._clock()
        users, new = self._users_as_learned([data], now)
        [me] = users.values()
        await self._learn_described([], new, now)
        self._callers[principal.identity] = (grant, me.id)
        self._callers.move_to_end(principal.identity)
        if len(self._callers) > CALLER_CACHE_SIZE:
            self._callers.popitem(last=False)
        return me, response

    # Users and the service itself ------------------------------------------------------------------------

    async def verify_credentials(self, principal: Principal, request_id: str | None = None) -> Outcome:
        """The user the caller's credential acts for, always as v2 describes them now (and learned)."""
        me, response = await self._ask_me(principal, await _grant_digest(principal), request_id)
        return Outcome(users=(me,), rate_limit=response.rate_limit)

    async def show_user(self, op: ShowUser, principal: Principal, request_id: str | None = None) -> Outcome:
        response = await self.upstream.get_user(
            principal, user_id=op.user_id, username=op.screen_name, request_id=request_id
        )
        user = user_from_answer(response.body)
        if user is None:
            raise UserNotFound("v2 knows no such user", rate_limit=response.rate_limit)
        await self._learn_users([user])
        return Outcome(users=(user,), rate_limit=response.rate_limit)

    async def lookup_users(self, op: LookupUsers, principal: Principal, request_id: str | None = None) -> Outcome:
        """The users named by id (one ``GET /2/users``) and by screen name (one ``GET /2/users/by``), those
        by id first, each once; v2 leaves out the ones it does not know. None at all is a not-found."""
        users: list[User] = []
        rate_limit: RateLimit | None = None
        if op.user_ids:
            response = await self.upstream.get_users(op.user_ids, principal, request_id)
            users += users_from_answer(response.body)
            rate_limit = response.rate_limit
        if op.screen_names:
            response = await self.upstream.get_users_by_usernames(op.screen_names, principal, request_id)
            users += users_from_answer(response.body)
            rate_limit = response.rate_limit or rate_limit
        seen: dict[str, User] = {}
        for user in users:  # one id named both ways is one user
            seen.setdefault(user.id, user)
        unique = list(seen.values())
        if not unique:
            raise NoUserMatches("v2 knows none of the users named", rate_limit=rate_limit)
        await self._learn_users(unique)
        return Outcome(users=tuple(unique), rate_limit=rate_limit)

    async def rate_limit_status(self, op: RateLimitStatus, principal: Principal) -> Outcome:
        """The caller's quota on each endpoint, from what v2 last reported to them: no v2 call."""
        now = self._clock()
        current = self.upstream.quotas.current
        quotas = tuple((endpoint, current(principal.identity, endpoint, now)) for endpoint in op.endpoints)
        return Outcome(quotas=quotas, caller=principal.identity)

    async def info(self) -> Outcome:
        """Answers about the service itself are the dialect's own: nothing to ask anyone."""
        return Outcome()

    # Shared --------------------------------------------------------------------------------------------

    async def _learn_event(self, response: V2Response, message_id: str) -> tuple[DirectMessage, dict[str, User]]:
        """The one-to-one message in a v2 event lookup, learned with its users."""
        lookup = self._read_lookup(response, message_id)
        await self._learn_lookups([lookup])
        return lookup.message, lookup.users

    def _read_lookup(self, response: V2Response, message_id: str) -> _Unlearned:
        """The one-to-one message in a v2 event lookup, with its users, not yet learned."""
        event = response.body.get("data")
        if event is None:  # v2 answers errors alone for an event it does not show
            raise MessageNotFound(f"v2 answered the lookup of event {message_id} without data")
        if not isinstance(event, dict):
            raise UpstreamFailure(f"v2 answered the lookup of event {message_id} with data that is no event")
        message = message_from_v2(event, media_from_includes(response.body))
        if message is None:
            raise MessageNotFound(f"event {message_id} is not a one-to-one message")
        now = self._clock()
        users, new_users = self._users_as_learned(included_users(response.body), now)
        return _Unlearned(message, users, new_users, now)

    async def _learn_lookups(self, lookups: list[_Unlearned]) -> None:
        """Put the messages of v2 lookups, and the users they described anew, in the store."""
        new_users = [new for lookup in lookups for new in lookup.new_users]
        read_at = min(lookup.read_at for lookup in lookups)
        await self._learn_described([lookup.message for lookup in lookups], new_users, read_at)

    async def _learn_page(self, response: V2Response) -> tuple[list[DirectMessage], dict[str, User]]:
        """The one-to-one messages of a v2 event list, newest first, learned with their users: only the events
        not learned lately as they are now are converted and put in the store. A page whose very bytes were
        learned lately (a client polling its inbox reads the same page again and again) is what it was made
        into then, found by one digest of the page instead of one per event and user."""
        page_digest = hash(response.raw)
        now = self._clock()
        known_page = self._learned_pages.known(str(page_digest), page_digest, now)
        if known_page is not None:
            page_messages, page_users = known_page[0]
            return list(page_messages), dict(page_users)
        data = response.body.get("data", [])  # v2 leaves data out of an empty page
        if not isinstance(data, list):
            raise UpstreamFailure("v2 listed events as something other than an array")
        media = media_from_includes(response.body)
        messages: list[DirectMessage] = []
        new: list[tuple[str, int, DirectMessage | None]] = []
        for event in data:
            if not isinstance(event, dict):
                continue
            event_id, digest = str(event.get("id")), json_digest(event)
            known = self._learned_events.known(event_id, digest, now)
            if known is not None and _expanded_as_before(known[0], media):
                (message,) = known
            else:
                message = message_from_v2(event, media)
                new.append((event_id, digest, message))
            if message is not None:
                messages.append(message)
        users, new_users = self._users_as_learned(included_users(response.body), now)
        if await self._learn_described([m for _, _, m in new if m is not None], new_users, now):
            self._learned_events.remember(new, now)
            self._learned_pages.remember([(str(page_digest), page_digest, (tuple(messages), dict(users)))], now)
        return messages, users

    def _users_as_learned(
        self, described: Iterable[dict[str, Any]], now: float
    ) -> tuple[dict[str, User], list[tuple[str, int, User]]]:
        """The users v2 ``described`` (its JSON of each), by id, and those of them not learned lately as they
        are now (each with its id and digest, to be learned); the others are the very ``User`` made when they
        were."""
        users: dict[str, User] = {}
        new: list[tuple[str, int, User]] = []
        for data in described:
            user_id, digest = str(data["id"]), json_digest(data)
            known = self._learned_users.known(user_id, digest, now)
            if known is not None:
                (user,) = known
            else:
                user = user_from_v2(data)
                new.append((user_id, digest, user))
            users[user.id] = user
        return users, new

    async def _views(
        self,
        messages: list[DirectMessage],
        users: dict[str, User],
        principal: Principal,
        request_id: str | None,
        *,
        users_shown: bool = True,
        lately: bool = True,
    ) -> list[MessageView]:
        """Each message with both its users: from ``users``, else (with ``lately``) as this gateway last put
        them in the store or read them from it (``Learned``: within the hour, and half the store's retention),
        else the store, else one v2 lookup per 100 users (which also learns them); a user found nowhere is a
        placeholder with only an id. When the answer does not show users (``users_shown`` False), a failed
        lookup does not fail the call."""
        wanted = {m.sender_id for m in messages} | {m.recipient_id for m in messages}
        missing = wanted - users.keys()
        now = self._clock()
        if missing and lately:
            learned = {i: known[0] for i in missing if (known := self._learned_users.latest(i, now)) is not None}
            users, missing = users | learned, missing - learned.keys()
        if missing:
            stored = await self._quietly(self.store.get_users(missing), "get_users", {})
            self._learned_users.remember([(user.id, NO_DIGEST, user) for user in stored.values()], now)
            users = users | stored
            missing = wanted - users.keys()
        if missing:
            self._learned_users.forget(missing)  # learned, perhaps, but the store no longer has them
            ordered = sorted(missing, key=int)
            for start in range(0, len(ordered), V2_USERS_PER_LOOKUP):
                batch = ordered[start : start + V2_USERS_PER_LOOKUP]
                try:
                    users |= await self._fetch_users(batch, principal, request_id)
                except GatewayError as exc:
                    if users_shown:
                        raise
                    log.info("users not learned: %s", exc.detail or exc.kind)
        return [
            MessageView(
                message=m,
                sender=users.get(m.sender_id) or _placeholder(m.sender_id),
                recipient=users.get(m.recipient_id) or _placeholder(m.recipient_id),
            )
            for m in messages
        ]

    async def _fetch_users(
        self, user_ids: Iterable[str], principal: Principal, request_id: str | None
    ) -> dict[str, User]:
        response = await self.upstream.get_users(user_ids, principal, request_id)
        users = users_from_answer(response.body)
        await self._learn_users(users)
        return {u.id: u for u in users}

    async def _learn_described(
        self, messages: list[DirectMessage], new_users: list[tuple[str, int, User]], read_at: float
    ) -> bool:
        """``_put`` the messages and the users v2 described anew (``_users_as_learned``), those users then
        remembered as learned at ``read_at``; whether both went in."""
        stored = await self._put(messages, [user for _, _, user in new_users])
        if stored:
            self._learned_users.remember(new_users, read_at)
        return stored

    async def _learn_users(self, users: list[User]) -> None:
        """``_put`` users whose v2 JSON is not kept, then remember them as learned (``NO_DIGEST``)."""
        if await self._put([], users) and users:
            self._learned_users.remember([(user.id, NO_DIGEST, user) for user in users], self._clock())

    async def _put(self, messages: list[DirectMessage], users: list[User]) -> bool:
        """Put ``messages`` and ``users`` in the store, both at once (on SQLite, one commit); whether both went
        in (a failure is only logged)."""
        puts = []
        if messages:
            puts.append(self._quietly(_done(self.store.put_messages(messages)), "put_messages", False))
        if users:
            puts.append(self._quietly(_done(self.store.put_users(users)), "put_users", False))
        if len(puts) == 1:  # no task to make for one
            return await puts[0]
        return all(await asyncio.gather(*puts))

    async def _quietly(self, call: Awaitable[T], what: str, fallback: T) -> T:
        """A store that cannot answer is a cache miss, not an outage: log it and carry on from upstream."""
        try:
            return await call
        except StoreError as exc:
            log.warning("store %s failed: %s", what, exc)
            if self._on_store_error is not None:
                self._on_store_error(what)
            return fallback


@lru_cache(maxsize=1024)
def _placeholder(user_id: str) -> User:
    """The user shown for an id found nowhere: only the id. One object per id, so that a list naming it shows
    the very same view again (the renderer keeps a message's render by the identities of what it shows)."""
    return User(id=user_id)


def _expanded_as_before(message: DirectMessage | None, media: dict[str, Media]) -> bool:
    """Whether a learned message's attachment, if it has one, is expanded in ``media`` as it was then."""
    attachment = message.attachment if message is not None else None
    return attachment is None or media.get(attachment.key or "") == attachment


async def _done(call: Awaitable[None]) -> bool:
    await call
    return True


async def _grant_digest(principal: Principal) -> str | None:
    """For a Basic user, a digest of the v2 grant their credential presents now (a bearer token, whose
    header names no URL); None for every other caller, whose credential always acts for the same user."""
    if principal.source != "basic":
        return None
    authorization = await principal.credential.authorization("GET", "")
    return hashlib.sha256(authorization.encode()).hexdigest()[:32]


def _next_token(response: V2Response) -> str | None:
    meta = response.body.get("meta")
    token = meta.get("next_token") if isinstance(meta, dict) else None
    return token if isinstance(token, str) and token else None
