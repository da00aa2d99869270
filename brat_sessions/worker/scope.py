"""`Tracker.session_scope`: a block of Python run as a session, and the handle it gets."""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from ..errors import BadInput, BratError, Fenced
from ..kinds import ExitReason, LiveState, Role, SessionType
from ..rules import is_utf8
from ..sessions.model import Session
from .heartbeat import HeartbeatKeeper

if TYPE_CHECKING:
    from ..issues.projection import Issue
    from .api import Tracker


# the live scopes' sessions whose exit their own tracker is recording or has recorded
# (`Tracker.exit` adds them before it seals the lease): a scope whose block ended its own
# session is not interrupted by it
ENDING_HERE: set[str] = set()
# the live scopes of this process, by session id (to tell a fenced enclosing scope's
# interrupt from a Ctrl-C)
LIVE_SCOPES: dict[str, SessionHandle] = {}


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
        self._lock = threading.Lock()
        self._ending = False
        self.above: str | None = None  # the enclosing scope's session, if any

    @property
    def ended_by_block(self) -> bool:
        """Did the block record its session's end itself (`tracker.exit(s.session_id, ...)`)?"""
        return self.session_id in ENDING_HERE

    def log(self, text: str | bytes) -> None:
        """Append to the session's output log (stored in git at exit)."""
        self.raise_if_fenced()
        if isinstance(text, str):
            if not is_utf8(text):
                raise BadInput("a log line must be text that UTF-8 can hold (or bytes)")
            text = text.encode()
        elif not isinstance(text, (bytes, bytearray, memoryview)):
            raise BadInput(f"a log line is text or bytes, not {type(text).__name__}")
        self.files.append_log(bytes(text))

    def transition(self, state: LiveState) -> Session:
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
        with self._lock:
            if self.ended_by_block:
                self.fenced = Fenced(f"session {self.session_id} has exited: this block recorded its end")
                return  # (never interrupted by its own exit)
            self.fenced = Fenced(
                f"{exc.message}; this block's own end is not recorded, its output stays in {self.files.log}"
            )
            if self._ending or self._thread is not threading.main_thread():
                return
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                return  # SIGINT ignored, default (it would kill us) or the program's own
            # A real SIGINT to the main thread also wakes it from a blocking call.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _end(self, keeper: HeartbeatKeeper) -> None:
        """Stop the heartbeats. A SIGINT that the heartbeat thread sent as it learnt of
        the fencing may land here, once the block is over: it is then that Fenced."""
        try:
            with self._lock:
                self._ending = True  # (no signal after this)
            keeper.stop()
        except KeyboardInterrupt:
            if self.fenced is None:
                raise
            keeper.stop()


# the innermost session_scope of this thread (or asyncio task): (repository, session id)
_ENCLOSING: ContextVar[tuple[str, str] | None] = ContextVar("brat_sessions_scope", default=None)


def enclosing_scope(common_dir: object) -> str | None:
    """The session of the innermost `session_scope` around this code in the same
    repository (this thread's or task's), or None."""
    found = _ENCLOSING.get()
    return found[1] if found is not None and found[0] == str(common_dir) else None


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
    parent: str | None = None,
) -> Iterator[SessionHandle]:
    """The implementation of `Tracker.session_scope` (documented there)."""
    interval = heartbeat_interval if heartbeat_interval is not None else tracker.ws.config.heartbeat_interval
    number = isinstance(interval, (int, float)) and not isinstance(interval, bool)
    if not number or not 0 < interval < float("inf"):
        raise BadInput(f"a heartbeat interval must be a number of seconds over 0, not {interval!r}")
    session = tracker.start(
        task,
        role=role,
        session_type=session_type,
        engine=engine,
        worktree=worktree,
        pid=os.getpid(),
        state="running",
        parent=parent,
    )
    handle = SessionHandle(tracker, session)
    handle.above = enclosing_scope(tracker.ws.ctx.common_dir)
    keeper = HeartbeatKeeper(
        tracker.ws.ctx.common_dir, session.session_id, interval, handle._on_fenced, tracker.host
    )
    keeper.start()
    enclosing = _ENCLOSING.set((str(tracker.ws.ctx.common_dir), session.session_id))
    owner = os.getpid()
    LIVE_SCOPES[session.session_id] = handle
    try:
        yield handle
    except BaseException as exc:
        if os.getpid() != owner:
            raise  # a process forked inside the block: the session is its parent's to end
        handle._end(keeper)
        if handle.ended_by_block:
            raise  # its end is recorded already
        if isinstance(exc, Fenced) and (handle.fenced is not None or _has_ended(handle)):
            raise  # this session was ended elsewhere (or by the block itself)
        handle.raise_if_fenced()
        if isinstance(exc, KeyboardInterrupt) and _fenced_above(handle):
            # the interrupt of an enclosing scope ended elsewhere: this one is stopped with it
            _finish(handle, 128 + signal.SIGINT, "user-stop", "parent-ended")
        elif isinstance(exc, KeyboardInterrupt):
            _finish(handle, 128 + signal.SIGINT, "signal")
        elif isinstance(exc, SystemExit):
            _finish(handle, exit_status(exc.code), "completed")
        else:  # (a Fenced about another session too: this block failed)
            handle.log(traceback.format_exc())
            _finish(handle, 1, "completed")
        raise
    else:
        if os.getpid() != owner:
            return  # (as above)
        handle._end(keeper)
        if handle.ended_by_block:
            return
        handle.raise_if_fenced()
        _finish(handle, 0, "completed")
    finally:
        _ENCLOSING.reset(enclosing)
        if os.getpid() == owner:
            LIVE_SCOPES.pop(session.session_id, None)
            ENDING_HERE.discard(session.session_id)


def _fenced_above(handle: SessionHandle) -> bool:
    """Was a scope enclosing this one (in this process) ended elsewhere?"""
    seen = set()
    above = LIVE_SCOPES.get(handle.above) if handle.above else None
    while above is not None and above.session_id not in seen:
        if above.fenced is not None and not above.ended_by_block:
            return True
        seen.add(above.session_id)
        above = LIVE_SCOPES.get(above.above) if above.above else None
    return False


def exit_status(code: object) -> int:
    """The status a process gets from `sys.exit(code)`, as the shell sees it: None 0, an
    int (a bool too) its low 8 bits, one past a C long 255, anything else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code) & 0xFF if -(2**63) <= code < 2**63 else 255
    return 1


def _has_ended(handle: SessionHandle) -> bool:
    try:
        return handle.tracker.ws.fresh_index().session(handle.session_id).exited
    except BratError:
        return True  # (it cannot be read: nothing more can be recorded either)


def _finish(handle: SessionHandle, code: int, reason: ExitReason, stop_cause: str | None = None) -> None:
    """Record the block's end (`user-stop` when `brat sessions stop` asked for it); Fenced
    (never swallowed) if the session ended elsewhere first."""
    try:
        handle.tracker.exit(handle.session_id, code, handle.files.reason_for(reason), stop_cause=stop_cause)
    except Fenced as exc:
        raise Fenced(
            f"{exc.message}; this block's own end (code {code}) is not recorded, its "
            f"output stays in {handle.files.log}"
        ) from None
