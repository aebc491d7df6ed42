"""The admin listener: liveness, readiness and Prometheus metrics, on an address of their own.

It is a separate small application served beside the gateway (``dm-gateway serve`` runs both), so none of
these routes exists on the public listener, and an operator can keep them on loopback. Readiness asks the
gateway's store for a PING under a short timeout: a store that cannot answer makes the gateway *degraded*
(it keeps serving from upstream), never down, and the next successful check makes it ready again.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.app import STORE_KEY
from gateway.metrics import METRICS_KEY
from gateway.store.base import StoreError

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
    detail = await _store_problem(gateway, request.app[PING_TIMEOUT_KEY])
    if detail is None:
        store_up.set(1)
        return web.json_response({"status": "ready", "store": "up"})
    store_up.set(0)
    log.warning("not ready: store down: %s", detail)
    return web.json_response({"status": "degraded", "store": "down", "detail": detail}, status=503)


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
