"""v2 pass-through: any ``/2/...`` request goes upstream unchanged, and its answer comes back unchanged.

Integrators moving from legacy calls to v2 bit by bit keep one endpoint for both. The gateway acts as a
plain HTTP proxy here: method, raw path and query, end-to-end headers and the body go upstream (the body
streamed, never buffered; one aiohttp's server has decompressed goes decoded, without its
``Content-Encoding`` and ``Content-Length``); status, end-to-end headers and the body come back, streamed in
chunks and still in the content coding upstream chose. The client's Authorization is v2's to judge, with
one exception: a request signed with OAuth 1.0a for the gateway by a consumer and token registered here is
verified like a legacy call (``Authenticator.oauth1_for_v2``) and signed again for the upstream URL by the
principal's own credential; a stale or replayed one is refused with 401. A signature the gateway cannot
verify (an unknown consumer, a signature over another URL) goes upstream untouched.

Upstream is always ``upstream.base_url``'s host: the URL is that scheme and authority with the request's
path and query, never a string the client wrote. An absolute-form target (``GET http://elsewhere/2/...``)
counts for its path and query only; its scheme and authority are ignored. A path with a ``.`` or ``..``
segment is refused with 400, since upstream could resolve it outside ``/2/``. (aiohttp never routes a CONNECT
request, whose target is only an authority, so it does not get here.)

On the way, DM and user bodies are read to learn from (``gateway.learn``): a copy of the bytes, capped at
``upstream.max_response_bytes``, decoded if compressed. A message sent through the pass-through is answered
by v2 with ids only, so the gateway then looks that event up itself, in the background, with the sender's
own bearer token or verified OAuth 1.0a identity (an unverified signature covers only the request it
signed), and learns it. Failures of the
proxy itself answer in v2's own problem+json, never in a legacy dialect's shape.

The pass-through shares the upstream host's circuit breaker with the legacy calls: its 5xx, timeouts and
connection errors count, under the caller's name (``caller``), against the breaker's per-caller limit; while
the breaker is open it answers 503 with ``Retry-After`` without sending anything. A failure while the gateway
was still waiting for the client's own body (a body that trickles, stops or is cut off) is the client's
doing: it answers 408 (400 for a body that cannot be read: a bad chunk, a coding that does not decode) and
closes the connection, and the breaker does not hear of it. It never retries: a proxied request may be a
send.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.auth.inbound import bearer_token, token_identity
from gateway.auth.upstream import BearerCredential
from gateway.bodies import expect_continue
from gateway.edge import BodyUnreadable
from gateway.errors import GatewayError
from gateway.keys import AUTH_KEY, BREAKERS_KEY, CONFIG_KEY, REQUEST_ID, STORE_KEY
from gateway.learn import BoundedDecoder, learn_from_v2, learnable
from gateway.model import Principal, UpstreamCredential
from gateway.responses import problem
from gateway.slow_clients import ClientTooSlow
from gateway.upstream.client import DM_EVENT_LOOKUP
from gateway.upstream.resilience import BreakerOpen

log = logging.getLogger("gateway.passthrough")

SESSION_KEY = web.AppKey("passthrough_session", aiohttp.ClientSession)
FOLLOW_UPS_KEY = web.AppKey("passthrough_follow_ups", set)
UPSTREAM_KEY = web.AppKey("passthrough_upstream", URL)  # upstream.base_url, parsed once

# v2's send endpoints: to a participant, to a conversation, or creating a conversation with a message.
_SEND_PATH = re.compile(r"/2/dm_conversations(?:/with/[^/]+/messages|/[^/]+/messages)?")

CHUNK_SIZE = 64 * 1024

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
# aiohttp's client would otherwise add these when the caller did not send them.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# The request content codings aiohttp's HTTP parser decodes (with the web server's default auto_decompress).
_DECODED_BY_SERVER = frozenset({"gzip", "deflate", "br", "zstd"})
# The parameters of an OAuth 1.0a Authorization header that name its signer.
_OAUTH_SIGNER = re.compile(r'\b(oauth_consumer_key|oauth_token)\s*=\s*"([^"]*)"')


def setup(app: web.Application) -> None:
    """Mount the pass-through for every method under ``/2/`` and give it an HTTP session of its own."""
    # Any tail at all: "." alone would miss a path whose decoded form holds a newline (sent as %0A).
    app.router.add_route("*", r"/2/{tail:[\s\S]*}", handle, expect_handler=expect_continue)
    app.cleanup_ctx.append(_session)


async def _session(app: web.Application) -> AsyncIterator[None]:
    upstream = app[CONFIG_KEY].upstream
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=upstream.timeout, sock_connect=upstream.connect_timeout),
        connector=aiohttp.TCPConnector(limit=100),
        # The client gets upstream's bytes as they were sent; learning decodes a copy of its own.
        auto_decompress=False,
        # A proxy shared by many clients must never keep one client's cookies for the next.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    follow_ups: set[asyncio.Task[None]] = set()
    app[UPSTREAM_KEY] = URL(upstream.base_url)
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
    elif decoded_by_server(headers.get(hdrs.CONTENT_ENCODING, "")):
        # The body goes upstream as the handler reads it: decoded, so longer than the client's
        # Content-Length said, and streamed in chunks.
        headers.popall(hdrs.CONTENT_ENCODING)
        headers.popall(hdrs.CONTENT_LENGTH, None)
    forwarded_for = headers.popall("X-Forwarded-For", [])
    if request.remote:
        forwarded_for.append(request.remote)
    if forwarded_for:
        headers["X-Forwarded-For"] = ", ".join(forwarded_for)
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Request-Id"] = request[REQUEST_ID]
    return headers


def decoded_by_server(content_encoding: str) -> bool:
    """Whether aiohttp's server takes this content coding off a request body before the handler reads it:
    one of the codings its parser knows, named alone (a list of codings is left as it came)."""
    return content_encoding.isascii() and content_encoding.lower() in _DECODED_BY_SERVER


def upstream_url(base: URL, request: web.Request, *, signed_query: bool = False) -> URL:
    """Where a request goes upstream: the scheme and authority of ``base``, the request's path and query.

    The path and query are those the request was routed by (``rel_url``): an origin-form target's own, an
    absolute-form target's without its scheme and authority. Nothing the client wrote can name the host.
    ``signed_query``: the gateway verified the request's signature and signs it again, so any ``oauth_``
    parameters of the query (the client's signature) are left out."""
    target = request.rel_url
    query = target.raw_query_string
    if signed_query and query:
        query = "&".join(item for item in query.split("&") if not unquote(item).startswith("oauth_"))
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=target.raw_path,
        query_string=query,
        encoded=True,
    )


