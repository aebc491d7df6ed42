"""v2 pass-through: any ``/2/...`` request goes upstream unchanged, and its answer comes back unchanged.

Integrators moving from legacy calls to v2 bit by bit keep one endpoint for both. The gateway acts as a
plain HTTP proxy here: method, raw path and query, end-to-end headers and the body go upstream (the body
streamed, never buffered; decoded if the client compressed it, as aiohttp reads it); status, end-to-end
headers and the body come back, streamed in chunks and still in the content coding upstream chose. The
client's Authorization is v2's to judge.

On the way, DM and user bodies are read to learn from (``gateway.learn``): a copy of the bytes, capped at
``upstream.max_response_bytes``, decoded if compressed. A message sent through the pass-through is answered
by v2 with ids only, so the gateway then looks that event up itself, in the background, with the sender's
own bearer token (an OAuth 1.0a signature covers only the request it signed), and learns it. Failures of the proxy itself answer in v2's own
problem+json, never in a legacy dialect's shape. The pass-through shares the upstream host's circuit breaker
with the legacy calls (its 5xx, timeouts and connection errors count; while the breaker is open it answers
503 with ``Retry-After`` without sending anything). It never retries: a proxied request may be a send.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import app as gateway_app
from gateway.learn import BoundedDecoder, learn_from_v2, learnable
from gateway.slow_clients import timed_out
from gateway.upstream.client import DM_EVENT_LOOKUP
from gateway.upstream.resilience import BreakerOpen

log = logging.getLogger("gateway.passthrough")

SESSION_KEY = web.AppKey("passthrough_session", aiohttp.ClientSession)
FOLLOW_UPS_KEY = web.AppKey("passthrough_follow_ups", set)

# v2's send endpoints: to a participant, to a conversation, or creating a conversation with a message.
_SEND_PATH = re.compile(r"/2/dm_conversations(?:/with/[^/]+/messages|/[^/]+/messages)?")

CHUNK_SIZE = 64 * 1024
PROBLEM_JSON = "application/problem+json"

# RFC 9110 section 7.6.1, plus the obsolete Proxy-Connection some clients still send.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway's own HTTP client for the upstream connection.
_NOT_FORWARDED = HOP_BY_HOP | {"host"}
# The content codings aiohttp's server decodes a request body from, as it arrives: the handler reads the
# decoded bytes.
_DECODED_BY_AIOHTTP = frozenset({"gzip", "deflate", "br", "zstd"})
# aiohttp's client would otherwise add these when the caller did not send them.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def setup(app: web.Application) -> None:
    """Mount the pass-through for every method under ``/2/`` and give it an HTTP session of its own."""
    # Any tail at all: "." alone would miss a path whose decoded form holds a newline (sent as %0A).
    app.router.add_route("*", r"/2/{tail:[\s\S]*}", handle, expect_handler=gateway_app.expect_continue)
    app.cleanup_ctx.append(_session)


async def _session(app: web.Application) -> AsyncIterator[None]:
    upstream = app[gateway_app.CONFIG_KEY].upstream
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=upstream.timeout, sock_connect=upstream.connect_timeout),
        connector=aiohttp.TCPConnector(limit=100),
        # The client gets upstream's bytes as they were sent; learning decodes a copy of its own.
        auto_decompress=False,
        # A proxy shared by many clients must never keep one client's cookies for the next.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    follow_ups: set[asyncio.Task[None]] = set()
    app[SESSION_KEY] = session
    app[FOLLOW_UPS_KEY] = follow_ups
    try:
        yield
    finally:
        for task in follow_ups:
            task.cancel()
        await asyncio.gather(*follow_ups, return_exceptions=True)
        await session.close()


def end_to_end(headers: CIMultiDict[str] | CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The headers minus hop-by-hop ones: the fixed list and whatever Connection names."""
    source = CIMultiDict(headers)
    named = {
        token.strip().lower()
        for value in source.getall(hdrs.CONNECTION, [])
        for token in value.split(",")
        if token.strip()
    }
    return CIMultiDict((k, v) for k, v in source.items() if k.lower() not in HOP_BY_HOP and k.lower() not in named)


def _outgoing_headers(request: web.Request) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in end_to_end(request.headers).items() if k.lower() not in _NOT_FORWARDED)
    if not request.body_exists:
        headers.popall(hdrs.CONTENT_LENGTH, None)
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "")
    if coding.isascii() and coding.lower() in _DECODED_BY_AIOHTTP:
        # The body goes upstream as the handler reads it, decoded: without its old coding and length.
        headers.popall(hdrs.CONTENT_ENCODING, None)
        headers.popall(hdrs.CONTENT_LENGTH, None)
    forwarded_for = headers.popall("X-Forwarded-For", [])
    if request.remote:
        forwarded_for.append(request.remote)
    if forwarded_for:
        headers["X-Forwarded-For"] = ", ".join(forwarded_for)
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Request-Id"] = request[gateway_app.REQUEST_ID]
    return headers


def problem(status: int, title: str, detail: str, request_id: str | None) -> web.Response:
    body = {"title": title, "detail": detail, "type": "about:blank", "status": status}
    response = web.Response(status=status, body=orjson.dumps(body), content_type=PROBLEM_JSON)
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


