"""Golden-file comparison. ``DMGW_UPDATE_GOLDEN=1 pytest`` rewrites the files after a deliberate change;
review the diff before committing it. CI never rewrites."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, body: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("DMGW_UPDATE_GOLDEN") == "1" and os.environ.get("CI") != "true":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    assert path.exists(), f"no golden file {name}; create it with DMGW_UPDATE_GOLDEN=1 and review it"
    expected = path.read_bytes()
    assert body == expected, f"{name} differs from its golden file:\n{body.decode()}\n!=\n{expected.decode()}"


#: The string twins Twitter v1 sent beside each numeric id, which the /1 and /api JSON carry where the
#: StatusNet example (seed 003) has none: a message's, and a user's.
MESSAGE_ID_TWINS = {"id": "id_str", "sender_id": "sender_id_str", "recipient_id": "recipient_id_str"}
USER_ID_TWINS = {"id": "id_str"}


def without_id_twins(tree: dict[str, Any], twins: dict[str, str]) -> dict[str, Any]:
    """The object without its string id twins, each checked to come right after its id and to spell it."""
    keys = list(tree)
    for number, twin in twins.items():
        assert keys[keys.index(number) + 1] == twin, (number, keys)
        assert isinstance(tree[twin], str) and tree[twin] == str(tree[number]), twin
    return {key: value for key, value in tree.items() if key not in twins.values()}


def without_message_id_twins(message: dict[str, Any]) -> dict[str, Any]:
    """A /1 or /api JSON message without the id twins of the message and of its sender and recipient."""
    stripped = without_id_twins(message, MESSAGE_ID_TWINS)
    for side in ("sender", "recipient"):
        stripped[side] = without_id_twins(stripped[side], USER_ID_TWINS)
    return stripped
