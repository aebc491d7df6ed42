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

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.app import BREAKERS_KEY, CONFIG_KEY, STORE_KEY
from gateway.metrics import METRICS_KEY
from gateway.store.base import StoreError
from gateway.upstream.resilience import BreakerState

log = logging.getLogger("gateway.admin")

GATEWAY_KEY = web.AppKey("gateway", web.Application)
PING_TIMEOUT_KEY = web.AppKey("ping_timeout", float)

DEFAULT_PING_TIMEOUT = 2.0


def create_admin_app(gateway_app: web.Application, *, ping_timeout: float = DEFAULT_PING_TIMEOUT) -> web.Application:
    """The admin application for ``gateway_app``, whose store and metrics it reports on."""
    admin = web.Application()
    admin[GATEWAY_KEY] = gateway_app
    admin[PING_TIMEOUT_KEY] = ping_timeout
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
    body: dict[str, str] = {"status": "ready", "store": "down" if store_detail else "up", "breaker": state.label}
    problems = []
    if store_detail:
        body["status"] = "degraded"
        problems.append(store_detail)
        log.warning("not ready: store down: %s", store_detail)
    if state is BreakerState.OPEN:
        body["status"] = "unavailable"
        detail = f"upstream {breaker.name} circuit breaker open, next probe in {breaker.retry_after():.0f}s"
        problems.append(detail)
        log.warning("not ready: %s", detail)
    if problems:
        body["detail"] = "; ".join(problems)
        return web.json_response(body, status=503)
    return web.json_response(body)


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
    registry = request.app[GATEWAY_KEY][METRICS_KEY].registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
