"""The application factory: routes from the config, middlewares for cross-cutting work, resources in
``cleanup_ctx``. Handlers stay a few lines long; everything they do is in a dialect or the service."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from gateway import oauth_provider, passthrough
from gateway.auth.inbound import Authenticator
from gateway.auth.upstream import GrantRefresher
from gateway.bodies import EMPTY_FORM, expect_continue, read_form, read_json
from gateway.config import Config
from gateway.dialects import Dialect, LegacyRequest, RouteSpec
from gateway.dialects.base import JSONP_TYPE, TRUE_VALUES, jsonp_callback
from gateway.edge import ClientGone, client_gone, new_request_id
from gateway.errors import (
    BadRequest,
    GatewayError,
    Internal,
    MethodNotAllowed,
    NotAuthenticated,
    PayloadTooLarge,
    RouteNotFound,
)
from gateway.keys import (
    AUTH_KEY,
    BREAKERS_KEY,
    CLIENT_TIMEOUT_KEY,
    CONFIG_KEY,
    DIALECT,
    FORM,
    FORMAT,
    ID_TRANSLATOR_KEY,
    METRICS_KEY,
    REQUEST_ID,
    ROUTER_KEY,
    SERVICE_KEY,
    STORE_KEY,
)
from gateway.metrics import Metrics, route_label
from gateway.responses import to_web
from gateway.router import DialectRouter
from gateway.service import DMService
from gateway.sidecar import sidecar_guard
from gateway.slow_clients import timed_out, watch_body
from gateway.small_ids import IdTranslator
from gateway.store.base import Store
from gateway.store.factory import open_store_from_config
from gateway.upstream.client import UpstreamClient
from gateway.upstream.resilience import Breakers, RetryPolicy, retry_budget

log = logging.getLogger("gateway")

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: Config, *, store: Store | None = None) -> web.Application:
    """Build the gateway. ``store`` lets tests share one store between app instances."""
    middlewares: list[Middleware] = [gateway_middleware]
    if config.auth.sidecar:
        # Inside the error boundary, so a refusal is answered in the caller's dialect; before any handler.
        middlewares.append(sidecar_guard(config.auth.sidecar_hosts))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG_KEY] = config
    app[CLIENT_TIMEOUT_KEY] = config.server.client_timeout
    app[METRICS_KEY] = metrics = Metrics()
    # One breaker per upstream host, shared by the legacy client and the pass-through; made here so that
    # /readyz and /metrics show the upstream's breaker from the start.
    app[BREAKERS_KEY] = Breakers(
        config.upstream.breaker_failures,
        config.upstream.breaker_reset,
        per_caller=config.upstream.breaker_failures_per_caller,
        observer=metrics,
    )
    app[BREAKERS_KEY].for_url(config.upstream.base_url)
    router = DialectRouter(config)
    app[ROUTER_KEY] = router
    for prefix, dialect, spec in router.mounts:
        handler = _legacy_handler(dialect, spec, small_ids=router.family[dialect] in config.routes.small_ids)
        # A GET route answers HEAD too, as HTTP wants of every GET: the same call, its answer without a body.
        for method in (*spec.methods, "HEAD") if "GET" in spec.methods else spec.methods:
            app.router.add_route(method, prefix + spec.path, handler, expect_handler=expect_continue)
    app.cleanup_ctx.append(_resources(store))
    oauth_provider.setup(app)  # /oauth/... : the gateway as legacy clients' OAuth 1.0a provider
    if config.onboarding.enabled:
        from gateway import onboarding

        onboarding.setup(app, config, lambda app: app[STORE_KEY])  # /connect pages, after the store opens
    passthrough.setup(app)  # /2/... goes upstream unchanged; after the legacy routes and their resources
    return app


def _resources(
    given_store: Store | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG_KEY]
        store = given_store or await open_store_from_config(config.store)
        timeout = aiohttp.ClientTimeout(total=config.upstream.timeout, sock_connect=config.upstream.connect_timeout)
        session = aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=100),
            # Every caller's v2 calls go through this one session: it must never keep one caller's cookies
            # for the next.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        metrics = app[METRICS_KEY]
        upstream = UpstreamClient(
            session,
            config.upstream.base_url,
            max_response_bytes=config.upstream.max_response_bytes,
            retry=RetryPolicy(config.upstream.retries, config.upstream.retry_budget, config.upstream.retry_backoff),
            breakers=app[BREAKERS_KEY],
            observer=metrics,
        )
        refresher = GrantRefresher(
            store,
            session,
            config.upstream.oauth2_token_url,
            config.upstream.oauth2_client_id,
            config.upstream.oauth2_client_secret,
        )
        app[STORE_KEY] = store
        metrics.store_up.set(1)  # it opened; /readyz keeps this current from here on
        app[SERVICE_KEY] = DMService(
            store,
            upstream,
            tombstone_window=config.store.tombstone_window,
            on_store_error=metrics.store_error,
            on_store_lookup=metrics.store_lookup,
        )
        app[AUTH_KEY] = Authenticator(config, store, refresher)
        app[ID_TRANSLATOR_KEY] = IdTranslator(store)  # used by the families named in [routes] small_ids
        try:
            yield
        finally:
            await app[SERVICE_KEY].drain()  # deletion records still being written go to the store first
            await session.close()
            app[AUTH_KEY].close()
            if given_store is None:
                await store.close()

    return resources


def _legacy_handler(dialect: Dialect, spec: RouteSpec, *, small_ids: bool = False) -> Handler:
    """The handler of one legacy route. With ``small_ids`` the caller's ids are small ids: the operation's
    ids are turned into v2 ids before the service, and the outcome's into small ids before the dialect."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[DIALECT] = dialect
        fmt = spec.fmt or request.match_info["fmt"]
        request[FORMAT] = fmt
        document = None
        if spec.body == "json":
            form = EMPTY_FORM
            document = await read_json(request)
        elif request.body_exists:
            form = await read_form(request)
        else:
            form = EMPTY_FORM
        request[FORM] = form
        app = request.app
        principal = None if spec.public else await app[AUTH_KEY].authenticate(request, form)
        legacy = LegacyRequest(
            request.method, request.path, request.match_info, request.query, form, document, host=request.host
        )
        op = dialect.parse(spec.operation, legacy)
        if principal is None:
            outcome = await app[SERVICE_KEY].info()
        else:
            # Every v2 call this legacy call makes shares one retry budget.
            with retry_budget(app[CONFIG_KEY].upstream.retry_budget):
                if small_ids:
                    translator = app[ID_TRANSLATOR_KEY]
                    v2_op = await translator.inbound(op)
                    v2_outcome = await app[SERVICE_KEY].run(v2_op, principal, request[REQUEST_ID])
                    outcome = await translator.outbound(v2_outcome)
                else:
                    outcome = await app[SERVICE_KEY].run(op, principal, request[REQUEST_ID])
        return to_web(dialect.render(op, outcome, fmt))

    return handle


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything the gateway does around every handler, in one layer (each layer of middleware costs every
    request a coroutine and a call). From the outside in:

    1. the body deadline (``gateway.slow_clients``): armed before anything reads the body, cancelled once
       the request is answered; a connection whose body missed it is closed;
    2. the request count, by dialect, route template and the status the client got (so after the error
       boundary);
    3. the request id: the client's ``X-Request-Id`` when well-formed, else a new one; handlers send it
       upstream, and the answer carries it, error answers included;
    4. JSONP: a ``callback`` in the query string of a JSON call of a dialect that honoured it wraps the
       answer, error answers included; a callback that is no JavaScript name is refused before the call;
    5. the error boundary: whatever goes wrong becomes the calling dialect's own error shape.
    """
    timer = watch_body(request)
    try:
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _REQUEST_ID_OK.fullmatch(incoming) else new_request_id()
        request[REQUEST_ID] = request_id
        error: GatewayError | None = None
        callback = None
        try:
            if "callback" in request.query:
                callback = _jsonp_callback(request)
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - the error boundary; CancelledError is not an Exception
            error = _as_gateway_error(request, exc)
        if error is not None:
            response = _error_response(request, error)
        if callback is not None:
            _wrap_jsonp(response, callback)
        response.headers["X-Request-Id"] = request_id
        _count(request, response)
    finally:
        if timer is not None:
            timer.cancel()
    if timer is not None and timed_out(request):
        response.force_close()
    elif request.content.exception() is not None:
        # A body aiohttp can no longer read (it did not decode as its Content-Encoding said): the connection
        # cannot carry another request, and the body is over for this one, or aiohttp would try to drain
        # the rest of it after the answer, fail again, and log that with a traceback.
        request.content.feed_eof()
        response.force_close()
    return response


def _jsonp_callback(request: web.Request) -> str | None:
    """The JSONP callback of a JSON call to a dialect that wraps JSON answers (StatusNet's, from the query
    string, as a ``<script>`` calls), or None; a malformed one is an invalid parameter, refused before
    the call is authenticated or made."""
    if request.path.startswith("/2/"):
        return None  # the pass-through: v2's own answers
    dialect = request.app[ROUTER_KEY].for_path(request.path)
    if not dialect.jsonp or (request.match_info.get("fmt") or dialect.error_format(request.path)) != "json":
        return None
    callback = jsonp_callback(request.query.getall("callback"))
    if callback is not None and _ambient_credentials(request):
        raise NotAuthenticated("Basic credentials on a JSONP call another site's page made")
    return callback


def _ambient_credentials(request: web.Request) -> bool:
    """Whether a browser may have added the credentials by itself: Basic credentials it keeps for the site,
    on a request a page of another site made (``Sec-Fetch-Site``). A JSONP answer is a script any page can
    include, so it is given for such credentials only to the site's own pages; a browser-based client
    signs its calls (OAuth 1.0a) instead, which no other page can do for it."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    return site in ("cross-site", "same-site") and authorization[:6].lower() == "basic "


