"""Validation of message ids as legacy clients send them.

An id is a positive 64-bit integer written in ASCII digits without a leading zero. Anything else is refused
before it can reach upstream: Unicode digits, signs, whitespace, path tricks and values past 2**63-1.
"""

from __future__ import annotations

import re

from gateway.errors import InvalidId, MissingId

MAX_ID = 2**63 - 1
_MAX_ID_TEXT = str(MAX_ID)  # 19 digits
_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


def parse_id(values: list[str]) -> str:
    """Return the one id named by ``values`` (from the path, query and form body together).

    The same id given twice is fine; two different ids, or none, are errors.
    """
    distinct = set(values)
    if not distinct or distinct == {""}:
        raise MissingId("no id given")
    if len(distinct) > 1:
        raise InvalidId("more than one id given")
    (value,) = distinct
    if not is_id(value):
        raise InvalidId(f"malformed id ({len(value)} chars)")
    return value


def is_id(value: str) -> bool:
    """Whether ``value`` is an id as ``parse_id`` accepts one."""
    # Digit strings of one length without leading zeros compare as their numbers do: no int() needed.
    return _ID.fullmatch(value) is not None and (len(value) < len(_MAX_ID_TEXT) or value <= _MAX_ID_TEXT)
