"""X API v2 over aiohttp.

The client owns nothing but a reference to a shared ``ClientSession``; ``gateway.app`` creates and closes the
session. Every failure becomes one of the gateway's own errors, so the service never sees aiohttp exceptions:
timeouts and resets are ``UpstreamUnavailable``, v2's statuses become their neutral kinds, and a body that is
too large or not JSON is ``UpstreamFailure``.

Each call goes through the host's circuit breaker (as its caller's, ``Principal.identity``) and, for GET and
DELETE, the retry policy (``gateway.upstream.resilience``); every attempt is timed for
``dmgw_upstream_request_duration_seconds`` under the call's endpoint template, never its real path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import hdrs
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
from gateway.upstream.quotas import Quotas
from gateway.upstream.resilience import (
    RATE_LIMITED,
    RETRY_STATUSES,
    AttemptFailed,
    Breakers,
    NullObserver,
    RetryPolicy,
    UpstreamObserver,
    rate_limit_wait,
)

log = logging.getLogger("gateway.upstream")

USER_AGENT = f"legacy-dm-gateway/{__version__}"

DM_EVENT_FIELDS = (
    "id,text,event_type,created_at,dm_conversation_id,sender_id,participant_ids,attachments,referenced_tweets,entities"
)
USER_FIELDS = "created_at,description,location,profile_image_url,protected,public_metrics,url,verified"
MEDIA_FIELDS = "media_key,type,url,preview_image_url,width,height,alt_text"
#: The query of a DM event lookup that gives everything a legacy body needs, with the users it names and
#: the media of its attachment.
DM_EVENT_LOOKUP = {
    "dm_event.fields": DM_EVENT_FIELDS,
    "expansions": "sender_id,participant_ids,attachments.media_keys",
    "user.fields": USER_FIELDS,
    "media.fields": MEDIA_FIELDS,
}

#: A path made only of plain segments (no dot, percent sign or anything that needs quoting): one that parsing
#: the whole URL would leave exactly as it is, so it can go onto the parsed base URL as it stands.
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-]+)+")
#: How much of a body without a usable Content-Length is read at a time.
_READ_CHUNK = 64 * 1024

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


class NotFoundAfterLostAttempt(MessageNotFound):
    """v2 answered 404 to a DELETE tried again after an attempt whose answer was lost (a timeout, a reset,
    502/503/504): that attempt may well have deleted the event, which v2 then no longer shows to the caller.
    The service decides whether to take it as deleted: only for a participant of the message."""


class V2Response:
    """A v2 answer: its status, its JSON ``body`` parsed, the bytes it was parsed from (``raw``) and its
    rate-limit headers."""

    __slots__ = ("body", "rate_limit", "raw", "status")

    def __init__(self, status: int, body: dict[str, Any], rate_limit: RateLimit | None, raw: bytes) -> None:
        self.status = status
        self.body = body
        self.rate_limit = rate_limit
        self.raw = raw


def rate_limit_from(headers: Mapping[str, str]) -> RateLimit | None:
    try:
        # Positional: RateLimit(limit, remaining, reset), built for every v2 answer.
        return RateLimit(
            int(headers["x-rate-limit-limit"]),
            int(headers["x-rate-limit-remaining"]),
            int(headers["x-rate-limit-reset"]),
        )
    except (KeyError, ValueError):
        return None


class _Answer:
    """What one attempt got back: v2's status, body and quota."""

    __slots__ = ("rate_limit", "raw", "status")

    def __init__(self, status: int, raw: bytes, rate_limit: RateLimit | None) -> None:
        self.status = status
        self.raw = raw
        self.rate_limit = rate_limit


class UpstreamClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        max_response_bytes: int = 4 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        breakers: Breakers | None = None,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._root = _plain_root(self._base)
        self._max_bytes = max_response_bytes
        self._retry = retry or RetryPolicy(retries=0)
        self._breaker = (breakers or Breakers(0, 1.0)).for_url(self._base)
        self._observer = observer or NullObserver()
        #: The quota v2 last reported per caller and endpoint.
        self.quotas = Quotas()

    async def delete_dm_event(self, event_id: str, principal: Principal, request_id: str | None = None) -> V2Response:
        response = await self._request(
            "DELETE", f"/2/dm_events/{event_id}", principal, request_id=request_id, endpoint="DELETE /2/dm_events/:id"
        )
        data = response.body.get("data")
        if not isinstance(data, dict) or data.get("deleted") is not True:
            raise UpstreamFailure("v2 answered the delete without data.deleted=true")
        return response

    async def get_dm_event(self, event_id: str, principal: Principal, request_id: str | None = None) -> V2Response:
        return await self._request(
            "GET", f"/2/dm_events/{event_id}", principal, DM_EVENT_LOOKUP, request_id, endpoint="GET /2/dm_events/:id"
        )

    async def get_users(
        self, user_ids: Iterable[str], principal: Principal, request_id: str | None = None
    ) -> V2Response:
        params = {"ids": ",".join(user_ids), "user.fields": USER_FIELDS}
        # A 404 here would mean the endpoint, not a user: v2 reports unknown users inside a 200.
        return await self._request(
            "GET", "/2/users", principal, params, request_id, not_found=UpstreamFailure, endpoint="GET /2/users"
        )

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
        return await self._request(
            "GET", "/2/dm_events", principal, params, request_id, not_found=UpstreamFailure, endpoint="GET /2/dm_events"
        )

    async def get_me(self, principal: Principal, request_id: str | None = None) -> V2Response:
        """The user the principal's credential acts for."""
        params = {"user.fields": USER_FIELDS}
        return await self._request(
            "GET", "/2/users/me", principal, params, request_id, not_found=UpstreamFailure, endpoint="GET /2/users/me"
        )

    async def get_recipient(
        self,
        principal: Principal,
        *,
        user_id: str | None = None,
        username: str | None = None,
        request_id: str | None = None,
    ) -> V2Response:
        """A would-be recipient by id or by username, with ``receives_your_dm`` (whether they accept the
        caller's messages). v2 answers an unknown user with a 200 that carries only ``errors``."""
        return await self._user(principal, user_id, username, f"{USER_FIELDS},receives_your_dm", request_id)

    async def get_user(
        self,
        principal: Principal,
        *,
        user_id: str | None = None,
        username: str | None = None,
        request_id: str | None = None,
    ) -> V2Response:
        """One user by id or by username; v2 answers an unknown user with a 200 that carries only ``errors``."""
        return await self._user(principal, user_id, username, USER_FIELDS, request_id)

    async def _user(
        self, principal: Principal, user_id: str | None, username: str | None, fields: str, request_id: str | None
    ) -> V2Response:
        if user_id is not None:
            path, endpoint = f"/2/users/{user_id}", "GET /2/users/:id"
        elif username is not None:
            path, endpoint = f"/2/users/by/username/{quote(username, safe='')}", "GET /2/users/by/username/:username"
        else:
            raise ValueError("a user needs an id or a username")
        return await self._request(
            "GET", path, principal, {"user.fields": fields}, request_id, not_found=UpstreamFailure, endpoint=endpoint
        )

    async def get_users_by_usernames(
        self, usernames: Iterable[str], principal: Principal, request_id: str | None = None
    ) -> V2Response:
        """Users by username (at most 100); v2 reports the unknown ones inside a 200."""
        params = {"usernames": ",".join(usernames), "user.fields": USER_FIELDS}
        return await self._request(
            "GET", "/2/users/by", principal, params, request_id, not_found=UpstreamFailure, endpoint="GET /2/users/by"
        )

    async def send_dm(
        self,
        participant_id: str,
        text: str,
        principal: Principal,
        request_id: str | None = None,
        *,
        media_id: str | None = None,
    ) -> V2Response:
        """Send a one-to-one message, with the media ``media_id`` attached if given; v2 answers the new
        event's id and conversation id."""
        document: dict[str, Any] = {"text": text}
        if media_id is not None:
            document["attachments"] = [{"media_id": media_id}]
        body = orjson.dumps(document)
        path = f"/2/dm_conversations/with/{participant_id}/messages"
        # Never retried (a POST): a send whose answer was lost may have been made.
        return await self._request(
            "POST",
            path,
            principal,
            None,
            request_id,
            not_found=UpstreamFailure,
            body=body,
            endpoint="POST /2/dm_conversations/with/:id/messages",
        )

    async def _request(
        self,
        method: str,
        path: str,
        principal: Principal,
        params: Mapping[str, str] | None = None,
        request_id: str | None = None,
        not_found: type[UpstreamError] = MessageNotFound,
        body: bytes | None = None,
        *,
        endpoint: str,
    ) -> V2Response:
        url, target = self._url(path, params)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if request_id:
            headers["X-Request-Id"] = request_id  # the same on every attempt
        answer, unsure = await self._with_retries(method, url, target, headers, body, principal, endpoint)
        status, raw, rate_limit = answer.status, answer.raw, answer.rate_limit
        if rate_limit is not None:
            self.quotas.record(principal.identity, endpoint, rate_limit)
        if status == 404 and method == "DELETE" and unsure:
            raise NotFoundAfterLostAttempt(
                f"{method} {path}: v2 answered 404 after an attempt whose outcome is unknown", rate_limit=rate_limit
            )
        if status >= 400:
            error = not_found if status == 404 else _STATUS_ERRORS.get(status, UpstreamFailure)
            raise error(f"{method} {path}: v2 answered {status}", rate_limit=rate_limit)
        try:
            document = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailure(f"{method} {path}: body is not JSON") from exc
        if not isinstance(document, dict):
            raise UpstreamFailure(f"{method} {path}: body is not a JSON object")
        return V2Response(status, document, rate_limit, raw)

    def _url(self, path: str, params: Mapping[str, str] | None) -> tuple[URL, str]:
        """``base_url + path`` with ``params`` as its query, as a URL and as the text a credential signs.

        A plain path (an id, a fixed name) goes onto the base URL, parsed once, which gives the same URL as
        parsing the whole string; its text is then the two strings joined, with the query's encoded text
        (``_query_text``) after a ``?``."""
        if self._root is not None and _PLAIN_PATH.fullmatch(path):
            if not params:
                return self._root.with_path(path, encoded=True), self._base + path
            target = f"{self._base}{path}?{_query_text(tuple(params.items()))}"
            return URL(target, encoded=True), target
        url = URL(self._base + path).with_query(dict(params or {}))
        return url, str(url)

    async def _with_retries(
        self,
        method: str,
        url: URL,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        principal: Principal,
        endpoint: str,
    ) -> tuple[_Answer, bool]:
        """The last attempt's answer (or its error), and whether an earlier attempt may have reached v2
        without its answer reaching the gateway."""
        policy = self._retry
        deadline = policy.deadline() if policy.retries else 0.0
        unsure = False
        attempt = 0
        limit: float | None = None  # the seconds a retry attempt may take, None for the session's timeout
        wait: float | None  # the seconds before the next attempt, None when the answer stands
        while True:
            try:
                answer = await self._authorized(method, url, target, headers, body, principal, endpoint, limit)
            except AttemptFailed as exc:
                reason = exc.reason
                if not policy.may_retry(method, attempt):
                    raise
                wait = policy.backoff_delay(attempt)
                if time.monotonic() + wait >= deadline:
                    raise
                unsure = True
            else:
                if answer.status in RETRY_STATUSES:
                    wait = policy.backoff_delay(attempt)
                elif answer.status == RATE_LIMITED:
                    reset = answer.rate_limit.reset if answer.rate_limit else None
                    wait = rate_limit_wait(reset)
                    if wait is not None and wait == 0:
                        wait = policy.backoff_delay(attempt)
                else:
                    return answer, unsure
                reason = str(answer.status)
                if wait is None or not policy.may_retry(method, attempt) or time.monotonic() + wait >= deadline:
                    return answer, unsure
                unsure = unsure or answer.status != RATE_LIMITED
            self._observer.upstream_retry(endpoint, reason)
            log.info("%s: retrying after %s in %.3fs (attempt %d)", endpoint, reason, wait, attempt + 2)
            await asyncio.sleep(wait)
            attempt += 1
            limit = max(deadline - time.monotonic(), 0.001)  # the sleep may have overrun the deadline a little

    async def _authorized(
        self,
        method: str,
        url: URL,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        principal: Principal,
        endpoint: str,
        limit: float | None,
    ) -> _Answer:
        """One attempt: the request with the credential's Authorization, sent again once if v2 refused
        a credential that could renew itself (a refreshed OAuth 2.0 grant)."""
        credential = principal.credential
        renewed = False
        while True:
            headers["Authorization"] = authorization = await credential.authorization(method, target)
            answer = await self._send(method, url, headers, body, endpoint, limit, _breaker_caller(principal))
            if answer.status != 401 or renewed or not await credential.renew(authorization):
                return answer
            renewed = True

    async def _send(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        endpoint: str,
        limit: float | None = None,
        caller: str | None = None,
    ) -> _Answer:
        """One HTTP request through the host's breaker. ``limit`` caps the session's timeouts (a retry may
        only use what is left of the budget); ``caller`` is whose call it is, for the breaker's per-caller
        limit."""
        try:
            probe = self._breaker.allow()
        except UpstreamUnavailable:
            self._observer.upstream_request(endpoint, "breaker_open", 0.0)
            raise
        timeout = self._session.timeout
        if limit is not None:
            timeout = aiohttp.ClientTimeout(
                total=min(timeout.total or limit, limit), sock_connect=min(timeout.sock_connect or limit, limit)
            )
        started = time.perf_counter()
        outcome: str | None = None  # None: the caller went away; nothing to say about upstream
        ok: bool | None = None
        try:
            async with self._session.request(method, url, headers=headers, data=body, timeout=timeout) as resp:
                outcome, ok = _outcome(resp.status)
                try:
                    length = resp.content_length
                    if length is not None and length <= self._max_bytes and hdrs.CONTENT_ENCODING not in resp.headers:
                        raw = await resp.content.read()  # what is read is what was declared: within the bound
                    else:
                        raw = await self._read_bounded(resp)
                except UpstreamFailure:
                    outcome = "too_large"
                    raise
                return _Answer(resp.status, raw, rate_limit_from(resp.headers))
        except TimeoutError as exc:
            outcome, ok = "timeout", False
            raise AttemptFailed(f"{method} {url.path}: {type(exc).__name__}", reason=outcome) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            outcome, ok = "connection_error", False
            raise AttemptFailed(f"{method} {url.path}: {type(exc).__name__}", reason=outcome) from exc
        except aiohttp.ClientResponseError as exc:
            outcome, ok = "server_error", False
            raise UpstreamFailure(f"{method} {url.path}: {exc.status} {exc.message}") from exc
        finally:
            self._breaker.record(ok, probe, caller)
            if outcome is not None:
                self._observer.upstream_request(endpoint, outcome, time.perf_counter() - started)

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, refused once it passes ``max_response_bytes``, read in chunks. (``_send`` reads a body whose
        Content-Length is within the bound and that is not compressed in one go instead.)"""
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise UpstreamFailure(f"v2 body exceeds {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _plain_root(base: str) -> URL | None:
    """``base`` parsed, when it is a bare origin (no path, query, fragment or user) that a plain path can be
    put onto; None otherwise, and every URL is then parsed whole."""
    try:
        root = URL(base)
    except ValueError:
        return None
    if root.raw_path != "/" or root.raw_query_string or root.raw_fragment or root.raw_user or root.raw_password:
        return None
    if not root.absolute or str(root.with_path("", encoded=True)) != base:
        return None
    return root


@lru_cache(maxsize=256)
def _query_text(params: tuple[tuple[str, str], ...]) -> str:
    """A query's text as yarl encodes it, each distinct query encoded once: most are the same few (an event
    lookup's never changes)."""
    return URL("http://query.invalid/").with_query(dict(params)).raw_query_string


def _outcome(status: int) -> tuple[str, bool]:
    """The histogram outcome of a status, and whether it counts as the host answering for the breaker."""
    if status >= 500:
        return "server_error", False
    if status >= 400:
        return "client_error", True
    return "ok", True


def _breaker_caller(principal: Principal) -> str | None:
    """Whose failures the breaker caps per caller: anyone's but the sidecar's. The sidecar acts for the one
    application behind a loopback-only gateway with the operator's own token: when its calls fail, upstream
    is in trouble, and there is nobody else whose failures could open the breaker."""
    return None if principal.source == "sidecar" else principal.identity
