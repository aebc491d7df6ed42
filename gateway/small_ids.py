"""Small ids for clients that cannot hold v2's 64-bit ones (``[routes] small_ids``).

v2 message and user ids are about 1.6e18: past what a Java ``int`` or a 32-bit PHP integer holds, and
StatusNet clients were written for the small ids StatusNet gave. For a family named in ``small_ids`` the
app puts an ``IdTranslator`` between the dialect and the service, which both stay as they are: every id
the caller names in an ``Operation`` is taken as a small id and turned back into the v2 id it stands for
(``inbound``), and every v2 id in the ``Outcome`` is turned into its small id (``outbound``) before the
dialect renders it. The map is kept in the store (``small_ids``, ``v2_ids``), so replicas and restarts give
the same small id to the same v2 id; an unknown small id is the dialect's not-found.

Order: a client pages with ``since_id`` and ``max_id``, which are translated back to the v2 ids they name,
so a bound the client took from a message it was shown is exact. Small ids are given in the order the
gateway first shows ids, and the messages of one answer in the order of their v2 ids (oldest first), so a
message newer than every message shown before gets a larger small id than all of them: polling with
``since_id`` set to the largest id seen finds every new message. A message first shown after newer ones
(an older page read later) gets a larger small id than they have; ``since_id`` naming it then answers
messages the client has seen again, never fewer than it asked for.
"""

from __future__ import annotations

from dataclasses import replace

from collections.abc import Iterable

from gateway.errors import (
    MessageNotFound,
    NoUserMatches,
    RecipientNotFound,
    UpstreamUnavailable,
    UserNotFound,
)
from gateway.model import (
    DestroyDM,
    DirectMessage,
    Entities,
    ListDMs,
    LookupUsers,
    MessageView,
    Operation,
    Outcome,
    SendDM,
    ShowDM,
    ShowUser,
    User,
)
from gateway.store.base import MessageStore, StoreError


class IdTranslator:
    """Maps the ids of a family's calls between small ids (the client's) and v2 ids (the service's). A
    store that cannot answer fails the call as unavailable: no id can be guessed."""

    def __init__(self, store: MessageStore) -> None:
        self._store = _Guarded(store)

    async def inbound(self, op: Operation) -> Operation:
        """``op`` with every id it names as the v2 id that small id stands for."""
        if isinstance(op, DestroyDM | ShowDM):
            return replace(op, id=await self._one(op.id, MessageNotFound("no message has this small id")))
        if isinstance(op, ListDMs):
            bounds = [bound for bound in (op.since_id, op.max_id) if bound is not None]
            if not bounds:
                return op
            known = await self._store.v2_ids(bounds)
            if any(bound not in known for bound in bounds):
                raise MessageNotFound("no message has this small id")
            since = int(known[op.since_id]) if op.since_id is not None else None
            most = int(known[op.max_id]) if op.max_id is not None else None
            return replace(op, since_id=since, max_id=most)
        if isinstance(op, SendDM) and op.recipient_id is not None:
            return replace(op, recipient_id=await self._one(op.recipient_id, RecipientNotFound("unknown small id")))
        if isinstance(op, ShowUser) and op.user_id is not None:
            return replace(op, user_id=await self._one(op.user_id, UserNotFound("unknown small id")))
        if isinstance(op, LookupUsers) and op.user_ids:
            known = await self._store.v2_ids(int(small) for small in op.user_ids)
            ids = tuple(known[int(small)] for small in op.user_ids if int(small) in known)
            if not ids and not op.screen_names:
                raise NoUserMatches("no user has these small ids")
            return replace(op, user_ids=ids)
        return op

    async def _one(self, small: str, unknown: Exception) -> str:
        v2_id = (await self._store.v2_ids((int(small),))).get(int(small))
        if v2_id is None:
            raise unknown
        return v2_id

    async def outbound(self, outcome: Outcome) -> Outcome:
        """``outcome`` with every v2 id in it as its small id, given now to ids that have none."""
        views = (outcome.view,) if outcome.view is not None else outcome.views
        ordered: dict[str, None] = {}
        # Messages oldest first (ids of one length compare as numbers), then their users and any others.
        for view in sorted(views, key=lambda v: (len(v.message.id), v.message.id)):
            ordered[view.message.id] = None
        for view in views:
            ordered.update(dict.fromkeys(_user_ids(view)))
        ordered.update(dict.fromkeys(user.id for user in outcome.users))
        if not ordered:
            return outcome
        smalls = dict(zip(ordered, map(str, await self._store.small_ids(list(ordered))), strict=True))
        return replace(
            outcome,
            view=_view(outcome.view, smalls) if outcome.view is not None else None,
            views=tuple(_view(view, smalls) for view in outcome.views),
            users=tuple(replace(user, id=smalls[user.id]) for user in outcome.users),
        )


class _Guarded:
    def __init__(self, store: MessageStore) -> None:
        self._store = store

    async def small_ids(self, ids: list[str]) -> list[int]:
        try:
            return await self._store.small_ids(ids)
        except StoreError as exc:
            raise UpstreamUnavailable(f"small ids: {exc}") from None

    async def v2_ids(self, smalls: Iterable[int]) -> dict[int, str]:
        try:
            return await self._store.v2_ids(smalls)
        except StoreError as exc:
            raise UpstreamUnavailable(f"small ids: {exc}") from None


def _user_ids(view: MessageView) -> list[str]:
    message = view.message
    ids = [message.sender_id, message.recipient_id, view.sender.id, view.recipient.id]
    ids.extend(mention.user_id for mention in message.entities.mentions if mention.user_id is not None)
    return ids


def _view(view: MessageView, smalls: dict[str, str]) -> MessageView:
    message: DirectMessage = view.message
    entities: Entities = message.entities
    if entities.mentions:
        mentions = tuple(
            replace(m, user_id=smalls[m.user_id]) if m.user_id is not None else m for m in entities.mentions
        )
        entities = replace(entities, mentions=mentions)
    return MessageView(
        message=replace(
            message,
            id=smalls[message.id],
            sender_id=smalls[message.sender_id],
            recipient_id=smalls[message.recipient_id],
            entities=entities,
        ),
        sender=_user(view.sender, smalls),
        recipient=_user(view.recipient, smalls),
    )


def _user(user: User, smalls: dict[str, str]) -> User:
    return replace(user, id=smalls[user.id])
