"""Golden-file comparison. ``DMGW_UPDATE_GOLDEN=1 pytest`` rewrites the files after a deliberate change;
review the diff before committing it. CI never rewrites."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, body: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("DMGW_UPDATE_GOLDEN") == "1" and os.environ.get("CI") != "true":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    assert path.exists(), f"no golden file {name}; create it with DMGW_UPDATE_GOLDEN=1 and review it"
    expected = path.read_bytes()
    assert body == expected, f"{name} differs from its golden file:\n{body.decode()}\n!=\n{expected.decode()}"
