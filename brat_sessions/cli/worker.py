"""`brat sessions ...` that write: start, heartbeat, transition, exit, stop, run, reap."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import click

from ..errors import EXIT_FAILURE, BadInput, NotFound
from ..kinds import EXIT_REASONS, ROLES, SESSION_TYPES, STOP_REASONS
from .complete import complete_sessions, complete_tasks
from .output import (
    NON_EMPTY,
    common,
    emit,
    examples,
    json_wanted,
    now,
    seconds,
    terminal_options,
    tracker,
    warn,
    width,
    workspace,
)
from .sessions import resolve, sessions

if TYPE_CHECKING:
    from ..kinds import State, StopReason
    from ..sessions.model import Session
    from ..worker.api import Tracker

SESSION_ARG = click.argument("session_ref", metavar="SESSION", shell_complete=complete_sessions)


def _command_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a supervised command (`run`, and `resume` with a command)."""
    tty = click.option(
        "--tty/--no-tty",
        default=None,
        help="Run the command in a pseudo-terminal (default: only when stdin and stdout are terminals).",
    )
    grace = click.option(
        "--grace",
        **seconds(0),
        default=10.0,
        show_default=True,
        help="Seconds between SIGTERM and SIGKILL when the session is ended elsewhere.",
    )
    return grace(tty(fn))


def _tty_wanted(tty: bool | None) -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and not json_wanted() if tty is None else tty