def caller(request: web.Request) -> str:
    """Who a pass-through request comes from, as the breaker's per-caller limit knows callers: by the
    credential it carries, never the credential itself (a bearer token by its digest, named as the legacy
    side names it; an OAuth 1.0a header by its consumer and token; any other by its digest), or by the
    client's address when it carries none."""
    authorization = request.headers.get(hdrs.AUTHORIZATION, "").strip()
    if not authorization:
        return f"address:{request.remote}"
    scheme, _, credentials = authorization.partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer" and credentials:
        return token_identity("bearer", credentials)
    if scheme == "oauth":
        signer = dict(_OAUTH_SIGNER.findall(credentials))
        if "oauth_token" in signer:
            return f"oauth1:{unquote(signer.get('oauth_consumer_key', ''))}:{unquote(signer['oauth_token'])}"
    return token_identity("authorization", authorization)


class _Body:
    """The client's request body on its way upstream, a chunk at a time as it arrives.

    ``waiting`` is True while the gateway waits for the client's next bytes, and stays True when they never
    come (the body missed ``server.client_timeout``, or the client went away): a request that fails then
    failed because of the client, not because of upstream."""

    __slots__ = ("_content", "waiting")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self.waiting = False

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._content
        while True:
            self.waiting = True
            chunk = await content.readany()  # b"" once the body is complete
            self.waiting = False
            if not chunk:
                return
            yield chunk


