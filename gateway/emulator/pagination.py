"""Cursor pagination over a newest-first list, with opaque tokens like v2's.

A token remembers the sort key of the item at a page edge rather than an offset, so deleting a
message while a client pages through its inbox neither skips nor repeats anything.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import orjson

T = TypeVar("T")
Key = tuple[str, int]
Direction = Literal["next", "prev"]
Cursor = tuple[Direction, Key]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_token: str | None
    previous_token: str | None


def paginate(items: Sequence[T], key: Callable[[T], Key], size: int, cursor: Cursor | None) -> Page[T]:
    """One page of ``items``, sorted by ``key`` largest first: the first page, or where ``cursor`` points."""
    keys = [key(item) for item in items]
    if cursor is None:
        start, end = 0, size
    else:
        direction, anchor = cursor
        if direction == "next":
            start = sum(1 for item_key in keys if item_key >= anchor)
            end = start + size
        else:
            end = sum(1 for item_key in keys if item_key > anchor)
            start = max(end - size, 0)
    page = items[start:end]
    if not page:
        return Page(page, None, None)
    end = start + len(page)
    return Page(
        page,
        next_token=encode_token("next", keys[end - 1]) if end < len(items) else None,
        previous_token=encode_token("prev", keys[start]) if start > 0 else None,
    )


def encode_token(direction: Direction, anchor: Key) -> str:
    raw = orjson.dumps([direction, anchor[0], str(anchor[1])])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> Cursor:
    """The cursor inside a token from ``encode_token``; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        direction, created_at, event_id = orjson.loads(raw)
    except (ValueError, TypeError) as error:  # bad base64 and bad JSON are both ValueErrors
        raise ValueError("malformed pagination token") from error
    if direction not in ("next", "prev") or not isinstance(created_at, str):
        raise ValueError("malformed pagination token")
    if not isinstance(event_id, str) or not event_id.isascii() or not event_id.isdigit():
        raise ValueError("malformed pagination token")
    return direction, (created_at, int(event_id))
