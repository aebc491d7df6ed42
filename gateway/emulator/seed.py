"""Reading seed files: the users, DM events and credentials an emulator starts from.

The default seed ships inside the package (``seed.json``) so tests, demos and benchmarks agree on the
same fixtures; ``--seed FILE`` swaps in another file of the same shape. Every section is optional:

- ``users`` and ``events``: v2 objects, checked for the keys handlers rely on by ``EmulatorState``;
- ``media``: v2 media objects (``media_key`` ``{type}_{media id}``), each with the ``owner_id`` who uploaded
  it, which only that user may attach to a message;
- ``tokens``: bearer token to user id, never expiring; ``conversations``: group id to member ids;
- ``rate_limits``: ``"GET /2/dm_events": {"limit": 300, "window": 900}``, checked by ``Limit``;
- ``oauth1``: consumers and OAuth 1.0a tokens, shape and checks in ``OAuth1Keys.from_seed``;
- ``oauth2``: clients and refreshable grants, shape and checks in ``GrantBook.from_seed``.

Loading only parses; a malformed section raises ``ValueError`` when a state is built from the seed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson


def default_seed() -> dict[str, Any]:
    """A fresh copy of the packaged seed; callers may change it freely."""
    return _parse(resources.files("gateway.emulator").joinpath("seed.json").read_bytes(), "default seed")


def load_seed(path: str | Path) -> dict[str, Any]:
    """The seed in the JSON file at ``path``."""
    return _parse(Path(path).read_bytes(), str(path))


def _parse(raw: bytes, origin: str) -> dict[str, Any]:
    seed = orjson.loads(raw)
    if not isinstance(seed, dict):
        raise ValueError(f"{origin}: a seed must be a JSON object")
    return seed
