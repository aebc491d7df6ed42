"""The application factory: routes from the config, the middlewares of ``gateway.middlewares`` for
cross-cutting work, resources in ``cleanup_ctx``. Handlers stay a few lines long; everything they do is in a
dialect or the service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import oauth_provider, passthrough
from gateway.auth.inbound import Authenticator
from gateway.auth.upstream import GrantRefresher
from gateway.bodies import EMPTY_FORM, expect_continue, read_form, read_json
from gateway.config import Config
from gateway.dialects import Dialect, LegacyRequest, RouteSpec
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
from gateway.metrics import Metrics
from gateway.middlewares import count_requests, error_boundary, jsonp, request_id
from gateway.responses import to_web
from gateway.router import DialectRouter
from gateway.service import DMService
from gateway.sidecar import sidecar_guard
from gateway.slow_clients import body_deadline
from gateway.small_ids import IdTranslator
from gateway.store.base import Store
from gateway.store.factory import open_store_from_config
from gateway.upstream.client import UpstreamClient
from gateway.upstream.resilience import Breakers, RetryPolicy, retry_budget

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: Config, *, store: Store | None = None) -> web.Application:
    """Build the gateway. ``store`` lets tests share one store between app instances."""
    # From the outside in; gateway.middlewares says why in this order.
    middlewares: list[Middleware] = [body_deadline, count_requests, request_id, error_boundary, jsonp]
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
            store_max_age=min(config.store.message_retention, config.store.user_max_age),
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
