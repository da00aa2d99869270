"""`brat sessions ...` that write: start, heartbeat, transition, exit, stop, run, reap."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import click

from ..errors import EXIT_FAILURE
from ..kinds import EXIT_REASONS, ROLES, SESSION_TYPES, STOP_REASONS
from .complete import complete_sessions, complete_tasks
from .output import common, emit, examples, json_wanted, terminal_options, tracker, warn, width, workspace
from .sessions import resolve, sessions

if TYPE_CHECKING:
    from ..kinds import Role, SessionType, State
    from ..worker.api import Tracker

SESSION_ARG = click.argument("session_ref", metavar="SESSION", shell_complete=complete_sessions)


def _start_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--task",
                "task_ref",
                required=True,
                shell_complete=complete_tasks,
                help="Task id, grite issue id, or a unique prefix.",
            ),
            click.option(
                "--role", type=click.Choice(ROLES), help="Default: witness for polecat, user for crew."
            ),
            click.option(
                "--type",
                "session_type",
                type=click.Choice(SESSION_TYPES),
                default="polecat",
                show_default=True,
            ),
            click.option("--engine", default="shell", show_default=True),
            click.option(
                "--worktree",
                help="Default: this worktree, relative to the main one (absolute when it lies outside it).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _task_id(t: Tracker, ref: str) -> str:
    return t.ws.fresh_index().resolve_task(ref).issue_id


@sessions.command(
    "start",
    epilog=examples(
        "S=$(brat sessions start --task t-20250114-3a2c --engine shell --pid $$)",
        "brat sessions start --task t-2025 --type crew --state running --json",
    ),
)
@common
@_start_options
@click.option(
    "--pid",
    type=int,
    help="The worker's process id; it must run here (it is adopted: "
    "`stop` may signal it, the reaper may call it a crash).",
)
@click.option(
    "--state", type=click.Choice(["spawned", "ready", "running"]), default="spawned", show_default=True
)
def sessions_start(
    task_ref: str,
    role: str | None,
    session_type: str,
    engine: str,
    worktree: str | None,
    pid: int | None,
    state: str,
) -> None:
    """Start a session on a task; prints its id."""
    t = tracker()
    s = t.start(
        _task_id(t, task_ref),
        role=cast("Role | None", role),  # click.Choice checked the values
        session_type=cast("SessionType", session_type),
        engine=engine,
        worktree=worktree,
        pid=pid,
        state=cast("State", state),
    )
    emit({"session_id": s.session_id, "session": s.to_json()}, s.session_id)


@sessions.command("heartbeat", epilog=examples("brat sessions heartbeat $S || exit  # 4: ended elsewhere"))
@common
@SESSION_ARG
def sessions_heartbeat(session_ref: str) -> None:
    """Renew the session's lease (no commit); exit code 4 once the session has exited."""
    t = tracker()
    sid = resolve(t.ws, session_ref)
    ts = t.heartbeat(sid)
    emit({"session_id": sid, "last_heartbeat_ts": ts}, f"{sid} {ts}")


@sessions.command(
    "transition", epilog=examples("brat sessions transition $S ready", "brat sessions transition $S running")
)
@common
@SESSION_ARG
@click.argument("state", type=click.Choice(["spawned", "ready", "running", "handoff"]))
@click.option("--force", is_flag=True, help="Skip the state machine check.")
def sessions_transition(session_ref: str, state: str, force: bool) -> None:
    """Move a session along spawned -> ready -> running -> handoff (exit: `brat sessions exit`)."""
    t = tracker()
    s = t.transition(resolve(t.ws, session_ref), state, force=force)  # type: ignore[arg-type]
    emit({"session": s.to_json()}, f"{s.session_id} {s.status}")


@sessions.command(
    "exit",
    epilog=examples(
        "brat sessions exit $S --code 0 --output build.log",
        "brat sessions exit $S --code 137 --reason signal",
    ),
)
@common
@SESSION_ARG
@click.option("--code", type=int, required=True, help="Exit code.")
@click.option("--reason", default="completed", show_default=True, type=click.Choice(EXIT_REASONS))
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Output log to store (default: .grite/logs/<session>.log if present).",
)
def sessions_exit(session_ref: str, code: int, reason: str, output: str | None) -> None:
    """Record a session's exit."""
    t = tracker()
    s = t.exit(resolve(t.ws, session_ref), code, reason, output)  # type: ignore[arg-type]
    emit(
        {"session": s.to_json()},
        f"{s.session_id} exit {s.exit_reason} {s.exit_code} {s.last_output_ref or ''}".rstrip(),
    )


