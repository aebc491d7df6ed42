"""How upstream calls survive a bad upstream: retries within a budget, and a circuit breaker per host.

``RetryPolicy`` says whether and when a failed attempt is tried again. Only idempotent methods (GET,
DELETE) are retried, never a send; only on failures that may pass (a timeout, a refused or dropped
connection, 502/503/504, a 429 whose ``x-rate-limit-reset`` comes within the budget); with a jittered
exponential backoff; and only while the legacy call's budget lasts. The budget starts once per legacy call
(``retry_budget``, a context manager around it), so the lookups and the delete of one destroy share it.

``CircuitBreaker`` counts consecutive failures of one upstream host (timeouts, connection errors, 5xx; a
4xx is an answer, so it counts as a success). At ``failures`` it opens: calls fail at once with
``BreakerOpen`` instead of waiting for a host that is down. After ``reset`` seconds the next call is let
through as the one probe (half-open; others still fail fast meanwhile): its success closes the breaker, its
failure opens it for another ``reset``. ``Breakers`` holds one breaker per host, shared by the legacy
client and the v2 pass-through.

The breaker is shared by every caller, so no one caller may open it for the others: of a run of consecutive
failures it takes at most ``per_caller`` from any one caller (a ``Principal.identity``, or the pass-through's
name for its caller); a caller's failures past that are its own and go uncounted. Upstream in trouble fails
many callers, and their failures still open the breaker. The count per caller lives only as long as the run
of failures: a success, or the breaker opening, forgets it, so it never holds more than ``failures`` names.

Everything observable goes to an ``UpstreamObserver`` (``gateway.metrics.Metrics`` in the app).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from yarl import URL

from gateway.errors import UpstreamUnavailable

#: The methods a retry can never do twice: deleting a deleted event, or reading again, changes nothing.
IDEMPOTENT_METHODS = frozenset({"GET", "DELETE"})
#: Statuses of an upstream that is overloaded or in trouble right now, and may not be a moment later.
RETRY_STATUSES = frozenset({502, 503, 504})
RATE_LIMITED = 429


class BreakerState(IntEnum):
    """The values of the ``dmgw_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


#: The state every call checks for.
_CLOSED = BreakerState.CLOSED


class BreakerOpen(UpstreamUnavailable):
    """The upstream host's breaker is open: the call was not sent. Rendered as the over-capacity error."""


class AttemptFailed(UpstreamUnavailable):
    """An attempt that got no answer: ``reason`` is ``timeout`` or ``connection_error``."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class UpstreamObserver(Protocol):
    def upstream_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One attempt ended: ``outcome`` is ok, client_error, server_error, timeout, connection_error,
        too_large or breaker_open."""

    def upstream_retry(self, endpoint: str, reason: str) -> None:
        """A failed attempt is about to be tried again; ``reason`` is timeout, connection_error or a status."""

    def breaker_changed(
        self, upstream: str, state: BreakerState, *, initial: bool = False, probe_in: float = 0.0
    ) -> None:
        """The breaker of ``upstream`` (host:port) is now in ``state``; ``initial`` when it was just made;
        ``probe_in``, for an open breaker, the seconds until it lets a probe through."""


class NullObserver:
    def upstream_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        pass

    def upstream_retry(self, endpoint: str, reason: str) -> None:
        pass

    def breaker_changed(
        self, upstream: str, state: BreakerState, *, initial: bool = False, probe_in: float = 0.0
    ) -> None:
        pass


# --- retries -------------------------------------------------------------------------------------------

# The time by which retries of the current legacy call must be done, on the monotonic clock (the clock
# asyncio's event loop keeps, read straight from ``time``).
_DEADLINE: ContextVar[float | None] = ContextVar("dmgw_retry_deadline", default=None)