def _wrap_jsonp(response: web.StreamResponse, callback: str) -> None:
    """A JSON answer as ``callback(...)``, served as JavaScript; any other answer is left alone. U+2028 and
    U+2029, which JSON strings may hold but JavaScript before ES2019 may not, are written escaped."""
    if (
        isinstance(response, web.Response)
        and response.content_type == "application/json"
        and isinstance(response.body, bytes | bytearray)
        and response.body
    ):
        body = bytes(response.body).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        response.body = b"%s(%s)" % (callback.encode("ascii"), body)
        response.headers[hdrs.CONTENT_TYPE] = JSONP_TYPE


def _count(request: web.Request, response: web.StreamResponse) -> None:
    dialect = request.get(DIALECT)
    route = route_label(request)
    if dialect is not None:
        name = dialect.name
    elif route.startswith("/2/"):
        name = "v2"
    else:
        name = "unknown"
    request.app[METRICS_KEY].request_answered(name, route, response.status)


def _as_gateway_error(request: web.Request, exc: Exception) -> GatewayError:
    """The gateway error an exception out of a handler stands for; an unexpected one is logged with its
    traceback (so call this while handling it)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, web.HTTPNotFound):
        return RouteNotFound(request.path)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        # HEAD goes unsaid: it comes with every GET, and legacy messages name only the methods of the call.
        return MethodNotAllowed(tuple(sorted(exc.allowed_methods - {"HEAD"})), request.method)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge()
    if isinstance(exc, web.HTTPClientError):
        return BadRequest(exc.reason)
    if isinstance(exc, web.RequestPayloadError):  # a body aiohttp could not decode (gzip, deflate)
        return BadRequest(f"unreadable body: {type(exc.__cause__ or exc).__name__}")
    if client_gone(request, exc):
        log.debug("request %s: the client closed the connection mid-body", request.get(REQUEST_ID))
        return ClientGone("client closed the connection before its body was complete")
    log.exception("unexpected error, request id %s", request.get(REQUEST_ID))  # noqa: LOG004 - called in except
    return Internal()


def _error_response(request: web.Request, error: GatewayError) -> web.Response:
    if error.kind.startswith("upstream") or error.kind == "internal":
        log.warning("request %s failed: %s (%s)", request.get(REQUEST_ID), error.kind, error.detail)
    dialect: Dialect = request.get(DIALECT) or request.app[ROUTER_KEY].for_path(request.path)
    fmt = request.get(FORMAT) or dialect.error_format(request.path)
    suppress = _suppress_response_codes(request)
    return to_web(dialect.render_error(error, fmt, request.path, suppress=suppress))


def _suppress_response_codes(request: web.Request) -> bool:
    values = request.query.getall("suppress_response_codes", [])
    values += request.get(FORM, EMPTY_FORM).getall("suppress_response_codes", [])
    return any(value.strip().lower() in TRUE_VALUES for value in values)
