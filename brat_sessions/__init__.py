"""brat_sessions: session tracking for coding agents, stored in grite's git log.

The public API is `Tracker` (see `brat_sessions.worker.api`). Modules load lazily so
that `brat --help` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["BratError", "Conflict", "Fenced", "NotFound", "Session", "SessionHandle", "Tracker"]


def __getattr__(name: str) -> Any:
    if name in ("Tracker", "SessionHandle"):
        from .worker import api

        return getattr(api, name)
    if name == "Session":
        from .sessions.model import Session

        return Session
    if name in ("BratError", "Fenced", "NotFound", "Conflict"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(name)
