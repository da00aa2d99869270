"""The one place that reads the wall clock (freezegun patches it in tests)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


def pause_after_lost_race(attempt: int) -> None:
    """A short random pause before trying a compare-and-swap again (growing, at most 50 ms)."""
    import random

    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
