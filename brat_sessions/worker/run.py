"""`brat sessions run`: supervise a command as a session from start to exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .. import python_command
from ..errors import EXIT_CONFLICT, BratError, Fenced, NotFound
from ..kinds import ExitReason
from ..sessions.lease import LeaseSealed
from ..sessions.model import Session
from . import proof as proofs
from .api import Tracker
from .lineage import tokens

CRASH: ExitReason = "crash"


def over_budget(tracker: Tracker, session: Session) -> bool:
    """Have the session and its descendants started here used more tokens than its budget?
    (A descendant's link is taken from this clone's own record, never from the log alone:
    a block anyone can push must not stop a command here.)"""
    if session.budget_tokens is None:
        return False
    index = tracker.ws.fresh_index()
    counted = [session.session_id] + [
        sid for sid, _ in proofs.local_tree(tracker.ws.ctx.data_dir, session.session_id)
    ]
    used = 0
    for sid in counted:
        try:
            used += tokens(tracker.ws.with_lease(index.session(sid)))
        except NotFound:
            continue  # (not in the log here yet)
    return used > session.budget_tokens


def run_command(
    tracker: Tracker,
    task: str,
    command: list[str],
    *,
    heartbeat_interval: float = 30.0,
    grace_s: float = 10.0,
    tee: str = "tee",
    tty: bool = False,
    on_start: Callable[[Session], None] | None = None,
    **start_options: Any,
) -> tuple[int, str]:
    """Run `command` as a new session; returns (exit status for `run`, session id).

    `tee` says where the command's output goes besides the log: "tee" (our stdout and
    stderr), "stderr" (both to stderr, keeping stdout for JSON) or "quiet". With `tty`
    the command runs in a pseudo-terminal (its stdout and stderr are one stream).
    The command's environment names its session (BRAT_SESSION_ID, BRAT_TASK_ID and
    BRAT_GRITE_ISSUE_ID), so a
    `brat sessions run` or `start` inside it becomes a child. With a token budget
    (`budget_tokens` in `start_options`), the command is stopped at the first heartbeat
    after the session and its descendants used more, recorded as `user-stop` with the
    cause `budget`.
    """
    session = tracker.start(task, **start_options)
    sid = session.session_id
    if on_start is not None:
        on_start(session)
    files = tracker.files(sid)
    files.ensure_dir()
    read_fd, write_fd = os.pipe()
    shim = subprocess.Popen(
        [
            *python_command("brat_sessions.worker.shim"),  # (never a repository's json.py)
            str(files.log),
            str(files.status),
            str(write_fd),
            tee,
            "pty" if tty else "pipe",
            str(os.getpid()),  # (the shim stops the command if this process dies)
            str(grace_s),
            "--",
            *command,
        ],
        pass_fds=[write_fd],
        env={
            **os.environ,
            "BRAT_SESSION_ID": sid,
            "BRAT_TASK_ID": session.task_id or task,
            "BRAT_GRITE_ISSUE_ID": session.grite_issue_id,
        },
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        raw = pipe.read()
    child_pid = int(raw) if raw.strip() else None
    # The command leads its own process group; this machine now holds the proof that
    # brat started it, so `brat sessions stop` may signal that group (and only it).
    proof = (
        proofs.record(
            tracker.ws.ctx.data_dir, sid, child_pid, group=True, supervisor=shim.pid, grace_s=grace_s
        )
        if child_pid
        else None
    )

    def forward(signum: int, _frame: Any) -> None:
        # A Ctrl-C typed at the terminal goes to the command's group (the foreground
        # one) and never reaches us; what does reach us is forwarded to the whole group.
        if proof is not None:
            proof.send(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    fenced: Fenced | None = None
    cause: str | None = None
    tracker.push_in_background(True)  # (a slow remote never holds up the command's end)
    try:
        if child_pid:
            try:
                tracker.transition(sid, "running", pid=child_pid, force=True)
            except Fenced as exc:
                fenced = exc
        while fenced is None:
            try:
                shim.wait(timeout=heartbeat_interval)
                break
            except subprocess.TimeoutExpired:
                try:
                    tracker.heartbeat(sid)
                except LeaseSealed:
                    continue  # an exit is being recorded elsewhere: the next beat learns how it went
                except Fenced as exc:
                    fenced = exc
                    continue
                except (BratError, OSError) as exc:  # a busy lease: the next beat tries again
                    print(f"brat: heartbeat for {sid} failed ({exc}); trying again", file=sys.stderr)
                    continue
                if cause is None and over_budget(tracker, session):
                    cause = "budget"
                    print(
                        f"brat: session {sid} used more than its budget of "
                        f"{session.budget_tokens} tokens; stopping the command",
                        file=sys.stderr,
                    )
                    files.request_stop("user-stop")
                    if proof is not None:
                        proof.stop(grace_s)
        if fenced is not None:
            print(f"brat: {fenced.message}; stopping the command", file=sys.stderr)
            if proof is not None:
                proof.stop(grace_s)
            shim.wait()
            proofs.drop(tracker.ws.ctx.data_dir, sid)
            return EXIT_CONFLICT, sid
        shim.wait()
    finally:
        tracker.push_in_background(False)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    ended = files.how_it_ended()
    if ended is None:  # no status file: the shim itself died (killed), the command is unsupervised
        print(f"brat: the supervisor of session {sid} died; stopping its command", file=sys.stderr)
        if proof is not None:
            proof.stop(grace_s)
        ended = (-1, CRASH)
    code, reason = ended
    try:
        tracker.exit(sid, code, reason, stop_cause=cause)  # stores the session's own log
    except Fenced as exc:
        print(f"brat: {exc.message}", file=sys.stderr)
    return code, sid
