"""brat's ids: `<prefix>-YYYYMMDD-<4 hex>`, checked against the repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

from ..errors import Conflict


def new_id(prefix: str, ts_ms: int, exists: Callable[[str], bool]) -> str:
    """A fresh id for the UTC day of `ts_ms` that `exists` does not know."""
    day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y%m%d")
    for _ in range(64):
        candidate = f"{prefix}-{day}-{os.urandom(2).hex()}"
        if not exists(candidate):
            return candidate
    start = int.from_bytes(os.urandom(2), "big")  # a crowded day: walk the whole space once
    for step in range(65536):
        candidate = f"{prefix}-{day}-{(start + step) % 65536:04x}"
        if not exists(candidate):
            return candidate
    raise Conflict(f"no free {prefix}- id left for {day}")
