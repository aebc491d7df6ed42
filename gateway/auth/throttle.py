"""Failed sign-ins, counted per client address and per username, so that guessing passwords (or just
making the gateway hash them) stops after a few tries.

``LoginThrottle`` knows nothing of HTTP or of how a password is checked: any sign-in that checks a
password (HTTP Basic today, xAuth later) asks ``refused_for`` first, calls ``charge`` just before the
costly check and ``forgive`` when the password was right. Charging before the check, not after, means
that a caller who sends many wrong passwords at once cannot start more checks than the limit allows.

The rule, for ``limit`` failures within ``window`` seconds:

- an address with ``limit`` failures (for any usernames) is refused, for every username, until the window
  that began with its first failure has passed: one source cannot make the gateway hash more than
  ``limit`` passwords a window by changing the username;
- a username with ``limit`` failures (from any addresses) is refused to every address that has itself
  failed in its current window; an address without a failure is still heard, so the user's own right
  password from elsewhere works while someone else floods their name, and each other address gets one
  wrong guess at that name before it too is refused.

Counts live in this process only (each worker and each replica keeps its own), in two tables of at most
``max_entries`` keys each; the least recently charged key goes first when a table is full.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

#: Keys kept per table (addresses, usernames): each entry is a few hundred bytes at most.
MAX_ENTRIES = 16384
#: A username is counted by at most this many of its characters.
USERNAME_KEY_CHARS = 128


class _Counts:
    """Failures per key in a fixed window that opens with the key's first failure; bounded, LRU."""

    def __init__(self, window: float, max_entries: int) -> None:
        self._window = window
        self._max_entries = max_entries
        self._entries: OrderedDict[str, list[float]] = OrderedDict()  # key -> [window start, failures]

    def count(self, key: str, now: float) -> tuple[float, float]:
        """The failures of ``key`` in its current window, and when that window ends."""
        entry = self._entries.get(key)
        if entry is None or entry[0] + self._window <= now:
            return 0, now
        return entry[1], entry[0] + self._window

    def add(self, key: str, now: float, amount: float) -> None:
        entry = self._entries.get(key)
        if entry is None or entry[0] + self._window <= now:
            if amount <= 0:
                return
            entry = self._entries[key] = [now, 0]
        entry[1] = max(0, entry[1] + amount)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class LoginThrottle:
    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._addresses = _Counts(window, max_entries)
        self._usernames = _Counts(window, max_entries)

    def refused_for(self, address: str, username: str) -> float:
        """Seconds until ``address`` may try ``username`` again; 0 when it may now."""
        now = self._clock()
        failures, until = self._addresses.count(address, now)
        if failures >= self.limit:
            return until - now
        name_failures, name_until = self._usernames.count(_username_key(username), now)
        if name_failures >= self.limit and failures > 0:
            return min(until, name_until) - now
        return 0.0

    def charge(self, address: str, username: str) -> bool:
        """Count a failure now, before the check; ``forgive`` takes it back if the password was right.
        True when this one brought the address to the limit (worth a line in the log)."""
        now = self._clock()
        self._addresses.add(address, now, 1)
        self._usernames.add(_username_key(username), now, 1)
        return self._addresses.count(address, now)[0] == self.limit

    def forgive(self, address: str, username: str) -> None:
        now = self._clock()
        self._addresses.add(address, now, -1)
        self._usernames.add(_username_key(username), now, -1)

    @property
    def sizes(self) -> tuple[int, int]:
        """How many addresses and usernames are counted (for tests and debugging)."""
        return len(self._addresses), len(self._usernames)


def _username_key(username: str) -> str:
    # Case-folded, so that "Alice" and "alice" share a count; cut short, so that long names cost no memory.
    return username.casefold()[:USERNAME_KEY_CHARS]


def address_key(address: str | None) -> str:
    """The key a client address is counted under: an IPv4 address as it is, an IPv6 address by its /64
    (one subscriber usually holds a whole /64), anything else (a Unix socket) as one shared key."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
