"""The admin listener: liveness, readiness and Prometheus metrics, on an address of their own.

It is a separate small application served beside the gateway (``dm-gateway serve`` runs both), so none of
these routes exists on the public listener, and an operator can keep them on loopback. Readiness asks the
gateway's store for a PING under a short timeout: a store that cannot answer makes the gateway *degraded*
(it keeps serving from upstream), never down, and the next successful check makes it ready again.
Readiness also reports the upstream host's circuit breaker: while it is open legacy calls fail fast, so the
gateway is *unavailable* (503). Once the breaker's reset time has passed it reads half-open and readiness
is 200 again, so traffic comes back and the next call can probe upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.app import BREAKERS_KEY, CONFIG_KEY, STORE_KEY
from gateway.metrics import METRICS_KEY
from gateway.store.base import StoreError
from gateway.upstream.resilience import BreakerState

log = logging.getLogger("gateway.admin")

GATEWAY_KEY = web.AppKey("gateway", web.Application)
PING_TIMEOUT_KEY = web.AppKey("ping_timeout", float)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)

DEFAULT_PING_TIMEOUT = 2.0


def create_admin_app(
    gateway_app: web.Application,
    *,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The admin application for ``gateway_app``, whose store and metrics it reports on. ``registry``
    replaces the gateway app's own for /metrics (``--workers``: the sum over all worker processes)."""
    admin = web.Application()
    admin[GATEWAY_KEY] = gateway_app
    admin[PING_TIMEOUT_KEY] = ping_timeout
    admin[REGISTRY_KEY] = registry if registry is not None else gateway_app[METRICS_KEY].registry
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    return admin


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    store_up = gateway[METRICS_KEY].store_up
    store_detail = await _store_problem(gateway, request.app[PING_TIMEOUT_KEY])
    store_up.set(0 if store_detail else 1)
    breaker = gateway[BREAKERS_KEY].for_url(gateway[CONFIG_KEY].upstream.base_url)
    state = breaker.state
    probe_in = breaker.retry_after()
    if request.app[REGISTRY_KEY] is not gateway[METRICS_KEY].registry:
        # --workers: the breakers that see traffic are the workers'; the summed registry says until when
        # the most recently opened of them stays open.
        elsewhere = _open_until(request.app[REGISTRY_KEY], breaker.name) - time.time()
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
        return web.json_response(body, status=503)
    return web.json_response(body)


def _open_until(registry: CollectorRegistry, upstream: str) -> float:
    """The latest time any process's breaker for ``upstream`` stays open, from ``registry`` (0 if none)."""
    until = 0.0
    for family in registry.collect():
        if family.name == "dmgw_breaker_open_until_seconds":
            for sample in family.samples:
                if sample.labels.get("upstream") == upstream:
                    until = max(until, sample.value)
    return until


async def _store_problem(gateway: web.Application, timeout: float) -> str | None:
    """None when the store answered a ping in time; otherwise one line saying why not."""
    store = gateway.get(STORE_KEY)
    if store is None:
        return "store not open yet"
    try:
        await asyncio.wait_for(store.ping(), timeout)
    except TimeoutError:
        return f"store did not answer within {timeout:g}s"
    except StoreError as exc:
        return str(exc) or exc.__class__.__name__
    return None


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[REGISTRY_KEY]))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