async def handle(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY].upstream
    request_id = request[REQUEST_ID]
    if any(segment in (".", "..") for segment in request.path.split("/")):
        # /2/../elsewhere is no v2 call: upstream might resolve it to a path outside /2/.
        return problem(400, "Bad Request", "The path must not contain . or .. segments.", request_id)
    url = upstream_url(request.app[UPSTREAM_KEY], request)
    headers = _outgoing_headers(request)
    try:
        principal = await request.app[AUTH_KEY].oauth1_for_v2(request)
        if principal is not None:
            # Signed for the gateway by a consumer and token it knows: signed again, for upstream, as the
            # identity they stand for.
            url = upstream_url(request.app[UPSTREAM_KEY], request, signed_query=True)
            headers[hdrs.AUTHORIZATION] = await principal.credential.authorization(request.method, str(url))
    except GatewayError as error:
        return _refusal(error, request_id)
    session = request.app[SESSION_KEY]
    # The legacy calls' breaker for this host: while it is open, fail fast here too.
    breaker = request.app[BREAKERS_KEY].for_url(config.base_url)
    try:
        probe = breaker.allow()
    except BreakerOpen:
        response = problem(503, "Service Unavailable", "The upstream server is failing; try again later.", request_id)
        response.headers["Retry-After"] = str(math.ceil(breaker.retry_after()) or 1)
        return response
    body = _Body(request.content) if request.body_exists else None
    answered: bool | None = None  # for the breaker: None when neither upstream answered nor it failed
    try:
        upstream = await session.request(
            request.method,
            url,
            headers=headers,
            data=body.chunks() if body is not None else None,
            allow_redirects=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
        )
        answered = upstream.status < 500
    except asyncio.CancelledError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        if body is not None and body.waiting:
            return _body_failed(request, request_id)
        answered = False
        if isinstance(exc, asyncio.TimeoutError):
            log.warning("pass-through %s %s: upstream timed out (request %s)", request.method, request.path, request_id)
            return problem(504, "Gateway Timeout", "The upstream server did not answer in time.", request_id)
        log.warning("pass-through %s %s: %s (request %s)", request.method, request.path, exc, request_id)
        return problem(
            502, "Bad Gateway", f"The upstream server could not be reached ({type(exc).__name__}).", request_id
        )
    finally:
        breaker.record(answered, probe, caller(request) if answered is False else None)
    async with upstream:
        return await _relay(request, upstream, request_id, url.raw_path_qs, principal)


def _refusal(error: GatewayError, request_id: str) -> web.Response:
    """A pass-through request the gateway verified but will not forward (a stale timestamp, a spent nonce, an
    identity upstream no longer takes), or whose credentials the store could not be asked about."""
    if error.kind.startswith("upstream"):
        return problem(503, "Service Unavailable", "The gateway cannot check credentials now.", request_id)
    detail = "The OAuth 1.0a request is stale, was already used, or its identity cannot act upstream."
    response = problem(401, "Unauthorized", detail, request_id)
    response.headers["WWW-Authenticate"] = 'OAuth realm="X API"'
    return response


def _body_failed(request: web.Request, request_id: str) -> web.Response:
    """The answer when upstream was still being sent the client's body and the body failed: it stalled,
    broke off, or did not read (a bad chunk, a content coding that does not decode). The client's doing,
    not upstream's. The rest of the body is not waited for (as in ``gateway.slow_clients``): the connection
    closes once the answer is sent, if the client is still there to get it."""
    broken = request.content.exception()
    if isinstance(broken, BodyUnreadable | web.RequestPayloadError):
        what = type(broken.__cause__ or broken).__name__
        log.info(
            "pass-through %s %s: the client's body is unreadable: %s (request %s)",
            request.method,
            request.path,
            what,
            request_id,
        )
        response = problem(400, "Bad Request", "The request body could not be read.", request_id)
    else:
        log.info(
            "pass-through %s %s: the client's body did not arrive (request %s)",
            request.method,
            request.path,
            request_id,
        )
        if broken is None:
            request.content.set_exception(ClientTooSlow("request body not received before upstream gave up"))
        response = problem(408, "Request Timeout", "The request body was not received in time.", request_id)
    response.force_close()
    return response


