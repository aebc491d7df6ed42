"""The admin listener: a status page, liveness, readiness and Prometheus metrics, on an address of their own.

It is a separate small application served beside the gateway (``dm-gateway serve`` runs both), so none of
these routes exists on the public listener, and an operator can keep them on loopback. Readiness asks the
gateway's store for a PING under a short timeout: a store that cannot answer makes the gateway *degraded*
(it keeps serving from upstream), never down, and the next successful check makes it ready again.
Readiness also reports the upstream host's circuit breaker: while it is open legacy calls fail fast, so the
gateway is *unavailable* (503). Once the breaker's reset time has passed it reads half-open and readiness
is 200 again, so traffic comes back and the next call can probe upstream.

``GET /`` is a status page an operator can leave open (it reloads itself every ``REFRESH_SECONDS``), and
``GET /status.json`` its twin for scripts: version, uptime, workers, readiness (/readyz's own answer), traffic
from the same registry /metrics exports (see gateway/status.py), the store's size and a credentials summary.
The store's size and the credentials are read at most every ``SUMMARY_MAX_AGE`` seconds, however often the
page is loaded, each under the ping timeout. Counts and keys only: no secret, no token, no DM text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import __version__
from gateway.keys import BREAKERS_KEY, CONFIG_KEY, METRICS_KEY, STORE_KEY
from gateway.status import Sampler
from gateway.store.base import StoreError
from gateway.upstream.resilience import BreakerState

log = logging.getLogger("gateway.admin")

GATEWAY_KEY = web.AppKey("gateway", web.Application)
PING_TIMEOUT_KEY = web.AppKey("ping_timeout", float)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
SAMPLER_KEY = web.AppKey("status_sampler", Sampler)
SUMMARY_KEY = web.AppKey("status_summary", dict)

DEFAULT_PING_TIMEOUT = 2.0
REFRESH_SECONDS = 10
SUMMARY_MAX_AGE = 30.0
EXPIRING_WITHIN = 24 * 3600.0
MAX_KEYS_SHOWN = 50


def create_admin_app(
    gateway_app: web.Application,
    *,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The admin application for ``gateway_app``, whose store and metrics it reports on. ``registry``
    replaces the gateway app's own for /metrics and the status page (``--workers``: the sum over all worker
    processes). ``clock`` (monotonic seconds) times uptime, the status window and the summary's age."""
    admin = web.Application()
    admin[GATEWAY_KEY] = gateway_app
    admin[PING_TIMEOUT_KEY] = ping_timeout
    admin[REGISTRY_KEY] = registry if registry is not None else gateway_app[METRICS_KEY].registry
    admin[SAMPLER_KEY] = Sampler(admin[REGISTRY_KEY], clock=clock)
    admin[SUMMARY_KEY] = {}
    admin.cleanup_ctx.append(_sampling)
    aiohttp_jinja2.setup(
        admin,
        loader=jinja2.PackageLoader("gateway", "templates/admin"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    admin.router.add_get("/", status_page)
    admin.router.add_get("/status.json", status_json)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    return admin


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    status, body = await readiness(request.app)
    return web.json_response(body, status=status)


async def readiness(admin: web.Application) -> tuple[int, dict[str, str]]:
    """/readyz's answer: its HTTP status and body (what the status page shows as readiness)."""
    gateway = admin[GATEWAY_KEY]
    store_up = gateway[METRICS_KEY].store_up
    store_detail = await _store_problem(gateway, admin[PING_TIMEOUT_KEY])
    store_up.set(0 if store_detail else 1)
    breaker = gateway[BREAKERS_KEY].for_url(gateway[CONFIG_KEY].upstream.base_url)
    state = breaker.state
    probe_in = breaker.retry_after()
    if admin[REGISTRY_KEY] is not gateway[METRICS_KEY].registry:
        # --workers: the breakers that see traffic are the workers'; the summed registry says until when
        # the most recently opened of them stays open.
        elsewhere = _open_until(admin[REGISTRY_KEY], breaker.name) - time.time()
        if elsewhere > 0 and state is not BreakerState.OPEN:
            state, probe_in = BreakerState.OPEN, elsewhere
    body: dict[str, str] = {"status": "ready", "store": "down" if store_detail else "up", "breaker": state.label}
    problems = []
    if store_detail:
        body["status"] = "degraded"
        problems.append(store_detail)
        log.warning("not ready: store down: %s", store_detail)
    if state is BreakerState.OPEN:
        body["status"] = "unavailable"
        detail = f"upstream {breaker.name} circuit breaker open, next probe in {probe_in:.0f}s"
        problems.append(detail)
        log.warning("not ready: %s", detail)
    if problems:
        body["detail"] = "; ".join(problems)
        return 503, body
    return 200, body


def _open_until(registry: CollectorRegistry, upstream: str) -> float:
    """The latest time any process's breaker for ``upstream`` stays open, from ``registry`` (0 if none)."""
    until = 0.0
    for family in registry.collect():
        if family.name == "dmgw_breaker_open_until_seconds":
            for sample in family.samples:
                if sample.labels.get("upstream") == upstream:
                    until = max(until, sample.value)
    return until


async def _store_problem(gateway: web.Application, within: float) -> str | None:
    """None when the store answered a ping in time; otherwise one line saying why not."""
    store = gateway.get(STORE_KEY)
    if store is None:
        return "store not open yet"
    try:
        await asyncio.wait_for(store.ping(), within)
    except TimeoutError:
        return f"store did not answer within {within:g}s"
    except StoreError as exc:
        return str(exc) or exc.__class__.__name__
    return None


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[REGISTRY_KEY]))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _sampling(admin: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(admin[SAMPLER_KEY].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def status(admin: web.Application) -> dict[str, Any]:
    """What the status page shows, as /status.json answers it."""
    _, ready = await readiness(admin)
    sampler = admin[SAMPLER_KEY]
    return {
        "version": __version__,
        "uptime_seconds": round(sampler.clock() - sampler.started),
        "workers": admin[GATEWAY_KEY][CONFIG_KEY].server.workers,
        "readiness": ready,
        **sampler.traffic(),
        **await _summary(admin),
    }


async def _summary(admin: web.Application) -> dict[str, Any]:
    """The store's size and the credentials summary, read again once the last reading is older than
    SUMMARY_MAX_AGE (a reading that failed is not kept)."""
    cached = admin[SUMMARY_KEY]
    now = admin[SAMPLER_KEY].clock()
    if cached and now - cached["at"] < SUMMARY_MAX_AGE:
        return cached["summary"]
    store = admin[GATEWAY_KEY].get(STORE_KEY)
    timeout = admin[PING_TIMEOUT_KEY]
    summary: dict[str, Any] = {}
    failed = False
    try:
        if store is None:
            raise StoreError("store not open yet")
        size = await asyncio.wait_for(store.size(), timeout)
        summary["store"] = {"messages": size.messages, "users": size.users}
    except (TimeoutError, StoreError) as exc:
        failed = True
        summary["store"] = {"error": _reason(exc, timeout)}
    try:
        if store is None:
            raise StoreError("store not open yet")
        entries = await asyncio.wait_for(store.list_credentials(), timeout)
        summary["credentials"] = _credentials(entries, time.time())
    except (TimeoutError, StoreError) as exc:
        failed = True
        summary["credentials"] = {"error": _reason(exc, timeout)}
    if not failed:
        cached.update(at=now, summary=summary)
    return summary


def _reason(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"store did not answer within {timeout:g}s"
    return str(exc) or exc.__class__.__name__


def _credentials(entries: list[Any], now: float) -> dict[str, Any]:
    """Counts, consumer keys and usernames: what ``credentials list`` shows, less every detail."""
    consumers = [entry.key for entry in entries if entry.kind == "consumer"]
    users = [entry for entry in entries if entry.kind == "user"]
    expiring = [u.key for u in users if u.expires_at is not None and u.expires_at < now + EXPIRING_WITHIN]
    return {
        "consumers": len(consumers),
        "tokens": sum(entry.kind == "token" for entry in entries),
        "basic_users": len(users),
        "grants_expiring_within_a_day": len(expiring),
        "consumer_keys": consumers[:MAX_KEYS_SHOWN],
        "expiring_usernames": expiring[:MAX_KEYS_SHOWN],
    }


async def status_json(request: web.Request) -> web.Response:
    response = web.json_response(await status(request.app))
    response.headers["Cache-Control"] = "no-store"
    return response


async def status_page(request: web.Request) -> web.Response:
    context = {"s": await status(request.app), "refresh": REFRESH_SECONDS, "max_keys": MAX_KEYS_SHOWN}
    response = aiohttp_jinja2.render_template("status.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    return response
