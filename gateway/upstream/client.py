"""X API v2 over aiohttp.

The client owns nothing but a reference to a shared ``ClientSession``; ``gateway.app`` creates and closes the
session. Every failure becomes one of the gateway's own errors, so the service never sees aiohttp exceptions:
timeouts and resets are ``UpstreamUnavailable``, v2's statuses become their neutral kinds, and a body that is
too large or not JSON is ``UpstreamFailure``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from gateway import __version__
from gateway.errors import (
    Forbidden,
    InvalidToken,
    MessageNotFound,
    RateLimited,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamFailure,
    UpstreamUnavailable,
)
from gateway.model import Principal, RateLimit

USER_AGENT = f"legacy-dm-gateway/{__version__}"

DM_EVENT_FIELDS = (
    "id,text,event_type,created_at,dm_conversation_id,sender_id,participant_ids,"
    "attachments,referenced_tweets,entities"
)
USER_FIELDS = "created_at,description,location,profile_image_url,protected,public_metrics,url,verified"
#: The query of a DM event lookup that gives everything a legacy body needs, with the users it names.
DM_EVENT_LOOKUP = {
    "dm_event.fields": DM_EVENT_FIELDS,
    "expansions": "sender_id,participant_ids",
    "user.fields": USER_FIELDS,
}

_STATUS_ERRORS: dict[int, type[UpstreamError]] = {
    400: UpstreamBadRequest,
    401: InvalidToken,
    403: Forbidden,
    404: MessageNotFound,
    429: RateLimited,
    502: UpstreamUnavailable,
    503: UpstreamUnavailable,
    504: UpstreamUnavailable,
}


class V2Response:
    __slots__ = ("status", "body", "rate_limit")

    def __init__(self, status: int, body: dict[str, Any], rate_limit: RateLimit | None) -> None:
        self.status = status
        self.body = body
        self.rate_limit = rate_limit


def rate_limit_from(headers: Mapping[str, str]) -> RateLimit | None:
    try:
        return RateLimit(
            limit=int(headers["x-rate-limit-limit"]),
            remaining=int(headers["x-rate-limit-remaining"]),
            reset=int(headers["x-rate-limit-reset"]),
        )
    except (KeyError, ValueError):
        return None


class UpstreamClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        max_response_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._max_bytes = max_response_bytes

    async def delete_dm_event(self, event_id: str, principal: Principal, request_id: str | None = None) -> V2Response:
        response = await self._request("DELETE", f"/2/dm_events/{event_id}", principal, request_id=request_id)
        if response.body.get("data", {}).get("deleted") is not True:
            raise UpstreamFailure("v2 answered the delete without data.deleted=true")
        return response

    async def get_dm_event(self, event_id: str, principal: Principal, request_id: str | None = None) -> V2Response:
        return await self._request("GET", f"/2/dm_events/{event_id}", principal, DM_EVENT_LOOKUP, request_id)

    async def get_users(
        self, user_ids: Iterable[str], principal: Principal, request_id: str | None = None
    ) -> V2Response:
        params = {"ids": ",".join(user_ids), "user.fields": USER_FIELDS}
        # A 404 here would mean the endpoint, not a user: v2 reports unknown users inside a 200.
        return await self._request("GET", "/2/users", principal, params, request_id, not_found=UpstreamFailure)

    async def list_dm_events(
        self,
        principal: Principal,
        max_results: int,
        pagination_token: str | None = None,
        request_id: str | None = None,
    ) -> V2Response:
        """One page of the caller's message events, newest first, with the users they name."""
        params = {**DM_EVENT_LOOKUP, "event_types": "MessageCreate", "max_results": str(max_results)}
        if pagination_token is not None:
            params["pagination_token"] = pagination_token
        # v2 answers a pagination token it does not know with 400; a 404 would mean the endpoint.
        return await self._request("GET", "/2/dm_events", principal, params, request_id, not_found=UpstreamFailure)

    async def get_me(self, principal: Principal, request_id: str | None = None) -> V2Response:
        """The user the principal's credential acts for."""
        params = {"user.fields": USER_FIELDS}
        return await self._request("GET", "/2/users/me", principal, params, request_id, not_found=UpstreamFailure)

    async def get_recipient(
        self, principal: Principal, *, user_id: str | None = None, username: str | None = None, request_id: str | None = None
    ) -> V2Response:
        """A would-be recipient by id or by username, with ``receives_your_dm`` (whether they accept the
        caller's messages). v2 answers an unknown user with a 200 that carries only ``errors``."""
        if user_id is not None:
            path = f"/2/users/{user_id}"
        elif username is not None:
            path = f"/2/users/by/username/{quote(username, safe='')}"
        else:
            raise ValueError("a recipient needs an id or a username")
        params = {"user.fields": f"{USER_FIELDS},receives_your_dm"}
        return await self._request("GET", path, principal, params, request_id, not_found=UpstreamFailure)

    async def send_dm(
        self, participant_id: str, text: str, principal: Principal, request_id: str | None = None
    ) -> V2Response:
        """Send a one-to-one message; v2 answers the new event's id and conversation id."""
        body = orjson.dumps({"text": text})
        path = f"/2/dm_conversations/with/{participant_id}/messages"
        return await self._request("POST", path, principal, None, request_id, not_found=UpstreamFailure, body=body)

    async def _request(
        self,
        method: str,
        path: str,
        principal: Principal,
        params: Mapping[str, str] | None = None,
        request_id: str | None = None,
        not_found: type[UpstreamError] = MessageNotFound,
        body: bytes | None = None,
    ) -> V2Response:
        url = URL(self._base + path).with_query(dict(params or {}))
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if request_id:
            headers["X-Request-Id"] = request_id
        credential = principal.credential
        renewed = False
        while True:
            headers["Authorization"] = authorization = await credential.authorization(method, str(url))
            status, raw, rate_limit = await self._send(method, url, headers, body)
            # One retry, and only when the credential could renew itself (a refreshed OAuth 2.0 grant).
            if status != 401 or renewed or not await credential.renew(authorization):
                break
            renewed = True
        if status >= 400:
            error = not_found if status == 404 else _STATUS_ERRORS.get(status, UpstreamFailure)
            raise error(f"{method} {path}: v2 answered {status}", rate_limit=rate_limit)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailure(f"{method} {path}: body is not JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamFailure(f"{method} {path}: body is not a JSON object")
        return V2Response(status, body, rate_limit)

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes, RateLimit | None]:
        try:
            async with self._session.request(method, url, headers=headers, data=body) as resp:
                return resp.status, await self._read_bounded(resp), rate_limit_from(resp.headers)
        except (asyncio.TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamUnavailable(f"{method} {url.path}: {type(exc).__name__}") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamFailure(f"{method} {url.path}: {exc.status} {exc.message}") from exc

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise UpstreamFailure(f"v2 body exceeds {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