async def _relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    request_id: str,
    target: str,
    principal: Principal | None = None,
) -> web.StreamResponse:
    """Upstream's answer to the client; ``target`` is the path and query it answered."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(end_to_end(upstream.headers))
    response.headers["X-Request-Id"] = request_id
    limit = request.app[CONFIG_KEY].upstream.max_response_bytes
    tee: list[bytes] | None = [] if _should_learn(request.method, target, upstream) else None
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
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Too late for a problem body: the status is sent. Cut the connection so the client sees the loss.
        log.warning("pass-through %s %s broke mid-body: %r (request %s)", request.method, request.path, exc, request_id)
        if request.transport is not None:
            request.transport.close()
        return response
    if tee is not None:
        await _learn(request, target, upstream, b"".join(tee), limit, principal)
    if held is not None:
        await response.write(held)
    await response.write_eof()
    return response


def _is_send(method: str, target: str) -> bool:
    return method == "POST" and bool(_SEND_PATH.fullmatch(urlsplit(target).path))


def _should_learn(method: str, target: str, upstream: aiohttp.ClientResponse) -> bool:
    if upstream.content_type != "application/json":
        return False
    if _is_send(method, target):
        return upstream.status in (200, 201)
    return upstream.status == 200 and learnable(method, target)


async def _learn(
    request: web.Request,
    target: str,
    upstream: aiohttp.ClientResponse,
    raw: bytes,
    limit: int,
    principal: Principal | None,
) -> None:
    try:
        body = BoundedDecoder(limit).decode(upstream.headers.get(hdrs.CONTENT_ENCODING, ""), raw)
        if body is None:
            return
        if _is_send(request.method, target):
            _follow_up_send(request, body, principal)
        else:
            await learn_from_v2(request.app[STORE_KEY], request.method, target, body)
    except Exception:  # the client's response never fails because learning did
        log.warning("learning from pass-through %s failed", request.path, exc_info=True)


def _follow_up_send(request: web.Request, body: bytes, principal: Principal | None) -> None:
    """Learn a message just sent: v2 answered with its id, so look the event up, in the background, as the
    sender: with their bearer token, or signed as the verified OAuth 1.0a caller."""
    data = orjson.loads(body).get("data") or {}
    event_id = data.get("dm_event_id") if isinstance(data, dict) else None
    if not isinstance(event_id, str) or not event_id.isascii() or not event_id.isdigit():
        return
    credential: UpstreamCredential
    if principal is not None:
        credential = principal.credential
    else:
        token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        if token is None:
            return  # a signature the gateway did not verify covers only the request it signed
        credential = BearerCredential(token)
    follow_ups = request.app[FOLLOW_UPS_KEY]
    task = asyncio.create_task(_learn_sent(request.app, event_id, credential))
    follow_ups.add(task)
    task.add_done_callback(follow_ups.discard)


async def _learn_sent(app: web.Application, event_id: str, credential: UpstreamCredential) -> None:
    upstream = app[CONFIG_KEY].upstream
    path = f"/2/dm_events/{event_id}?{urlencode(DM_EVENT_LOOKUP)}"
    url = URL(upstream.base_url.rstrip("/") + path, encoded=True)
    try:
        headers = {"Authorization": await credential.authorization("GET", str(url)), "Accept": "application/json"}
        async with app[SESSION_KEY].get(
            url,
            headers=headers,
            skip_auto_headers=("Accept-Encoding",),  # identity: this session does not decompress
        ) as resp:
            body = await resp.content.read(upstream.max_response_bytes + 1)
            if resp.status != 200 or len(body) > upstream.max_response_bytes:
                log.info("could not learn sent message %s: v2 answered %s", event_id, resp.status)
                return
        await learn_from_v2(app[STORE_KEY], "GET", path, body)
    except asyncio.CancelledError:
        raise
    except Exception:  # learning is best effort; the send itself already succeeded
        log.warning("learning sent message %s failed", event_id, exc_info=True)
