"""Who is calling: the emulator's stand-in for X's credential checks.

Each way of authenticating is one small function from the ``Authorization`` header to a ``Caller``;
today only OAuth 2.0 bearer tokens exist, and an OAuth 1.0a verifier would sit beside ``bearer_caller``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user and the credential they used; quotas are kept per credential."""

    user_id: str
    credential: str


CALLER_KEY = web.RequestKey("emulator_caller", Caller)


def bearer_caller(
    authorization: str | None, tokens: Mapping[str, str], users: Mapping[str, object]
) -> Caller | None:
    """The caller a ``Bearer`` header names, or None for a missing, unknown or orphaned token.

    A token whose user is no longer in the data set is refused too, as X refuses tokens of
    deleted accounts.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or token not in tokens:
        return None
    user_id = tokens[token]
    return Caller(user_id, token) if user_id in users else None