@sessions.command("stop", epilog=examples("brat sessions stop 7b3d", "brat sessions stop 7b3d --grace 2"))
@common
@SESSION_ARG
@click.option("--reason", default="user-stop", show_default=True, type=click.Choice(STOP_REASONS))
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
def sessions_stop(session_ref: str, reason: str, grace: float) -> None:
    """Stop a session: signal its process group if brat started it on this machine, and
    record the exit. Without that local proof no signal is sent (see docs/security.md)."""
    t = tracker()
    report = t.stop_report(resolve(t.ws, session_ref), reason, grace)  # type: ignore[arg-type]
    s = report.session
    if report.note and not json_wanted():
        warn(report.note)
    emit(
        {"session": s.to_json(), "signalled": report.signalled},
        f"{s.session_id} exit {s.exit_reason} {s.exit_code}",
    )


@sessions.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=examples(
        "brat sessions run --task t-20250114-3a2c --engine codex -- codex exec 'fix it'",
        "brat sessions run --task t-2025 --tty -- claude",
        "brat sessions run --task t-2025 --json -- make test 2>test.log",
    ),
)
@common
@_start_options
@click.option("--heartbeat-interval", type=float, help="Seconds (default: .brat/sessions.yaml, 30).")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when the session is ended elsewhere.",
)
@click.option(
    "--tty/--no-tty",
    default=None,
    help="Run the command in a pseudo-terminal (default: only when stdin and stdout are terminals).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sessions_run(
    task_ref: str,
    role: str | None,
    session_type: str,
    engine: str,
    worktree: str | None,
    heartbeat_interval: float | None,
    grace: float,
    tty: bool | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND as a session; exits with its status (128+N for signal N)."""
    from ..worker.run import run_command

    t = tracker()
    config = t.ws.config.override(heartbeat_interval=heartbeat_interval)
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty() and not json_wanted()
    code, sid = run_command(
        t,
        _task_id(t, task_ref),
        list(command),
        heartbeat_interval=config.heartbeat_interval,
        grace_s=grace,
        tee="stderr" if json_wanted() else "tee",
        tty=tty,
        role=role,
        session_type=session_type,
        engine=engine,
        worktree=worktree,
    )
    if json_wanted():
        emit({"session_id": sid, "exit_code": code, "session": t.session(sid).to_json()}, "")
    sys.exit(code if 0 <= code <= 255 else EXIT_FAILURE)


@sessions.command(
    "reap",
    epilog=examples("brat sessions reap --dry-run", "brat sessions reap --remote origin --exit-code --json"),
)
@common
@terminal_options
@click.option("--timeout", type=float, help="Seconds without a sign of life before a session is stale.")
@click.option("--spawn-timeout", type=float, help="The same, for sessions that never heartbeated.")
@click.option("--dry-run", is_flag=True, help="Report, write nothing.")
@click.option("--remote", help="Sync with this remote before and after the pass.")
@click.option(
    "--exit-code", is_flag=True, help="Exit 1 when a session was reaped (or would be, with --dry-run)."
)
def sessions_reap(
    timeout: float | None, spawn_timeout: float | None, dry_run: bool, remote: str | None, exit_code: bool
) -> None:
    """Record exits for sessions that are over (stale, crashed, or ended unrecorded)."""
    from ..reaper import reap
    from ..render import table

    ws = workspace()
    config = ws.config.override(timeout=timeout, spawn_timeout=spawn_timeout)
    if remote and not dry_run:
        from ..sync import sync

        sync(ws, remote)
    report = reap(ws, config, dry_run=dry_run)
    if remote and not dry_run and report.reaped:
        from ..sync import sync

        sync(ws, remote)

    def text() -> str:
        head = (
            f"{'would reap' if dry_run else 'reaped'} {len(report.reaped)} of "
            f"{report.checked} sessions; {report.alive} alive"
        )
        if not report.reaped:
            return head
        rows = [[v.session_id, v.task_id, v.exit_reason, v.exit_code, v.why] for v in report.reaped]
        return (
            head + "\n" + table(["SESSION", "TASK", "REASON", "CODE", "WHY"], rows, width=width(), flex=(4,))
        )

    emit(report.to_json(), text)
    if exit_code and report.reaped:
        sys.exit(EXIT_FAILURE)
