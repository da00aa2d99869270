"""brat_sessions: session tracking for coding agents, stored in grite's git log.

The public API is `Tracker` (see `brat_sessions.worker.api` and docs/api.md):

    from brat_sessions import Tracker

    tracker = Tracker()
    with tracker.session_scope("t-20250114-3a2c", engine="python") as s:
        s.log("working\\n")

Modules load lazily so that `brat --help` stays fast; type checkers see the names
through the imports below.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

    from .errors import BadInput, BratError, Conflict, EnvironmentProblem, Fenced, NotFound, UnwritableBlock
    from .issues.projection import Issue
    from .kinds import ExitReason, LiveState, Priority, Role, SessionType, State, StopReason, TaskStatus
    from .sessions.model import Session
    from .sessions.projection import BlockRecord
    from .worker.api import Tracker
    from .worker.scope import SessionHandle
    from .worker.stopping import StopReport

__version__ = "0.1.0"
__all__ = [
    "BadInput",
    "BlockRecord",
    "BratError",
    "Conflict",
    "EnvironmentProblem",
    "ExitReason",
    "Fenced",
    "Issue",
    "LiveState",
    "NotFound",
    "Priority",
    "Role",
    "Session",
    "SessionHandle",
    "SessionType",
    "State",
    "StopReason",
    "StopReport",
    "TaskStatus",
    "Tracker",
    "UnwritableBlock",
]

_WHERE = {
    "Tracker": "worker.api",
    "StopReport": "worker.stopping",
    "SessionHandle": "worker.scope",
    "Session": "sessions.model",
    "BlockRecord": "sessions.projection",
    "Issue": "issues.projection",
    "BadInput": "errors",
    "BratError": "errors",
    "Conflict": "errors",
    "EnvironmentProblem": "errors",
    "Fenced": "errors",
    "UnwritableBlock": "errors",
    "NotFound": "errors",
    "ExitReason": "kinds",
    "Priority": "kinds",
    "Role": "kinds",
    "SessionType": "kinds",
    "LiveState": "kinds",
    "State": "kinds",
    "StopReason": "kinds",
    "TaskStatus": "kinds",
}


def python_command(module: str) -> list[str]:
    """The command that runs `module` of this very copy of brat_sessions in a new Python
    (as `python -m` would, but never whichever copy that interpreter finds first, nor a
    module of the working directory): arguments follow it."""
    import os
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"import sys, runpy; sys.path.insert(0, {here!r}); "
    code += f"runpy.run_module({module!r}, run_name='__main__')"
    return [sys.executable, "-P", "-c", code]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
