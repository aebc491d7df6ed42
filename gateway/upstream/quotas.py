"""The quota v2 last reported to each caller on each endpoint: what ``rate_limit_status`` answers.

v2 sends ``x-rate-limit-*`` with every answer, per user and endpoint. The client notes the latest for each
caller (``Principal.identity``) and endpoint template; the most recent ``size`` pairs are kept, so a flood
of callers costs bounded memory. Each process keeps its own.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.model import RateLimit

#: How many (caller, endpoint) quotas are kept.
QUOTA_MEMORY_SIZE = 50_000

#: A fifteen-minute window, v2's for every endpoint below but the send.
WINDOW = 900

#: Each endpoint the gateway calls with v2's per-user limit and its window in seconds: what a caller is
#: told until v2 has reported their quota there.
V2_LIMITS: dict[str, tuple[int, int]] = {
    "GET /2/dm_events": (300, WINDOW),
    "GET /2/dm_events/:id": (300, WINDOW),
    "DELETE /2/dm_events/:id": (300, WINDOW),
    "POST /2/dm_conversations/with/:id/messages": (1000, 86_400),
    "GET /2/users": (900, WINDOW),
    "GET /2/users/by": (900, WINDOW),
    "GET /2/users/me": (900, WINDOW),
    "GET /2/users/:id": (900, WINDOW),
    "GET /2/users/by/username/:username": (900, WINDOW),
}


class Quotas:
    def __init__(self, size: int = QUOTA_MEMORY_SIZE) -> None:
        self._size = size
        self._latest: OrderedDict[tuple[str, str], RateLimit] = OrderedDict()

    def record(self, caller: str, endpoint: str, rate_limit: RateLimit) -> None:
        key = (caller, endpoint)
        latest = self._latest
        latest[key] = rate_limit
        latest.move_to_end(key)
        if len(latest) > self._size:
            latest.popitem(last=False)

    def current(self, caller: str, endpoint: str, now: float) -> RateLimit:
        """The caller's quota on ``endpoint`` now: as v2 last reported it while its window lasts; once it has
        reset, or before v2 has said anything, the whole of v2's limit for a window starting now."""
        reported = self._latest.get((caller, endpoint))
        if reported is not None and reported.reset > now:
            return reported
        limit, window = V2_LIMITS.get(endpoint, (reported.limit if reported else 0, WINDOW))
        if reported is not None:
            limit = reported.limit
        return RateLimit(limit, limit, int(now) + window)

    def __len__(self) -> int:
        return len(self._latest)