async def handle(request: web.Request) -> web.StreamResponse:
    config = request.app[gateway_app.CONFIG_KEY].upstream
    request_id = request[gateway_app.REQUEST_ID]
    url = config.base_url.rstrip("/") + request.raw_path
    session = request.app[SESSION_KEY]
    # The legacy calls' breaker for this host: while it is open, fail fast here too.
    breaker = request.app[gateway_app.BREAKERS_KEY].for_url(config.base_url)
    try:
        probe = breaker.allow()
    except BreakerOpen:
        response = problem(503, "Service Unavailable", "The upstream server is failing; try again later.", request_id)
        response.headers["Retry-After"] = str(math.ceil(breaker.retry_after()) or 1)
        return response
    answered: bool | None = None  # for the breaker: None when the client went away first
    try:
        upstream = await session.request(
            request.method,
            URL(url, encoded=True),
            headers=_outgoing_headers(request),
            data=request.content if request.body_exists else None,
            allow_redirects=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
        )
        answered = upstream.status < 500
    except asyncio.CancelledError:
        raise
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        if timed_out(request):  # the client's body stalled on its way upstream (gateway.slow_clients)
            return problem(408, "Request Timeout", "The request body was not received in time.", request_id)
        if request.content.exception() is not None:  # it did not decode as its Content-Encoding said
            return problem(400, "Bad Request", "The request body could not be read.", request_id)
        answered = False
        if isinstance(exc, asyncio.TimeoutError):
            log.warning("pass-through %s %s: upstream timed out (request %s)", request.method, request.path, request_id)
            return problem(504, "Gateway Timeout", "The upstream server did not answer in time.", request_id)
        log.warning("pass-through %s %s: %s (request %s)", request.method, request.path, exc, request_id)
        return problem(502, "Bad Gateway", f"The upstream server could not be reached ({type(exc).__name__}).", request_id)
    finally:
        breaker.record(answered, probe)
    async with upstream:
        return await _relay(request, upstream, request_id)


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse, request_id: str) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(end_to_end(upstream.headers))
    response.headers["X-Request-Id"] = request_id
    limit = request.app[gateway_app.CONFIG_KEY].upstream.max_response_bytes
    tee: list[bytes] | None = [] if _should_learn(request, upstream) else None
    teed = 0
    held: bytes | None = None  # while learning, the last chunk waits until the body has been learned
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK_SIZE):
            if tee is not None:
                teed += len(chunk)
                if teed > limit:
                    tee = None  # too large to learn from; keep streaming
                else:
                    tee.append(chunk)
            if held is not None:
                await response.write(held)
            held = chunk
            if tee is None:
                await response.write(held)
                held = None
    except asyncio.CancelledError:
        raise
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        # Too late for a problem body: the status is sent. Cut the connection so the client sees the loss.
        log.warning("pass-through %s %s broke mid-body: %r (request %s)", request.method, request.path, exc, request_id)
        if request.transport is not None:
            request.transport.close()
        return response
    if tee is not None:
        await _learn(request, upstream, b"".join(tee), limit)
    if held is not None:
        await response.write(held)
    await response.write_eof()
    return response


def _is_send(request: web.Request) -> bool:
    return request.method == "POST" and bool(_SEND_PATH.fullmatch(urlsplit(request.raw_path).path))


def _should_learn(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    if upstream.content_type != "application/json":
        return False
    if _is_send(request):
        return upstream.status in (200, 201)
    return upstream.status == 200 and learnable(request.method, request.raw_path)


async def _learn(request: web.Request, upstream: aiohttp.ClientResponse, raw: bytes, limit: int) -> None:
    try:
        body = BoundedDecoder(limit).decode(upstream.headers.get(hdrs.CONTENT_ENCODING, ""), raw)
        if body is None:
            return
        if _is_send(request):
            _follow_up_send(request, body)
        else:
            await learn_from_v2(request.app[gateway_app.STORE_KEY], request.method, request.raw_path, body)
    except Exception:  # noqa: BLE001 - the client's response never fails because learning did
        log.warning("learning from pass-through %s failed", request.path, exc_info=True)


def _follow_up_send(request: web.Request, body: bytes) -> None:
    """Learn a message just sent: v2 answered with its id, so look the event up, in the background."""
    data = orjson.loads(body).get("data") or {}
    event_id = data.get("dm_event_id") if isinstance(data, dict) else None
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    if not isinstance(event_id, str) or not event_id.isascii() or not event_id.isdigit():
        return
    if not authorization.lower().startswith("bearer "):
        return  # an OAuth 1.0a signature covers only the request it signed; nothing else to ask v2 with
    follow_ups = request.app[FOLLOW_UPS_KEY]
    task = asyncio.create_task(_learn_sent(request.app, event_id, authorization))
    follow_ups.add(task)
    task.add_done_callback(follow_ups.discard)


async def _learn_sent(app: web.Application, event_id: str, authorization: str) -> None:
    upstream = app[gateway_app.CONFIG_KEY].upstream
    path = f"/2/dm_events/{event_id}?{urlencode(DM_EVENT_LOOKUP)}"
    headers = {"Authorization": authorization, "Accept": "application/json"}
    try:
        async with app[SESSION_KEY].get(
            URL(upstream.base_url.rstrip("/") + path, encoded=True),
            headers=headers,
            skip_auto_headers=("Accept-Encoding",),  # identity: this session does not decompress
        ) as resp:
            body = await resp.content.read(upstream.max_response_bytes + 1)
            if resp.status != 200 or len(body) > upstream.max_response_bytes:
                log.info("could not learn sent message %s: v2 answered %s", event_id, resp.status)
                return
        await learn_from_v2(app[gateway_app.STORE_KEY], "GET", path, body)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - learning is best effort; the send itself already succeeded
        log.warning("learning sent message %s failed", event_id, exc_info=True)