def _start_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--task",
            "task_ref",
            envvar="BRAT_TASK_ID",
            shell_complete=complete_tasks,
            help="Task id, grite issue id, or a unique prefix (default: $BRAT_TASK_ID, "
            "set by `brat sessions run` for its command).",
        ),
        click.option("--role", type=click.Choice(ROLES), help="Default: witness for polecat, user for crew."),
        click.option(
            "--type", "session_type", type=click.Choice(SESSION_TYPES), default="polecat", show_default=True
        ),
        click.option("--engine", default="shell", show_default=True),
        click.option(
            "--worktree",
            help="Default: this worktree, relative to the main one (absolute when it lies outside it).",
        ),
        click.option(
            "--parent",
            "parent_ref",
            envvar="BRAT_SESSION_ID",
            shell_complete=complete_sessions,
            help="The parent session (default: $BRAT_SESSION_ID, set by `brat sessions "
            "run` for its command, so nested sessions link by themselves).",
        ),
        click.option(
            "--budget-tokens",
            type=click.IntRange(min=0),
            help="Token budget of the session and its descendants (`run` stops its command past it).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _announce(session: Session) -> None:
    """On a terminal, say which session a `run` records (as docker prints a container id)."""
    if sys.stderr.isatty() and not json_wanted():
        warn(f"session {session.session_id} on {session.task_id or session.grite_issue_id}")


def _start_kwargs(t: Tracker, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The task's issue id and the keyword arguments of `Tracker.start` from the options."""
    if not opts.get("task_ref"):
        raise BadInput("--task is required (or run inside `brat sessions run`, which sets BRAT_TASK_ID)")
    index = t.ws.fresh_index()
    parent = opts.get("parent_ref")
    if parent:
        try:
            parent = index.resolve_session(parent)
        except (NotFound, BadInput):
            source = click.get_current_context().get_parameter_source("parent_ref")
            if source != click.core.ParameterSource.ENVIRONMENT:
                raise
            # $BRAT_SESSION_ID from a `run` in another repository: not a parent here
            warn(
                f"warning: BRAT_SESSION_ID={parent[:80]} is not a session of this repository; "
                "starting without a parent"
            )
            parent = None
    kwargs = {
        "role": opts["role"],
        "session_type": opts["session_type"],
        "engine": opts["engine"],
        "worktree": opts["worktree"],
        "budget_tokens": opts["budget_tokens"],
        "parent": parent,
    }
    task_ref = opts["task_ref"]
    from_environment = click.get_current_context().get_parameter_source("task_ref")
    if from_environment == click.core.ParameterSource.ENVIRONMENT:
        # the issue `run` named beside the task id (unique, where a task id may name two
        # issues after a sync), while $BRAT_TASK_ID still holds the id `run` set with it
        issue = index.issue(os.environ.get("BRAT_GRITE_ISSUE_ID", "").lower())
        if issue is not None and issue.task_id == task_ref:
            task_ref = issue.issue_id
    return index.resolve_task(task_ref).issue_id, kwargs


@sessions.command(
    "start",
    epilog=examples(
        "S=$(brat sessions start --task t-20250114-3a2c --engine shell --pid $$)",
        "brat sessions start --task t-20250114-3a2c --type crew --state running --json",
        "brat sessions start --task t-2025 --parent 7b3d --budget-tokens 200000",
    ),
)
@common
@_start_options
@click.option(
    "--pid",
    type=int,
    help="The worker's process id. A process running here is adopted (`stop` may signal "
    "it, the reaper may call it a crash); any other pid is only recorded, with a warning.",
)
@click.option(
    "--state", type=click.Choice(["spawned", "ready", "running"]), default="spawned", show_default=True
)
def sessions_start(pid: int | None, state: str, **opts: Any) -> None:
    """Start a session on a task; prints its id."""
    t = tracker()
    task, kwargs = _start_kwargs(t, opts)
    s = t.start(task, pid=pid, state=cast("State", state), **kwargs)
    if pid is not None and not t.adopted(s.session_id):
        why = "pid 1 (init) is never adopted" if pid == 1 else f"no process {pid} runs on this machine"
        warn(f"warning: {why}: recorded, not adopted; `brat sessions stop` will not signal it")
    emit({"session_id": s.session_id, "session": s.to_json(now())}, s.session_id)


@sessions.command("heartbeat", epilog=examples("brat sessions heartbeat $S || exit  # 4: ended elsewhere"))
@common
@SESSION_ARG
def sessions_heartbeat(session_ref: str) -> None:
    """Renew the session's lease (no commit); exit code 4 once the session has exited."""
    t = tracker()
    sid = resolve(t.ws, session_ref)
    from ..render import when

    ts = t.heartbeat(sid)
    emit({"session_id": sid, "last_heartbeat_ts": ts}, f"{sid} heartbeat at {when(ts)}")


@sessions.command(
    "transition", epilog=examples("brat sessions transition $S ready", "brat sessions transition $S running")
)
@common
@SESSION_ARG
@click.argument("state", type=click.Choice(["spawned", "ready", "running", "handoff"]), metavar="STATE")
@click.option("--force", is_flag=True, help="Skip the state machine check.")
def sessions_transition(session_ref: str, state: str, force: bool) -> None:
    """Move a session along spawned -> ready -> running -> handoff (exit: `brat sessions exit`)."""
    t = tracker()
    s = t.transition(resolve(t.ws, session_ref), state, force=force)  # type: ignore[arg-type]
    emit({"session": s.to_json(now())}, f"{s.session_id} {s.status}")


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
        {"session": s.to_json(now())},
        f"{s.session_id} exit {s.exit_reason} {s.exit_code} {s.last_output_ref or ''}".rstrip(),
    )


@sessions.command(
    "stop",
    epilog=examples(
        "brat sessions stop 7b3d",
        "brat sessions stop 7b3d --grace 2",
        "brat sessions stop 7b3d --recursive   # and its children",
    ),
)
@common
@SESSION_ARG
@click.option("--reason", default="user-stop", show_default=True, type=click.Choice(STOP_REASONS))
@click.option(
    "--grace",
    **seconds(0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
@click.option("--recursive", "-r", is_flag=True, help="Also stop its live descendants (children first).")
def sessions_stop(session_ref: str, reason: str, grace: float, recursive: bool) -> None:
    """Stop a session: signal its process group if brat started it on this machine, and
    record the exit. Without that local proof no signal is sent (see docs/security.md)."""
    t = tracker()
    sid = resolve(t.ws, session_ref)
    why = cast("StopReason", reason)
    reports = t.stop_tree(sid, why, grace) if recursive else [t.stop_report(sid, why, grace)]
    for report in reports:
        if report.note and not json_wanted():
            warn(f"{report.session.session_id}: {report.note}")
    s = reports[-1].session
    data: dict[str, Any] = {"session": s.to_json(now()), "signalled": reports[-1].signalled}
    if recursive:
        data["stopped"] = [
            {"session_id": r.session.session_id, "signalled": r.signalled}
            for r in reports
            if not r.already_exited
        ]
    emit(
        data,
        "\n".join(
            f"{r.session.session_id} exit {r.session.exit_reason} {r.session.exit_code}"
            for r in reports
            if not r.already_exited
        ),
    )


@sessions.command(
    "phase",
    epilog=examples("brat sessions phase $S planning", "brat sessions phase $S tests --iteration 2 --of 5"),
)
@common
@SESSION_ARG
@click.argument("name")
@click.option("--iteration", type=click.IntRange(min=0), help="The current iteration.")
@click.option("--of", "of", type=click.IntRange(min=0), help="Iterations planned.")
def sessions_phase(session_ref: str, name: str, iteration: int | None, of: int | None) -> None:
    """Record the session's current phase (in its lease: no commit in the log)."""
    t = tracker()
    s = t.phase(resolve(t.ws, session_ref), name, iteration=iteration, of=of)
    from ..render import safe

    done = "?" if iteration is None else iteration
    steps = "" if iteration is None and of is None else f" {done}/{of or '?'}"
    emit({"session": s.to_json(now())}, f"{s.session_id} {safe(s.phase)}{steps}")


@sessions.command(
    "usage",
    epilog=examples(
        "brat sessions usage $S --model gpt-5 --input 1200 --output 300 --cost 0.0041",
        "brat sessions usage $S --model claude-sonnet --input 9000 --output 800 --cache-read 6000 "
        "--source subagent",
    ),
)
@common
@SESSION_ARG
@click.option("--model", required=True, help="The model that was called.")
@click.option("--input", "input_tokens", type=click.IntRange(min=0), required=True, help="Input tokens.")
@click.option("--output", "output_tokens", type=click.IntRange(min=0), required=True, help="Output tokens.")
@click.option("--cache-read", type=click.IntRange(min=0), default=0, help="Tokens read from a cache.")
@click.option("--cost", type=click.FloatRange(min=0), help="Cost of the call in USD.")
@click.option(
    "--source", default="main", show_default=True, help="What made the call: main, subagent, compaction, ..."
)
def sessions_usage(
    session_ref: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cost: float | None,
    source: str,
) -> None:
    """Add one LLM call to the session's usage ledger (in its lease: no commit in the log)."""
    from ..render import counted, money

    t = tracker()
    sid = resolve(t.ws, session_ref)
    total = t.usage(
        sid,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cost_usd=cost,
        source=source,
    )
    emit(
        {"session_id": sid, "usage": total},
        f"{sid} {counted(total['calls'], 'call')}, {total['input_tokens']} in / "
        f"{total['output_tokens']} out, {money(total['cost_usd'])}",
    )


@sessions.command(
    "resume",
    # everything after SESSION is the command (options come before SESSION), as for `run`
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=examples("brat sessions resume 7b3d", "brat sessions resume 7b3d -- codex exec 'go on'"),
)
@common
@SESSION_ARG
@click.option(
    "--heartbeat-interval", **seconds(0, above=True), help="With a command: seconds between heartbeats."
)
@_command_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def sessions_resume(
    session_ref: str,
    heartbeat_interval: float | None,
    grace: float,
    tty: bool | None,
    command: tuple[str, ...],
) -> None:
    """Start a new session for the same task, linked by `resumed_from` (exit 4 while the
    original is live); with `-- CMD`, run CMD in it like `brat sessions run`."""
    if command[:1] == ("--",):  # `resume SESSION -- CMD`: the `--` only ends brat's options
        command = command[1:]
    elif command and command[0].startswith("-"):  # (`resume S --json -- CMD` would run `--json`)
        raise BadInput(
            f"{command[0]!r} after SESSION: brat's options go before SESSION, and the command "
            "after it (brat sessions resume [OPTIONS] SESSION [--] CMD)"
        )
    t = tracker()
    sid = resolve(t.ws, session_ref)
    if not command:
        s, warning = t.resume(sid)
        if warning:
            warn(f"warning: {warning}")
        emit({"session_id": s.session_id, "session": s.to_json(now()), "warning": warning}, s.session_id)
        return
    from ..worker.run import run_command

    task, options, warning = t.resume_plan(sid)  # refuses, with the reason, while it is live
    if warning:
        warn(f"warning: {warning}")
    config = t.ws.config.override(heartbeat_interval=heartbeat_interval)
    tty = _tty_wanted(tty)
    code, new = run_command(
        t,
        task,
        list(command),
        heartbeat_interval=config.heartbeat_interval,
        grace_s=grace,
        tee="stderr" if json_wanted() else "tee",
        tty=tty,
        **options,
    )
    if json_wanted():
        emit(
            {
                "session_id": new,
                "exit_code": code,
                "session": t.session(new).to_json(now()),
                "warning": warning,
            },
            "",
        )
    sys.exit(code if 0 <= code <= 255 else EXIT_FAILURE)


@sessions.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=examples(
        "brat sessions run --task t-20250114-3a2c --engine codex -- codex exec 'fix it'",
        "brat sessions run --task t-2025 --tty -- claude",
        "brat sessions run --task t-2025 --budget-tokens 500000 -- ./agent",
        "brat sessions run --task t-2025 --json -- make test 2>test.log",
    ),
)
@common
@_start_options
@click.option(
    "--heartbeat-interval", **seconds(0, above=True), help="Seconds (default: .brat/sessions.yaml, 30)."
)
@_command_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sessions_run(
    heartbeat_interval: float | None, grace: float, tty: bool | None, command: tuple[str, ...], **opts: Any
) -> None:
    """Run COMMAND as a session; exits with its status (128+N for signal N)."""
    from ..worker.run import run_command

    t = tracker()
    task, kwargs = _start_kwargs(t, opts)
    config = t.ws.config.override(heartbeat_interval=heartbeat_interval)
    tty = _tty_wanted(tty)
    code, sid = run_command(
        t,
        task,
        list(command),
        heartbeat_interval=config.heartbeat_interval,
        grace_s=grace,
        tee="stderr" if json_wanted() else "tee",
        tty=tty,
        on_start=_announce,
        **kwargs,
    )
    if json_wanted():
        emit({"session_id": sid, "exit_code": code, "session": t.session(sid).to_json(now())}, "")
    sys.exit(code if 0 <= code <= 255 else EXIT_FAILURE)


@sessions.command(
    "reap",
    epilog=examples("brat sessions reap --dry-run", "brat sessions reap --remote origin --exit-code --json"),
)
@common
@terminal_options
@click.option("--timeout", **seconds(0), help="Seconds without a sign of life before a session is stale.")
@click.option("--spawn-timeout", **seconds(0), help="The same, for sessions that never heartbeated.")
@click.option("--dry-run", is_flag=True, help="Report, write nothing.")
@click.option("--remote", help="Sync with this remote before and after the pass.", **NON_EMPTY)
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

        ws.actor  # noqa: B018 (a bad BRAT_ACTOR: exit 2 before anything is fetched)

        sync(ws, remote)
    report = reap(ws, config, dry_run=dry_run)
    if remote and not dry_run and report.reaped:
        from ..sync import sync

        report.drop_raced(sync(ws, remote).exits_dropped)

    def text() -> str:
        head = (
            f"{'would reap' if dry_run else 'reaped'} {len(report.reaped)} of "
            f"{report.checked} sessions; {report.alive} alive"
            + (f"; {len(report.raced)} reaped first by another reaper" if report.raced else "")
            + (f"; stopped {len(report.stopped)} command(s) run started here" if report.stopped else "")
        )
        if not report.reaped:
            return head
        rows = [[v.session_id, v.task_id, v.exit_reason, v.exit_code, v.why] for v in report.reaped]
        return (
            head + "\n" + table(["SESSION", "TASK", "REASON", "CODE", "WHY"], rows, width=width(), flex=(4,))
        )

    emit(report.to_json(), text)
    for sid, why in report.unwritable.items():
        warn(f"session {sid} is over, but its exit block cannot be written: {why}")
    if exit_code and report.reaped:
        sys.exit(EXIT_FAILURE)
