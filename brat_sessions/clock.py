"""The one place that reads the wall clock (freezegun patches it in tests)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)
