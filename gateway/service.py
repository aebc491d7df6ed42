"""The dialect-blind heart: takes an Operation, talks to the store and upstream, returns model objects.

Ordering matters for the one promise the gateway makes about data: nothing is changed in the store until
the upstream delete has succeeded. The legacy body is assembled *before* the delete (from the store, or from
v2 on a miss), so a message that could not be described is never deleted, and a failed or timed-out delete
leaves the stored message exactly as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from gateway.errors import MessageNotFound
from gateway.model import DestroyDM, DirectMessage, MessageView, Outcome, Principal, User
from gateway.store.base import MessageStore, StoreError
from gateway.upstream.client import UpstreamClient
from gateway.upstream.convert import message_from_v2, user_from_v2, users_from_includes

log = logging.getLogger("gateway.service")
T = TypeVar("T")


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
    ) -> None:
        """``on_store_error`` is called with the operation's name for every store failure served around;
        ``on_store_lookup`` with whether the store had the message, for every message looked up there."""
        self.store = store
        self.upstream = upstream
        self.tombstone_window = tombstone_window
        self._clock = clock
        self._on_store_error = on_store_error
        self._on_store_lookup = on_store_lookup

    async def destroy(self, op: DestroyDM, principal: Principal, request_id: str | None = None) -> Outcome:
        view = await self._view(op.id, principal, request_id) if op.want_body else None
        try:
            response = await self.upstream.delete_dm_event(op.id, principal, request_id)
        except MessageNotFound:
            # v2 no longer shows the message to this caller. If this very caller deleted it through the
            # gateway a moment ago, this is a retry after a lost response: answer as the first time.
            if await self._deleted_recently_by(op.id, principal):
                return Outcome(view=view)
            raise
        await self._quietly(self.store.mark_deleted(op.id, principal.identity), "mark_deleted", None)
        return Outcome(view=view, rate_limit=response.rate_limit)

    async def _deleted_recently_by(self, message_id: str, principal: Principal) -> bool:
        deletion = await self._quietly(self.store.get_deletion(message_id), "get_deletion", None)
        return (
            deletion is not None
            and deletion.by == principal.identity
            and self._clock() - deletion.at <= self.tombstone_window
        )

    async def _view(self, message_id: str, principal: Principal, request_id: str | None) -> MessageView:
        message = await self._quietly(self.store.get_message(message_id), "get_message", None)
        if self._on_store_lookup is not None:
            self._on_store_lookup(message is not None)
        users: dict[str, User] = {}
        if message is None:
            message, users = await self._fetch_message(message_id, principal, request_id)
        wanted = {message.sender_id, message.recipient_id}
        missing = wanted - users.keys()
        if missing:
            users |= await self._quietly(self.store.get_users(missing), "get_users", {})
            missing = wanted - users.keys()
        if missing:
            users |= await self._fetch_users(missing, principal, request_id)
        return MessageView(
            message=message,
            sender=users.get(message.sender_id) or User(id=message.sender_id),
            recipient=users.get(message.recipient_id) or User(id=message.recipient_id),
        )

    async def _fetch_message(
        self, message_id: str, principal: Principal, request_id: str | None
    ) -> tuple[DirectMessage, dict[str, User]]:
        response = await self.upstream.get_dm_event(message_id, principal, request_id)
        event = response.body.get("data")
        message = message_from_v2(event) if isinstance(event, dict) else None
        if message is None:
            raise MessageNotFound(f"event {message_id} is not a one-to-one message")
        users = users_from_includes(response.body)
        await self._learn([message], users)
        return message, {u.id: u for u in users}

    async def _fetch_users(
        self, user_ids: Iterable[str], principal: Principal, request_id: str | None
    ) -> dict[str, User]:
        response = await self.upstream.get_users(sorted(user_ids, key=int), principal, request_id)
        users = [user_from_v2(u) for u in response.body.get("data") or () if isinstance(u, dict) and "id" in u]
        await self._learn([], users)
        return {u.id: u for u in users}

    async def _learn(self, messages: list[DirectMessage], users: list[User]) -> None:
        if messages:
            await self._quietly(self.store.put_messages(messages), "put_messages", None)
        if users:
            await self._quietly(self.store.put_users(users), "put_users", None)

    async def _quietly(self, call: Awaitable[T], what: str, fallback: T) -> T:
        """A store that cannot answer is a cache miss, not an outage: log it and carry on from upstream."""
        try:
            return await call
        except StoreError as exc:
            log.warning("store %s failed: %s", what, exc)
            if self._on_store_error is not None:
                self._on_store_error(what)
            return fallback
