"""The public Python API for workers: start, heartbeat, transition, exit, stop.

    from brat_sessions import Tracker
    tracker = Tracker()                        # the repository of the cwd
    with tracker.session_scope("t-20250114-3a2c", engine="python") as s:
        s.log("working\\n")                     # heartbeats run in the background
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..clock import now_ms
from ..errors import BadInput, Fenced
from ..index import Index
from ..issues.ids import new_id
from ..sessions.block import EXIT_REASONS, SESSION_TYPES
from ..sessions.lease import create_lease, drop_lease, renew_lease
from ..sessions.model import Session, check_transition
from ..sessions.outputs import store_file, store_output
from ..sessions.projection import BlockRecord
from ..sessions.writer import block_events
from ..storage.events import Event
from ..workspace import Workspace, this_host
from . import procs
from .files import SessionFiles
from .heartbeat import HeartbeatKeeper

DEFAULT_ROLES = {"polecat": "witness", "crew": "user"}
START_STATES = ("spawned", "ready", "running")


def _fenced_message(s: Session) -> str:
    return (f"session {s.session_id} has already exited ({s.exit_reason or 'unknown'}, "
            f"exit code {s.exit_code}): stop working")


class Tracker:
    """Records sessions in the repository at `path` (default: the current directory)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, host: str | None = None) -> None:
        self.ws = Workspace(path)
        self.host = host or this_host()

    # reading -----------------------------------------------------------
    def session(self, session_id: str) -> Session:
        return self.ws.session(session_id)

    def sessions(self, include_exited: bool = False) -> list[Session]:
        return self.ws.sessions(include_exited)

    def history(self, session_id: str) -> list[BlockRecord]:
        index = self.ws.fresh_index()
        index.session(session_id)  # NotFound for an unknown id
        return index.history(session_id)

    def files(self, session_id: str) -> SessionFiles:
        return SessionFiles(self.ws.ctx.logs_dir, session_id)

    # writing -----------------------------------------------------------
    def _write(self, session_id: str, update: Callable[[Session], dict[str, Any]]) -> Session:
        """Append a block made by `update(current session)`, checked at the head it lands on."""
        def build(index: Index) -> list[Event]:
            current = self.ws.with_lease(index.session(session_id))
            return block_events(index, self.ws.actor, current, update(current), now_ms())
        self.ws.append(build)
        return self.ws.session(session_id)

    def start(self, task: str, *, role: str | None = None, session_type: str = "polecat",
              engine: str = "shell", worktree: str | None = None, pid: int | None = None,
              state: str = "spawned") -> Session:
        """Record a new session on a task (by task id or grite issue id)."""
        if session_type not in SESSION_TYPES:
            raise BadInput(f"session type must be polecat or crew, not {session_type!r}")
        if state not in START_STATES:
            raise BadInput(f"a session starts as one of {', '.join(START_STATES)}")
        role = role or DEFAULT_ROLES[session_type]
        worktree = self._default_worktree() if worktree is None else worktree
        created: dict[str, Session] = {}

        def build(index: Index) -> list[Event]:
            issue = index.find_task(task)
            ts = now_ms()
            sid = new_id("s", ts, index.session_id_exists)
            session = Session(session_id=sid, task_id=issue.task_id, grite_issue_id=issue.issue_id,
                              role=role, session_type=session_type, engine=engine,
                              worktree=worktree, pid=pid, status=state, started_ts=ts,
                              last_heartbeat_ts=None, exit_code=None, exit_reason=None,
                              last_output_ref=None, host=self.host)
            created["session"] = session
            return block_events(index, self.ws.actor, session, session.block_fields(), ts)

        self.ws.append(build)
        sid = created["session"].session_id
        create_lease(self.ws.repo, sid, self.host)
        return self.ws.session(sid)

    def _default_worktree(self) -> str:
        ctx = self.ws.ctx
        if ctx.worktree is None or ctx.worktree == ctx.main_worktree:
            return ""
        if ctx.main_worktree is not None and ctx.worktree.is_relative_to(ctx.main_worktree):
            return str(ctx.worktree.relative_to(ctx.main_worktree))
        return str(ctx.worktree)

    def heartbeat(self, session_id: str) -> int:
        """Renew the lease (no WAL commit). Fenced (exit code 4) once the session is over."""
        try:
            return renew_lease(self.ws.repo, session_id, now_ms()).ts or 0
        except Fenced:
            session = self.ws.index.refresh().session(session_id)  # NotFound if unknown
            raise Fenced(_fenced_message(session) if session.exited else
                         f"session {session_id} has no heartbeat lease here (started on another "
                         f"clone? run `brat sync`)") from None

    def transition(self, session_id: str, state: str, *, force: bool = False,
                   pid: int | None = None) -> Session:
        """Move the session to `state` along the state machine (any state may go to exit)."""
        if state == "exit":
            raise BadInput("use exit() (brat sessions exit) to end a session")

        def update(s: Session) -> dict[str, Any]:
            if s.exited:
                raise Fenced(_fenced_message(s))
            if not force:
                check_transition(session_id, s.status, state)
            fields = s.block_fields()
            fields.update(state=state, last_heartbeat_ts=now_ms(), host=self.host)
            if pid is not None:
                fields["pid"] = pid
            return fields

        session = self._write(session_id, update)
        self._renew_quietly(session_id)
        return session

    def _renew_quietly(self, session_id: str) -> None:
        try:
            renew_lease(self.ws.repo, session_id, now_ms())
        except Fenced:
            pass

    def exit(self, session_id: str, code: int, reason: str = "completed",
             output: str | os.PathLike[str] | bytes | None = None) -> Session:
        """Record the session's end, with the sha256 ref of its stored output."""
        if reason not in EXIT_REASONS:
            raise BadInput(f"exit reason must be one of {', '.join(EXIT_REASONS)}")
        output_ref = self._store_output(session_id, output)

        def update(s: Session) -> dict[str, Any]:
            if s.exited:
                raise Fenced(_fenced_message(s))
            fields = s.block_fields()
            fields.update(state="exit", exit_code=code, exit_reason=reason,
                          last_output_ref=output_ref or s.last_output_ref)
            return fields

        session = self._write(session_id, update)
        drop_lease(self.ws.repo, session_id)
        return session

    def _store_output(self, session_id: str, output: str | os.PathLike[str] | bytes | None) -> str | None:
        if isinstance(output, bytes):
            return store_output(self.ws.repo, output)
        if output is not None:
            path = Path(output)
            if not path.is_file():
                raise BadInput(f"no such output file: {path}")
            return store_file(self.ws.repo, path)
        return store_file(self.ws.repo, self.files(session_id).log)

    def stop(self, session_id: str, reason: str = "user-stop", grace_s: float = 10.0) -> Session:
        """Stop a session: signal its process if it lives here, and record the exit."""
        session = self.session(session_id)
        if session.exited:
            raise Fenced(f"session {session_id} has already exited ({session.exit_reason})")
        files = self.files(session_id)
        code = -1
        pid = session.pid
        if pid and session.host == self.host and procs.is_same_process(pid, session.pid_ts):
            files.logs_dir.mkdir(parents=True, exist_ok=True)
            files.stop_request.write_text(reason)
            os.kill(pid, signal.SIGTERM)
            if not procs.wait_gone(pid, grace_s):
                os.kill(pid, signal.SIGKILL)
                procs.wait_gone(pid, 5)
            # Under `run`, the shim writes the status file as the command ends and the
            # supervisor then records the exit itself: give it a moment to do so.
            ended = _poll(files.how_it_ended, 1.0)
            if ended is not None:
                code = ended[0]
                if _poll(lambda: self.ws.fresh_index().session(session_id).exited, 5.0):
                    return self.session(session_id)
        try:
            return self.exit(session_id, code, reason)
        except Fenced:
            return self.session(session_id)  # its supervisor recorded it first

    # the context manager ----------------------------------------------
    @contextmanager
    def session_scope(self, task: str, *, role: str | None = None, session_type: str = "polecat",
                      engine: str = "python", worktree: str | None = None,
                      heartbeat_interval: float = 30.0) -> Iterator["SessionHandle"]:
        """Run a block of Python as a session: heartbeats in the background, exit recorded at the end.

        A normal end records `completed` 0; an exception records `completed` 1 with the
        traceback in the output; KeyboardInterrupt records `signal` 130; SystemExit its code.
        If the session is ended elsewhere (reaped, stopped), the main thread is interrupted
        and `Fenced` is raised from the block.
        """
        session = self.start(task, role=role, session_type=session_type, engine=engine,
                             worktree=worktree, pid=os.getpid(), state="running")
        handle = SessionHandle(self, session)
        keeper = HeartbeatKeeper(self.ws.ctx.common_dir, session.session_id, heartbeat_interval,
                                 handle._on_fenced)
        keeper.start()
        try:
            yield handle
        except KeyboardInterrupt:
            keeper.stop()
            if handle.fenced is not None:
                raise handle.fenced from None
            self._finish(handle, 128 + signal.SIGINT, "signal")
            raise
        except Fenced:
            keeper.stop()
            raise
        except SystemExit as exc:
            keeper.stop()
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            self._finish(handle, code, "completed")
            raise
        except BaseException:
            keeper.stop()
            handle.log(traceback.format_exc())
            self._finish(handle, 1, "completed")
            raise
        else:
            keeper.stop()
            self._finish(handle, 0, "completed")

    def _finish(self, handle: "SessionHandle", code: int, reason: str) -> None:
        try:
            self.exit(handle.session_id, code, reason)
        except Fenced:
            pass  # ended elsewhere; the first exit stands


def _poll(check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


class SessionHandle:
    """What a `with tracker.session_scope(...)` block gets."""

    def __init__(self, tracker: Tracker, session: Session) -> None:
        self.tracker = tracker
        self.session_id = session.session_id
        self.task_id = session.task_id
        self.files = tracker.files(session.session_id)
        self.fenced: Fenced | None = None

    def log(self, text: str | bytes) -> None:
        """Append to the session's output log."""
        self.files.logs_dir.mkdir(parents=True, exist_ok=True)
        data = text.encode() if isinstance(text, str) else text
        with open(self.files.log, "ab") as fh:
            fh.write(data)

    def transition(self, state: str) -> Session:
        return self.tracker.transition(self.session_id, state)

    def heartbeat(self) -> int:
        return self.tracker.heartbeat(self.session_id)

    def _on_fenced(self, exc: Fenced) -> None:
        self.fenced = exc
        # A real SIGINT to the main thread also wakes it from a blocking call (sleep, wait).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
