"""Fixed-window request quotas per (credential, endpoint), reported the way v2 reports them.

X counts each endpoint separately for each access token, so a client that hammers one endpoint can
still use the others; the emulator keeps the same bookkeeping so the gateway's back-off logic is
exercised against realistic headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FIFTEEN_MINUTES = 900.0


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` requests in each window of ``window`` seconds."""

    limit: int
    window: float = FIFTEEN_MINUTES

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError("limit must be a non-negative integer")
        if isinstance(self.window, bool) or not isinstance(self.window, int | float) or not self.window > 0:
            raise ValueError("window must be a positive number of seconds")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limit:
        """A limit from ``{"limit": 300, "window": 900}`` (window optional); ``ValueError`` if malformed."""
        if "limit" not in data:
            raise ValueError('a rate limit needs a "limit"')
        return cls(data["limit"], data.get("window", FIFTEEN_MINUTES))

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "window": self.window}


DEFAULT_LIMITS = {
    "DELETE /2/dm_events/:id": Limit(300),
    "GET /2/dm_events/:id": Limit(300),
    "GET /2/dm_events": Limit(300),
    "GET /2/users": Limit(900),
    "GET /2/users/me": Limit(900),
    "GET /2/users/:id": Limit(900),
    "GET /2/users/by": Limit(900),
    "GET /2/users/by/username/:username": Limit(900),
    "POST /2/dm_conversations/with/:participant_id/messages": Limit(1000, 86_400),
}


@dataclass(frozen=True, slots=True)
class Quota:
    """Where one request left its window: what the ``x-rate-limit-*`` headers say."""

    limit: int
    remaining: int
    reset: int
    exceeded: bool

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


@dataclass(slots=True)
class _Window:
    ends_at: float
    used: int = 0


class RateLimiter:
    """Counts requests; endpoints without a configured limit are not limited at all."""

    def __init__(self, limits: Mapping[str, Limit], clock: Callable[[], float]) -> None:
        self.limits = dict(limits)
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def configure(self, endpoint: str, limit: Limit) -> None:
        """Change one endpoint's limit; its windows start afresh so the new limit applies at once."""
        self.limits[endpoint] = limit
        self._windows = {key: window for key, window in self._windows.items() if key[1] != endpoint}

    def clear(self) -> None:
        self._windows.clear()

    def hit(self, credential: str, endpoint: str) -> Quota | None:
        """Count one request and say whether it fits; None when the endpoint has no limit."""
        limit = self.limits.get(endpoint)
        if limit is None:
            return None
        now = self._clock()
        window = self._windows.get((credential, endpoint))
        if window is None or now >= window.ends_at:
            window = self._windows[credential, endpoint] = _Window(now + limit.window)
        window.used += 1
        return Quota(
            limit=limit.limit,
            remaining=max(limit.limit - window.used, 0),
            reset=math.ceil(window.ends_at),
            exceeded=window.used > limit.limit,
        )
