"""The public Python API for workers: start, heartbeat, transition, exit, stop.

from brat_sessions import Tracker
tracker = Tracker()                        # the repository of the cwd
with tracker.session_scope("t-20250114-3a2c", engine="python") as s:
    s.log("working\\n")                     # heartbeats run in the background
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import rules
from ..clock import now_ms
from ..errors import BadInput, Conflict, Fenced, NotFound
from ..index import Index
from ..issues.ids import new_id
from ..issues.projection import Issue
from ..kinds import (
    EXIT_REASONS,
    ROLES,
    SESSION_TYPES,
    STATES,
    TASK_STATUSES,
    ExitReason,
    LiveState,
    Priority,
    Role,
    SessionType,
    State,
    StopReason,
    TaskStatus,
)
from ..sessions.block import line_fits
from ..sessions.lease import (
    Lease,
    LeaseSealed,
    create_lease,
    create_missing_lease,
    drop_lease,
    renew_lease,
    seal_lease,
    unseal_lease,
    update_lease,
)
from ..sessions.model import Session, check_transition
from ..sessions.outputs import store_file, store_output, store_stream
from ..sessions.projection import BlockRecord
from ..sessions.usage import LedgerEntry, Progress, add_usage, totals, usage_json
from ..sessions.writer import block_events
from ..storage.events import Event
from ..workspace import Workspace, this_host
from . import proof as proofs
from . import stopping
from .checks import check_choice, check_name, check_pid, check_session_id, check_text
from .files import CommittedFiles, SessionFiles
from .lineage import child_fields, head_moved_away, store_ledger, worktree_head
from .stopping import StopReport

DEFAULT_ROLES: dict[SessionType, Role] = {"polecat": "witness", "crew": "user"}
START_STATES: tuple[State, ...] = ("spawned", "ready", "running")


def _fenced_message(s: Session, advice: str = "stop working") -> str:
    return (
        f"session {s.session_id} has already exited ({s.exit_reason or 'unknown'}, "
        f"exit code {s.exit_code}): {advice}"
    )


EXIT_LOOKBACK = 64  # log commits above the index's head a heartbeat looks at for an exit


class Tracker:
    """Records sessions in the repository at `path` (default: the current directory).
    One Tracker may be used from several threads: each thread gets its own repository
    handle and index connection (neither libgit2's nor SQLite's may be shared)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, host: str | None = None) -> None:
        ws = Workspace(path)
        self._root = ws.path
        self._local = threading.local()
        self._local.ws = ws
        self.host = host or this_host()
        self._push_failing = False  # (BRAT_HEARTBEAT_REMOTE: the last push failed)
        self._pusher: Any = None  # a LeasePusher, in a heartbeat thread (`push_in_background`)
        self._background = False
        if not rules.valid_text(self.host, 255) or not self.host.strip():
            raise BadInput(
                "the host name (BRAT_HOST or the hostname) must be 1-255 characters of UTF-8, "
                "not blank nor NUL"
            )

    @property
    def ws(self) -> Workspace:
        """This thread's view of the repository (made at its first use in a thread)."""
        ws: Workspace | None = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace(self._root)
        return ws

    # reading -----------------------------------------------------------
    def session(self, session_id: str) -> Session:
        """The session as of now (NotFound, exit code 3, for an unknown id)."""
        return self.ws.session(check_session_id(session_id))

    def sessions(self, include_exited: bool = False) -> list[Session]:
        """Live sessions, oldest first (every session with `include_exited`)."""
        return self.ws.sessions(include_exited)

    def history(self, session_id: str) -> list[BlockRecord]:
        """Every block of the session in log order (conflicting blocks included)."""
        index = self.ws.fresh_index()
        index.session(check_session_id(session_id))  # NotFound for an unknown id
        return index.history(session_id)

    def files(self, session_id: str) -> SessionFiles:
        """The session's local files under `.grite/logs/` (the output log, status, stop)."""
        ctx = self.ws.ctx
        committed = getattr(self._local, "committed", None)  # (one per thread: git is asked once
        if committed is None:  # while the index does not change, not once per exit)
            committed = self._local.committed = CommittedFiles(ctx.main_worktree, ctx.common_dir)
        return SessionFiles(ctx.logs_dir, check_session_id(session_id), committed)

    # tasks -------------------------------------------------------------
    def create_task(
        self,
        title: str,
        body: str = "",
        *,
        convoy: str | None = None,
        status: TaskStatus = "queued",
        priority: Priority | None = None,
    ) -> Issue:
        """Create a task issue with brat's labels and a fresh task id (`t-YYYYMMDD-xxxx`).

        task = tracker.create_task("Fix the parser", "Paths: src/parse.rs", priority="P1")
        print(task.task_id)
        """
        from ..issues.tasks import create_task

        return create_task(self.ws, title, body, convoy, status, priority)

    def tasks(self, status: TaskStatus | None = None) -> list[Issue]:
        """Task issues, oldest first (only those with the `status:` label given)."""
        if status is not None:
            check_choice("task status", status, TASK_STATUSES)
        return [
            t
            for t in self.ws.fresh_index().task_issues()
            if status is None or t.label_value("status") == status
        ]

    def task(self, task: str | Issue) -> Issue:
        """A task by task id, grite issue id or `Issue` (read again: as it is now; NotFound,
        exit code 3, if there is none)."""
        ref = task if isinstance(task, str) else getattr(task, "issue_id", None)
        if not isinstance(ref, str):
            raise BadInput(f"a task is a task id, a grite issue id or an Issue, not {type(task).__name__}")
        return self.ws.fresh_index().find_task(ref)

    # writing -----------------------------------------------------------
    def _write(self, session_id: str, update: Callable[[Session], dict[str, Any]]) -> Session:
        """Append a block made by `update(current session)`, checked at the head it lands on."""

        def build(index: Index) -> list[Event]:
            current = self.ws.with_lease(index.session(session_id))
            return block_events(index, self.ws.actor, current, update(current), now_ms())

        self.ws.append(build)
        return self.ws.session(session_id)

    def start(
        self,
        task: str | Issue,
        *,
        role: Role | None = None,
        session_type: SessionType = "polecat",
        engine: str = "shell",
        worktree: str | None = None,
        pid: int | None = None,
        state: State = "spawned",
        parent: str | None = None,
        budget_tokens: int | None = None,
        resumed_from: str | None = None,
    ) -> Session:
        """Record a new session on a task (by task id or grite issue id).

        With `pid`, the process must run on this machine: it is adopted (recorded
        locally, so `stop` may signal it and the reaper may call it a crash); a pid
        that runs nowhere here, or init's, is recorded but not adopted (`adopted`). With
        `parent` (a session id), the session is its child: it records its parent, the
        root of the tree and its depth. `budget_tokens` is a token budget for the session
        and its descendants (`run` enforces it). The worktree's HEAD is recorded as
        `git_head`, for `resume`.
        """
        if not isinstance(task, str) and not isinstance(getattr(task, "issue_id", None), str):
            raise BadInput(f"a task is a task id, a grite issue id or an Issue, not {str(task)[:80]!r}")
        check_choice("session type", session_type, SESSION_TYPES)
        check_choice("a new session's state", state, START_STATES)
        role = role or DEFAULT_ROLES[session_type]
        check_choice("role", role, ROLES)
        check_name("engine", engine, 128)
        check_pid(pid)
        if worktree is None:
            worktree = self._default_worktree()
        elif isinstance(worktree, str):
            worktree = self._given_worktree(worktree)  # (a folder here: as the default records it)
        check_text("worktree", worktree, rules.MAX_TEXT)
        if not line_fits("worktree", worktree):
            raise BadInput(
                f"worktree is too long once escaped for a block (a line holds at most {rules.MAX_LINE_CHARS} "
                "characters; quotes, backslashes, brackets and control characters take 2 to 6)"
            )
        if budget_tokens is not None and not rules.valid_count(budget_tokens):
            raise BadInput(f"a token budget must be an integer in 0..2^53, not {budget_tokens!r}")
        lineage = child_fields(self.session(parent)) if parent is not None else {}
        extra = {
            "git_head": worktree_head(self.ws.ctx),
            "budget_tokens": budget_tokens,
            "resumed_from": check_session_id(resumed_from) if resumed_from else None,
        }
        created: dict[str, Session] = {}

        def build(index: Index) -> list[Event]:
            issue = index.find_task(task if isinstance(task, str) else task.issue_id)
            ts = now_ms()
            sid = new_id("s", ts, lambda sid: index.session_id_exists(sid) or self._files_exist(sid))
            session = Session(
                session_id=sid,
                task_id=issue.task_id,
                grite_issue_id=issue.issue_id,
                role=role,
                session_type=session_type,
                engine=engine,
                worktree=worktree,
                pid=pid,
                status=state,
                started_ts=ts,
                last_heartbeat_ts=None,
                exit_code=None,
                exit_reason=None,
                last_output_ref=None,
                host=self.host,
                **lineage,  # type: ignore[arg-type]
                **extra,  # type: ignore[arg-type]
            )
            created["session"] = session
            return block_events(index, self.ws.actor, session, session.block_fields(), ts)

        self.ws.append(build)
        sid = created["session"].session_id
        create_lease(self.ws.repo, sid, self.host)
        if pid is not None:
            proofs.record(self.ws.ctx.data_dir, sid, pid)
        if parent is not None:
            proofs.record_parent(self.ws.ctx.data_dir, sid, parent)
        return self.ws.session(sid)

    def _files_exist(self, session_id: str) -> bool:
        """Does `.grite/logs` hold a file of this id already? A new session's files are its
        own: one there before it (a committed file, pulled with someone's commit) would
        otherwise be taken for its log, its stop request or its status."""
        files = SessionFiles(self.ws.ctx.logs_dir, session_id)
        return any(os.path.lexists(p) for p in (files.log, files.status, files.stop_request))

    def _default_worktree(self) -> str:
        return self._recorded_worktree(self.ws.ctx.worktree)

    def _given_worktree(self, given: str) -> str:
        """A worktree given as a folder that exists here is recorded as the default is
        (`.`, `../wt` or `sub/` would mean nothing on another clone); any other text is
        recorded as given (a worktree on another machine, say)."""
        if not given:
            return given
        try:
            here = Path(os.path.realpath(given))
            is_dir = here.is_dir()
        except (OSError, ValueError):
            return given
        return self._recorded_worktree(here) if is_dir else given

    def _recorded_worktree(self, worktree: Path | None) -> str:
        """`""` for the main worktree, a path relative to it for one inside it, else absolute."""
        main = self.ws.ctx.main_worktree
        main = Path(os.path.realpath(main)) if main is not None else None
        worktree = Path(os.path.realpath(worktree)) if worktree is not None else None
        if worktree is None or worktree == main:
            return ""
        if main is not None and worktree.is_relative_to(main):
            path = str(worktree.relative_to(main))
        else:
            path = str(worktree)
        # (a path of bytes that are not UTF-8 is recorded with them escaped: it is shown,
        # never opened)
        return os.fsencode(path).decode("utf-8", "backslashreplace")

    def heartbeat(self, session_id: str) -> int:
        """Renew the lease (no WAL commit); returns its time. Fenced (exit code 4) once the
        session has an exit block. A session with no lease here (written by brat, or started
        on another clone) gets one: the exit block, not a missing lease, ends a session."""
        check_session_id(session_id)
        now = now_ms()
        try:
            ts = renew_lease(self.ws.repo, session_id, now).ts or now
        except LeaseSealed:
            self._fence_if_exited(session_id)  # (an exit killed after its block: its lease stayed)
            raise  # its exit is being recorded
        except Fenced:
            pass
        else:
            self._fence_if_exited(session_id)
            self._share_lease(session_id)
            return ts
        session = self.ws.fresh_index().session(session_id)  # NotFound if unknown
        if session.exited:
            raise Fenced(_fenced_message(session))
        create_missing_lease(self.ws.repo, self.ws.ctx.common_dir, session_id, self.host, now)
        # An exit committed after our look but before the lease existed would have been
        # followed by dropping the lease: look once more, so neither side misses the other.
        session = self.ws.fresh_index().session(session_id)
        if session.exited:
            drop_lease(self.ws.repo, session_id)
            raise Fenced(_fenced_message(session))
        self._share_lease(session_id)
        return now

    def _fence_if_exited(self, session_id: str) -> None:
        """Fenced, and the lease dropped, when the log says the session has exited: a lease
        outlives its session's exit when whatever wrote the exit stopped before it dropped
        the lease (killed, a full disk); the exit block ends a session."""
        ended = self._exited_session(session_id)
        if ended is not None:
            drop_lease(self.ws.repo, session_id)
            raise Fenced(_fenced_message(ended))

    def _exited_session(self, session_id: str) -> Session | None:
        """The session when the log says it has exited (None too for one it does not hold).

        A heartbeat must not wait for the index (another process may be rebuilding it), so
        the index is read as it is (`peek_status`): an exit it holds is one; the log's
        commits above its head (and since this thread last looked; EXIT_LOOKBACK at most)
        are looked at undecoded, and one whose chunk names the session brings the index up
        to date (folding each such commit once, for every later look) to judge it."""
        from ..index import peek_status

        wal = self.ws.wal
        head = wal.head()
        looked: dict[str, str] = self._local.__dict__.setdefault("looked", {})
        if head is None or looked.get(session_id) == head:
            return None
        status, indexed = peek_status(self.ws.ctx.data_dir / "index.sqlite", session_id)
        named = status == "exit"
        stops = {looked.get(session_id), indexed}
        for n, oid in enumerate(wal.first_parents(head)):
            if named or oid in stops:
                break
            # (an index this far behind is brought up to date: the exit may lie below)
            named = n == EXIT_LOOKBACK or wal.chunk_holds(oid, session_id.encode())
        if named:
            try:
                session = self.ws.fresh_index().session(session_id)
            except NotFound:
                session = None
            if session is not None and session.exited:
                return session
        looked[session_id] = head  # (only once judged: a failed look is made again)
        return None

    def push_in_background(self, on: bool) -> None:
        """With BRAT_HEARTBEAT_REMOTE, push leases without waiting for the remote (a
        heartbeat thread: the next renewal must not wait for it); off stops any push
        under way."""
        self._background = on
        if not on and self._pusher is not None:
            self._pusher.close()
            self._pusher = None

    def _share_lease(self, session_id: str) -> None:
        """With BRAT_HEARTBEAT_REMOTE set, push the renewed lease there, so that a reaper on
        another machine sees this heartbeat; a failure is one line on stderr (the first of a
        run of failures), never an error: the heartbeat itself is made."""
        remote = os.environ.get("BRAT_HEARTBEAT_REMOTE")
        if not remote:
            return
        from ..sync import LeasePusher, push_lease

        if self._background:
            if self._pusher is not None and self._pusher.remote != remote:
                self._pusher.close()
                self._pusher = None
            if self._pusher is None:
                self._pusher = LeasePusher(self.ws, remote)
            why = self._pusher.push(session_id)
        else:
            why = push_lease(self.ws, remote, session_id)
        if why is not None and not self._push_failing:
            from ..render import safe  # (git's text, and the remote's own words in it)

            print(
                f"brat: warning: heartbeat of {session_id} not pushed to {safe(remote)}: {safe(why)}",
                file=sys.stderr,
            )
        self._push_failing = why is not None

    def phase(
        self, session_id: str, name: str, *, iteration: int | None = None, of: int | None = None
    ) -> Session:
        """Record the session's current phase (and iteration `iteration` of `of`) in its lease:
        no WAL commit; the next block and the exit block carry it.

            tracker.phase(sid, "tests", iteration=2, of=5)
        """
        check_name("phase", name, 128)
        for value in (iteration, of):
            if value is not None and not rules.valid_count(value):
                raise BadInput(f"an iteration must be an integer in 0..2^53, not {value!r}")
        if iteration is not None and of is not None and iteration > of:
            raise BadInput(f"iteration {iteration} of {of}: the iteration cannot be past the planned ones")
        now = now_ms()
        self._update_lease(
            session_id,
            lambda lease: replace(
                lease, ts=max(lease.ts or 0, now), progress=Progress(name, iteration, of, now)
            ),
        )
        return self.session(session_id)

    def usage(
        self,
        session_id: str,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cost_usd: float | None = None,
        source: str = "main",
    ) -> dict[str, Any]:
        """Add one LLM call to the session's usage ledger (in its lease: no WAL commit; the
        exit, or the reaper's exit, stores the ledger in git). Returns the session's totals.

            tracker.usage(sid, model="gpt-5", input_tokens=1200, output_tokens=300, cost_usd=0.004)
        """
        check_name("model", model, 128)
        check_name("source", source, 64)
        counts = (input_tokens, output_tokens, cache_read_tokens)
        if not all(rules.valid_count(n) for n in counts):
            raise BadInput("token counts must be integers in 0..2^53")
        if cost_usd is not None and (
            isinstance(cost_usd, bool) or not isinstance(cost_usd, (int, float)) or not 0 <= cost_usd <= 1e9
        ):
            raise BadInput(f"a cost must be a number of USD in 0..1e9, not {cost_usd!r}")
        entry = LedgerEntry(
            source,
            model,
            1,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            round((cost_usd or 0) * 1_000_000),
        )
        now = now_ms()

        def add(lease: Lease) -> Lease:
            try:
                ledger = add_usage(lease.ledger, entry)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            progress = replace(lease.progress, activity_ts=now)
            return replace(lease, ts=max(lease.ts or 0, now), ledger=ledger, progress=progress)

        lease = self._update_lease(session_id, add)
        return usage_json(totals(lease.ledger))

    def _update_lease(self, session_id: str, change: Callable[[Lease], Lease]) -> Lease:
        """Change the lease; a session with none here gets one first (as a heartbeat does)."""
        check_session_id(session_id)
        try:
            lease = update_lease(self.ws.repo, session_id, change)
        except LeaseSealed:
            self._fence_if_exited(session_id)  # (as for a heartbeat)
            raise  # its exit is being recorded: what it was told to add would be lost
        except Fenced:
            self.heartbeat(session_id)  # Fenced if it has exited; else creates the lease
            return update_lease(self.ws.repo, session_id, change)
        self._fence_if_exited(session_id)  # (a lease left behind by an exit, as for a heartbeat)
        return lease

    def transition(
        self, session_id: str, state: LiveState, *, force: bool = False, pid: int | None = None
    ) -> Session:
        """Move the session to `state` along the state machine (any state may go to exit).

        `force` skips the state machine, never the validation: the state must be one
        brat knows. With `pid`, the process (on this machine) is adopted as in `start`.
        """
        check_session_id(session_id)
        if str(state) == "exit":  # (an untyped caller's: the type leaves it out)
            raise BadInput("use exit() (brat sessions exit) to end a session")
        check_choice("state", state, tuple(x for x in STATES if x != "exit"))
        check_pid(pid)

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
        known = proofs.load(self.ws.ctx.data_dir, session_id)
        if pid is not None and (known is None or known.pid != pid):
            proofs.record(self.ws.ctx.data_dir, session_id, pid)
        self._renew_quietly(session_id)
        return session

    def _renew_quietly(self, session_id: str) -> None:
        try:
            self.heartbeat(session_id)  # creates the lease of a session that has none here
        except Fenced:
            pass  # ended meanwhile: the caller's block stands, the next heartbeat learns it

    def exit(
        self,
        session_id: str,
        code: int,
        reason: ExitReason = "completed",
        output: str | os.PathLike[str] | bytes | None = None,
        stop_cause: str | None = None,
    ) -> Session:
        """Record the session's end, with the sha256 ref of its stored output.

        `output` is a file, bytes, or None for the session's own `.grite/logs` log.
        Fenced (exit code 4) if the session has already exited.
        """
        check_session_id(session_id)
        check_choice("exit reason", reason, EXIT_REASONS)
        if stop_cause is not None:
            check_text("stop cause", stop_cause, 64)
        if not rules.valid_exit_code(code):
            raise BadInput(f"exit code must be a 32-bit integer, not {code!r}")
        known = self.ws.fresh_index().session(session_id)  # NotFound before anything is stored
        if known.exited:
            drop_lease(self.ws.repo, session_id)  # (one left behind by an exit that was killed)
            raise Fenced(_fenced_message(known, "its first exit is kept"))
        output_ref = self._store_output(session_id, output)

        def update(s: Session) -> dict[str, Any]:
            if s.exited:
                raise Fenced(_fenced_message(s, "its first exit is kept"))
            fields = s.block_fields()
            fields.update(
                state="exit",
                exit_code=code,
                exit_reason=reason,
                last_output_ref=output_ref or s.last_output_ref,
                usage_ref=store_ledger(self.ws.repo, s) or s.usage_ref,
                stop_cause=stop_cause or s.stop_cause,
            )
            return fields

        # sealed first: a usage, phase or heartbeat call from now on is told the session is
        # exiting, so the ledger stored is the last one (none is told "recorded" and lost)
        from .scope import ENDING_HERE, LIVE_SCOPES

        scope = LIVE_SCOPES.get(session_id)
        if scope is not None and scope.tracker is self:  # the block ends its own session: the
            ENDING_HERE.add(session_id)  # scope is not interrupted by it (see session_scope)
        sealed = None
        try:
            sealed = seal_lease(self.ws.repo, session_id)
            session = self._write(session_id, update)
        except Fenced:
            ENDING_HERE.discard(session_id)
            drop_lease(self.ws.repo, session_id)  # it had exited meanwhile: its lease is over too
            raise
        except BaseException:
            ENDING_HERE.discard(session_id)
            if sealed is not None:
                unseal_lease(self.ws.repo, session_id, sealed)  # not recorded: the worker goes on
            raise
        drop_lease(self.ws.repo, session_id)
        proofs.drop(self.ws.ctx.data_dir, session_id)
        self.files(session_id).forget_stop_request()
        return session

    def _store_output(self, session_id: str, output: str | os.PathLike[str] | bytes | None) -> str | None:
        if isinstance(output, (bytes, bytearray, memoryview)):
            return store_output(self.ws.repo, bytes(output))
        if output is not None and not isinstance(output, (str, os.PathLike)):
            raise BadInput(f"an output is a file's path, bytes or None, not {type(output).__name__}")
        if output is not None:
            path = Path(output)
            if not path.is_file():
                raise BadInput(f"no such output file: {path}")
            return store_file(self.ws.repo, path)
        files = self.files(session_id)
        if files.log_committed():
            from ..render import safe

            print(
                f"brat: warning: {safe(files.log)} is a file committed to git, not this session's own log: "
                "the exit is recorded without it",
                file=sys.stderr,
            )
            return None
        log = files.open_log()
        if log is None:
            return None
        with log:
            return store_stream(self.ws.repo, log)

    def adopted(self, session_id: str) -> bool:
        """True when this machine holds proof of the session's process (`run`, or a pid
        given to `start`/`transition` that ran here): only then may `stop` signal it."""
        return proofs.load(self.ws.ctx.data_dir, check_session_id(session_id)) is not None

    def stop(self, session_id: str, reason: StopReason = "user-stop", grace_s: float = 10.0) -> Session:
        """Stop a session and record its exit; see `stop_report`."""
        return self.stop_report(session_id, reason, grace_s).session

    def stop_tree(
        self, session_id: str, reason: StopReason = "user-stop", grace_s: float = 10.0
    ) -> list[StopReport]:
        """Stop a session and its live descendants, deepest first (so no child outlives
        its parent's stop); one report each."""
        return stopping.stop_tree(self, session_id, reason, grace_s)

    def resume(self, session_id: str, **start_options: Any) -> tuple[Session, str | None]:
        """Start a new session for the task of `session_id`, linked by `resumed_from`; refused
        (Conflict, exit 4) while the original is live. Also returns a warning when the
        worktree's HEAD is no longer the recorded `git_head` or a descendant of it."""
        task, options, warning = self.resume_plan(session_id)
        options.update(start_options)
        return self.start(task, **options), warning

    def resume_plan(self, session_id: str) -> tuple[str, dict[str, Any], str | None]:
        """What `resume` would start: the task, the `start` options, and the warning (for a
        caller that starts it another way, such as `run`)."""
        original = self.session(session_id)
        if not original.exited:
            raise Conflict(
                f"session {session_id} is still live ({original.status}); stop it or "
                f"wait for the reaper before resuming it"
            )
        warning = head_moved_away(self.ws.ctx, original.git_head)
        options: dict[str, Any] = {
            "role": original.role,
            "session_type": original.session_type,
            "engine": original.engine,
        }
        if original.parent_session_id:
            options["parent"] = original.parent_session_id
        options["resumed_from"] = session_id
        return original.grite_issue_id, options, warning

    def stop_report(
        self, session_id: str, reason: StopReason = "user-stop", grace_s: float = 10.0
    ) -> StopReport:
        """Stop a session: signal its process (group) only if this machine holds proof that
        brat started or adopted that very process, then record the exit.

        A pid and host read from the log are never enough to send a signal. Without local
        proof the exit is recorded and the report says that no signal was sent.
        """
        return stopping.stop_report(self, session_id, reason, grace_s)

    # the context manager ----------------------------------------------
    def session_scope(
        self,
        task: str | Issue,
        *,
        role: Role | None = None,
        session_type: SessionType = "polecat",
        engine: str = "python",
        worktree: str | None = None,
        heartbeat_interval: float | None = None,
        parent: str | None = None,
    ) -> AbstractContextManager[SessionHandle]:
        """Run a block of Python as a session: heartbeats in the background, exit at the end.

            with tracker.session_scope("t-20250114-3a2c", engine="python") as s:
                s.log("working\\n")

        A normal end records `completed` 0; an exception records `completed` 1 with the
        traceback in the output; KeyboardInterrupt records `signal` 130; SystemExit its
        code. Heartbeats follow `.brat/sessions.yaml` (`heartbeat_interval`) unless given.
        If the session is ended elsewhere (reaped, stopped), the next heartbeat learns it
        and `Fenced` (exit code 4) is raised out of the block (in the main thread, at
        once, even from a blocking call), so the worker can stop; its output stays in
        its `.grite/logs` file. `parent` defaults to the session of the enclosing
        `session_scope` of this repository in the same thread (or asyncio task), else to
        $BRAT_SESSION_ID when it names a session of this repository (`brat sessions run`
        sets it for its command), as for `brat sessions start`.
        """
        from .scope import enclosing_scope, session_scope

        if parent is None:
            parent = enclosing_scope(self.ws.ctx.common_dir) or self._parent_from_environment()
        return session_scope(
            self,
            task,
            role=role,
            session_type=session_type,
            engine=engine,
            worktree=worktree,
            heartbeat_interval=heartbeat_interval,
            parent=parent,
        )

    def _parent_from_environment(self) -> str | None:
        """$BRAT_SESSION_ID if it names a session here (a `run` in another repository's does not)."""
        value = os.environ.get("BRAT_SESSION_ID")
        if not value or not rules.valid_id(value):
            return None
        try:
            self.ws.fresh_index().session(value)
        except NotFound:
            return None
        return value


from .scope import SessionHandle  # noqa: E402  (re-exported: part of the API)
