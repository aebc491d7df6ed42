"""Prometheus metrics, one registry per gateway application (tests build many apps in one process).

Labels are small closed sets: a dialect name, a route's canonical path (never the requested path, which
carries ids), a status code, a store operation name. Never a credential, a message id or DM text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

# The label for requests no route matched: the requested path itself would be unbounded (and may carry ids).
UNMATCHED_ROUTE = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dmgw_requests",
            "Requests answered by the gateway listener.",
            ("dialect", "route", "status"),
            registry=self.registry,
        )
        self.store_errors = Counter(
            "dmgw_store_errors",
            "Store calls that failed and were treated as a miss while serving from upstream.",
            ("operation",),
            registry=self.registry,
        )
        self.store_up = Gauge(
            "dmgw_store_up",
            "1 when the store answered the last readiness check, 0 when it did not.",
            registry=self.registry,
            # With --workers, the value last set by any live process (the supervisor runs /readyz).
            multiprocess_mode="livemostrecent",
        )

    def store_error(self, operation: str) -> None:
        """The callback DMService calls for every StoreError it swallows."""
        self.store_errors.labels(operation=operation).inc()


METRICS_KEY = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE
