"""`Tracker.session_scope`: a block of Python run as a session, and the handle it gets."""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import Fenced
from ..kinds import Role, SessionType, State
from ..sessions.model import Session
from .heartbeat import HeartbeatKeeper

if TYPE_CHECKING:
    from ..issues.projection import Issue
    from .api import Tracker


class SessionHandle:
    """What a `with tracker.session_scope(...)` block gets: its session, its log, and a
    way to move it along. Every call raises `Fenced` once the session was ended elsewhere."""

    def __init__(self, tracker: Tracker, session: Session) -> None:
        self.tracker = tracker
        self.session_id = session.session_id
        self.task_id = session.task_id
        self.files = tracker.files(session.session_id)
        self.fenced: Fenced | None = None
        self._thread = threading.current_thread()

    def log(self, text: str | bytes) -> None:
        """Append to the session's output log (stored in git at exit)."""
        self.raise_if_fenced()
        self.files.append_log(text.encode() if isinstance(text, str) else text)

    def transition(self, state: State) -> Session:
        """Move the session along the state machine (see `Tracker.transition`)."""
        self.raise_if_fenced()
        return self.tracker.transition(self.session_id, state)

    def heartbeat(self) -> int:
        """Renew the lease now (the background thread does it every interval)."""
        self.raise_if_fenced()
        return self.tracker.heartbeat(self.session_id)

    def raise_if_fenced(self) -> None:
        """Raise `Fenced` if the heartbeat learnt that the session was ended elsewhere."""
        if self.fenced is not None:
            raise self.fenced

    def _on_fenced(self, exc: Fenced) -> None:
        self.fenced = Fenced(
            f"{exc.message}; this block's own end is not recorded, its output stays in {self.files.log}"
        )
        if self._thread is threading.main_thread():
            # A real SIGINT to the main thread also wakes it from a blocking call.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


@contextmanager
def session_scope(
    tracker: Tracker,
    task: str | Issue,
    *,
    role: Role | None,
    session_type: SessionType,
    engine: str,
    worktree: str | None,
    heartbeat_interval: float | None,
) -> Iterator[SessionHandle]:
    """The implementation of `Tracker.session_scope` (documented there)."""
    interval = heartbeat_interval if heartbeat_interval is not None else tracker.ws.config.heartbeat_interval
    session = tracker.start(
        task,
        role=role,
        session_type=session_type,
        engine=engine,
        worktree=worktree,
        pid=os.getpid(),
        state="running",
    )
    handle = SessionHandle(tracker, session)
    keeper = HeartbeatKeeper(tracker.ws.ctx.common_dir, session.session_id, interval, handle._on_fenced)
    keeper.start()
    try:
        yield handle
    except KeyboardInterrupt:
        keeper.stop()
        handle.raise_if_fenced()
        _finish(handle, 128 + signal.SIGINT, "signal")
        raise
    except Fenced:
        keeper.stop()
        raise
    except SystemExit as exc:
        keeper.stop()
        handle.raise_if_fenced()
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        _finish(handle, code, "completed")
        raise
    except BaseException:
        keeper.stop()
        handle.raise_if_fenced()
        handle.log(traceback.format_exc())
        _finish(handle, 1, "completed")
        raise
    else:
        keeper.stop()
        handle.raise_if_fenced()
        _finish(handle, 0, "completed")


def _finish(handle: SessionHandle, code: int, reason: str) -> None:
    """Record the block's end; Fenced (never swallowed) if the session ended elsewhere first."""
    try:
        handle.tracker.exit(handle.session_id, code, reason)  # type: ignore[arg-type]
    except Fenced as exc:
        raise Fenced(
            f"{exc.message}; this block's own end (code {code}) is not recorded, its "
            f"output stays in {handle.files.log}"
        ) from None
