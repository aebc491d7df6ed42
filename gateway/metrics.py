"""Prometheus metrics, one registry per gateway application (tests build many apps in one process).

Labels are small closed sets: a dialect name, a route's canonical path (never the requested path, which
carries ids), a status code, a store operation name, an upstream endpoint's template
(``DELETE /2/dm_events/:id``), an outcome or retry reason, an upstream ``host:port``. Never a credential, a
message id or DM text.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.upstream.resilience import BreakerState

# The label for requests no route matched: the requested path itself would be unbounded (and may carry ids).
UNMATCHED_ROUTE = "unmatched"


class _Children:
    """The children of a labelled metric, kept by their label values: ``labels()`` checks and converts its
    arguments and takes a lock on every call, where a dict lookup does once the child exists (what that
    saves a request is in docs/PERFORMANCE.md). The label sets are small and closed, and no child is ever
    removed from these metrics, so a kept child is always the one the registry exports."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


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

        self.store_lookups = Counter(
            "dmgw_store_lookups",
            "Messages looked up in the store before asking upstream, by result (a failed lookup is a miss).",
            ("result",),
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "dmgw_upstream_request_duration_seconds",
            "Seconds each upstream attempt took, by endpoint template and outcome "
            "(ok, client_error, server_error, timeout, connection_error, too_large, breaker_open).",
            ("endpoint", "outcome"),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "dmgw_upstream_retries",
            "Upstream attempts tried again, by endpoint template and reason (timeout, connection_error, status).",
            ("endpoint", "reason"),
            registry=self.registry,
        )
        # With --workers, the most open of the workers' breakers.
        self.breaker_state = Gauge(
            "dmgw_breaker_state",
            "Circuit breaker of each upstream host: 0 closed, 1 half-open, 2 open.",
            ("upstream",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.breaker_open_until = Gauge(
            "dmgw_breaker_open_until_seconds",
            "Unix time at which an open circuit breaker lets a probe through; 0 when it is not open.",
            ("upstream",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "dmgw_breaker_transitions",
            "Circuit breaker state changes, by upstream host and the state entered.",
            ("upstream", "state"),
            registry=self.registry,
        )
        # The metrics every request counts itself in.
        self._requests = _Children(self.requests)
        self._store_lookups = _Children(self.store_lookups)
        self._upstream_duration = _Children(self.upstream_duration)

    def request_answered(self, dialect: str, route: str, status: int) -> None:
        """One request answered by the listener, by what the client got."""
        self._requests(dialect, route, str(status)).inc()

    def store_error(self, operation: str) -> None:
        """The callback DMService calls for every StoreError it swallows."""
        self.store_errors.labels(operation=operation).inc()

    def store_lookup(self, hit: bool) -> None:
        """The callback DMService calls for every message it looks up in the store."""
        self._store_lookups("hit" if hit else "miss").inc()

    # gateway.upstream.resilience.UpstreamObserver
    def upstream_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._upstream_duration(endpoint, outcome).observe(seconds)

    def upstream_retry(self, endpoint: str, reason: str) -> None:
        self.upstream_retries.labels(endpoint=endpoint, reason=reason).inc()

    def breaker_changed(
        self, upstream: str, state: BreakerState, *, initial: bool = False, probe_in: float = 0.0
    ) -> None:
        self.breaker_state.labels(upstream=upstream).set(int(state))
        until = time.time() + probe_in if state is BreakerState.OPEN else 0.0
        self.breaker_open_until.labels(upstream=upstream).set(until)
        if not initial:
            self.breaker_transitions.labels(upstream=upstream, state=state.label).inc()


def route_label(request: web.Request) -> str:
    """The route a request matched, by its canonical path (the template, never the ids in it)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE
