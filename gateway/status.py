"""What the admin status page shows about traffic, read from the same Prometheus registry /metrics exports.

With ``--workers`` that registry is the supervisor's multiprocess view, so every number here is the sum over
all worker processes, exactly as /metrics is. Counters only ever grow, so "since start" is their value now,
and "the last five minutes" is their value now less their value five minutes ago. For that, a ``Sampler``
copies the few counters the page needs (requests by dialect, route and status; upstream attempt durations
as histogram buckets; upstream retries) every ``SAMPLE_INTERVAL`` seconds into a ring buffer holding a little
more than the window. The window's baseline is the newest sample at least ``WINDOW`` seconds old (so the
window is five minutes plus at most one interval); while the gateway is younger than that, it is the first
sample, taken when the admin listener started, and the window is everything since. Nothing is added to the
hot path: requests count themselves in the counters /metrics already had.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry

WINDOW = 300.0
SAMPLE_INTERVAL = 5.0

REQUESTS = "dmgw_requests_total"
BUCKETS = "dmgw_upstream_request_duration_seconds_bucket"
RETRIES = "dmgw_upstream_retries_total"
_KEPT = (REQUESTS, BUCKETS, RETRIES)

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

Key = tuple[str, tuple[tuple[str, str], ...]]
Snapshot = dict[Key, float]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """The current value of every sample the status page uses, keyed by sample name and labels."""
    values: Snapshot = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in _KEPT:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = values.get(key, 0.0) + sample.value
    return values


class Sampler:
    """A ring buffer of (time, snapshot), one every ``interval`` seconds, reaching back ``window`` seconds."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        window: float = WINDOW,
        interval: float = SAMPLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.window = window
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._ring: deque[tuple[float, Snapshot]] = deque(maxlen=int(window / interval) + 2)

    def sample(self) -> None:
        self._ring.append((self.clock(), snapshot(self.registry)))

    async def run(self) -> None:
        """Sample now and then every interval, until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def baseline(self, now: float) -> Snapshot:
        """The newest sample at least a window old, else the oldest kept (nothing before the first sample)."""
        chosen: Snapshot = {}
        for at, values in self._ring:
            if not chosen or at <= now - self.window:
                chosen = values
            else:
                break
        return chosen

    def traffic(self) -> dict[str, Any]:
        """Requests and upstream attempts since start and over the window, as the status page shows them."""
        now = self.clock()
        current = snapshot(self.registry)
        base = self.baseline(now)
        recent = {key: value - base.get(key, 0.0) for key, value in current.items()}
        return {
            "window_seconds": int(self.window),
            "requests": _requests(current, recent),
            "upstream": _upstream(current, recent),
        }


def _classes() -> dict[str, int]:
    return dict.fromkeys(STATUS_CLASSES, 0)


def _status_class(status: str) -> str | None:
    name = f"{status[:1]}xx"
    return name if name in STATUS_CLASSES else None


def _requests(current: Snapshot, recent: Snapshot) -> dict[str, Any]:
    rows: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    totals = {"last_5m": _classes(), "since_start": _classes()}
    for span, values in (("since_start", current), ("last_5m", recent)):
        for (name, labels), value in values.items():
            if name != REQUESTS:
                continue
            label = dict(labels)
            status_class = _status_class(label.get("status", ""))
            if status_class is None:
                continue
            row = rows.setdefault(
                (label.get("dialect", ""), label.get("route", "")), {"last_5m": _classes(), "since_start": _classes()}
            )
            row[span][status_class] += round(value)
            totals[span][status_class] += round(value)
    return {
        "rows": [{"dialect": dialect, "route": route, **spans} for (dialect, route), spans in sorted(rows.items())],
        "total": totals,
    }


def _upstream(current: Snapshot, recent: Snapshot) -> list[dict[str, Any]]:
    """Per upstream endpoint, and "all" first: attempts, retries and the p50 and p99 of attempt durations."""
    endpoints = sorted({dict(labels).get("endpoint", "") for (name, labels) in current if name in (BUCKETS, RETRIES)})
    rows = []
    for endpoint in ["all", *endpoints]:
        row: dict[str, Any] = {"endpoint": endpoint}
        for span, values in (("since_start", current), ("last_5m", recent)):
            buckets: dict[float, float] = {}
            retries = 0.0
            for (name, labels), value in values.items():
                label = dict(labels)
                if endpoint != "all" and label.get("endpoint") != endpoint:
                    continue
                if name == BUCKETS:
                    bound = float(label["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + value
                elif name == RETRIES:
                    retries += value
            attempts = buckets.get(math.inf, 0.0)
            row[span] = {
                "attempts": round(attempts),
                "retries": round(retries),
                "p50_seconds": _rounded(quantile(0.5, buckets.items())),
                "p99_seconds": _rounded(quantile(0.99, buckets.items())),
            }
        rows.append(row)
    return rows


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram from its cumulative buckets (upper bound, count), interpolated linearly
    inside the bucket as Prometheus' histogram_quantile does; None without observations. An answer in the
    +Inf bucket is the highest finite bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