class retry_budget:  # noqa: N801 - a context manager used as a function call: ``with retry_budget(10):``
    """Everything upstream inside this block shares one retry budget of ``seconds`` from its start.

    An inner block keeps the outer deadline, so a budget cannot be extended by nesting.
    """

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        if _DEADLINE.get() is None:
            self._token = _DEADLINE.set(time.monotonic() + self._seconds)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 2
    budget: float = 10.0
    backoff: float = 0.1

    def deadline(self) -> float:
        """The deadline of the enclosing legacy call, or one starting now for a call made outside one."""
        deadline = _DEADLINE.get()
        return deadline if deadline is not None else time.monotonic() + self.budget

    def may_retry(self, method: str, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (0 for the first) may be followed by another."""
        return method in IDEMPOTENT_METHODS and attempt < self.retries

    def backoff_delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: anywhere between 0 and ``backoff * 2**attempt``, so clients that failed together
        do not come back together."""
        return rand() * self.backoff * (2**attempt)


def rate_limit_wait(reset: int | None, now: float | None = None) -> float | None:
    """Seconds until a v2 rate-limit window resets (``x-rate-limit-reset``, epoch seconds); 0 when it
    already has; None when v2 did not say."""
    if reset is None:
        return None
    return max(0.0, reset - (time.time() if now is None else now))


# --- the circuit breaker -------------------------------------------------------------------------------


class CircuitBreaker:
    """One upstream host's breaker. Not thread-safe; it lives on one event loop, like the app."""

    def __init__(
        self,
        name: str,
        failures: int,
        reset: float,
        *,
        per_caller: int = 0,
        clock: Callable[[], float] = time.monotonic,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self.name = name
        self.failures = failures
        self.reset = reset
        #: The most failures of one run the breaker takes from any one caller; 0 for no limit.
        self.per_caller = per_caller
        self._clock = clock
        self._observer = observer or NullObserver()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._by_caller: dict[str, int] = {}  # failures counted in the current run, by caller
        self._opened_at = 0.0
        self._probing = False
        self._observer.breaker_changed(name, self._state, initial=True)

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    @property
    def state(self) -> BreakerState:
        """The state as a caller would find it now: an open breaker whose reset time has passed lets the next
        call through as a probe, so it reads half-open (readiness must not wait for traffic to probe)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Admit one call, or raise ``BreakerOpen``. True when the call is the half-open probe: pass that to
        ``record``, so the probe's result decides the breaker's state."""
        if self._state is _CLOSED or not self.enabled:
            return False
        if self._state is BreakerState.OPEN and self.retry_after() == 0:
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        raise BreakerOpen(f"circuit breaker for {self.name} is {self.state.label}")

    def record(self, ok: bool | None, probe: bool, caller: str | None = None) -> None:
        """The end of an admitted call: ``ok`` True (an answer), False (a failure), None (neither, e.g. the
        caller went away before upstream answered). ``caller`` names who made the call, for the per-caller
        limit; None counts without one."""
        if not self.enabled:
            return
        if probe:
            self._probing = False
            if ok is True:
                self._forget()
                self._move(BreakerState.CLOSED)
            elif ok is False:
                self._open()
            return
        if self._state is not _CLOSED:
            return  # a call admitted before the breaker opened: only the probe decides from here
        if ok is True:
            if self._consecutive:
                self._forget()
        elif ok is False:
            if caller is not None and self.per_caller:
                taken = self._by_caller.get(caller, 0)
                if taken >= self.per_caller:
                    return  # this caller has had its share of the run; the rest is its own trouble
                self._by_caller[caller] = taken + 1
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open()

    def _forget(self) -> None:
        self._consecutive = 0
        self._by_caller.clear()

    def _open(self) -> None:
        self._forget()
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            probe_in = self.reset if state is BreakerState.OPEN else 0.0
            self._observer.breaker_changed(self.name, state, probe_in=probe_in)


def host_key(url: str | URL) -> str:
    """``host:port`` of an upstream URL: the name a breaker goes by."""
    parsed = URL(url) if isinstance(url, str) else url
    return f"{parsed.host}:{parsed.port}"


class Breakers:
    """One ``CircuitBreaker`` per upstream host, made on first use."""

    def __init__(
        self,
        failures: int,
        reset: float,
        *,
        per_caller: int = 0,
        observer: UpstreamObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = failures
        self._reset = reset
        self._per_caller = per_caller
        self._observer = observer
        self._clock = clock
        self._by_host: dict[str, CircuitBreaker] = {}

    def for_url(self, url: str | URL) -> CircuitBreaker:
        key = host_key(url)
        breaker = self._by_host.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                key,
                self._failures,
                self._reset,
                per_caller=self._per_caller,
                clock=self._clock,
                observer=self._observer,
            )
            self._by_host[key] = breaker
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._by_host.values()))
