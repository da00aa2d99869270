"""The `brat` command: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import click

from .errors import EXIT_BAD_ARGS, EXIT_FAILURE, BratError

SCHEMA_VERSION = 1


# output ---------------------------------------------------------------------
def _json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return bool(ctx.find_root().meta.get("json"))
    # after click has finished (an error on the way out): read argv, up to a `--`
    # (what follows it is the command of `brat sessions run`, not ours)
    args = sys.argv[1:]
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def emit(data: Any, text: str | Callable[[], str]) -> None:
    """Print `data` as the JSON envelope, or the text for people."""
    if _json_wanted():
        click.echo(json.dumps({"schema_version": SCHEMA_VERSION, "ok": True, "data": data}))
    else:
        click.echo(text() if callable(text) else text)


def fail(code: str, message: str, exit_code: int) -> None:
    if _json_wanted():
        click.echo(json.dumps({"schema_version": SCHEMA_VERSION, "ok": False,
                               "error": {"code": code, "message": message}}), err=True)
    else:
        warn(message)
    sys.exit(exit_code)


def warn(message: str) -> None:
    """One line on stderr; text from the log in it is shown with controls made visible."""
    from .render import safe
    click.echo(f"brat: {safe(message)}", err=True)


# options every command takes --------------------------------------------------
def _set_json(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta["json"] = True


def _set_dir(ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta["dir"] = value


def common(fn: Callable) -> Callable:
    fn = click.option("--json", "json_", is_flag=True, expose_value=False, callback=_set_json,
                      is_eager=True, help="Print the JSON envelope.")(fn)
    fn = click.option("-C", "directory", metavar="PATH", expose_value=False, callback=_set_dir,
                      is_eager=True, help="Run as if started in PATH.")(fn)
    return fn


def _dir() -> str | None:
    return click.get_current_context().find_root().meta.get("dir")


def workspace():
    from .workspace import Workspace
    return Workspace(_dir())


def tracker():
    from .worker.api import Tracker
    return Tracker(_dir())


def _now() -> int:
    from .clock import now_ms
    return now_ms()


# the tree -------------------------------------------------------------------
class BratGroup(click.Group):
    """The root group: `brat session ...` is accepted for `brat sessions ...`."""

    aliases = {"session": "sessions"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


@click.group(cls=BratGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(package_name="brat_sessions", prog_name="brat")
def cli() -> None:
    """brat: work sessions of coding agents and people, tracked in git (grite's refs/grite/wal)."""


@cli.command()
@common
def init() -> None:
    """Make sure the repository has a grite actor (BRAT_ACTOR overrides)."""
    ws = workspace()
    actor = ws.actor
    emit({"actor_id": actor, "repo": str(ws.ctx.common_dir)}, f"actor {actor} in {ws.ctx.common_dir}")


@cli.command()
@common
@click.option("--dir", "target", type=click.Path(file_okay=False), help="Where to make the demo repository.")
def demo(target: str | None) -> None:
    """Make a throwaway repository with tasks and sessions, reap it, and list it."""
    from .demo import run_demo
    result = run_demo(target)
    emit(result["data"], result["text"])


@cli.command("sync")
@common
@click.option("--remote", help="Remote name or URL (default: origin, or the only remote).")
def sync_cmd(remote: str | None) -> None:
    """Fetch, merge and push the log, heartbeat leases and stored outputs."""
    from .sync import sync
    report = sync(workspace(), remote)
    for warning in report.warnings:
        warn(f"warning: {warning}")
    r = report
    emit(report.to_json(), f"synced with {r.remote}: {r.fetched_commits} commits in, "
                           f"{r.reappended_commits} re-appended, {r.pushed_commits} pushed; leases "
                           f"{r.leases_fetched} in / {r.leases_pushed} out; outputs "
                           f"{r.outputs_fetched} in / {r.outputs_pushed} out")


# tasks ------------------------------------------------------------------------
@cli.group()
def task() -> None:
    """Task issues (grite issues labelled type:task)."""


@task.command("create")
@common
@click.argument("title")
@click.option("--body", default="", help="Issue body (Paths:, Constraints:, Acceptance:, Notes: lines).")
@click.option("--convoy", help="Convoy id (c-YYYYMMDD-xxxx).")
@click.option("--status", default="queued", show_default=True,
              type=click.Choice(["queued", "running", "blocked", "needs-review", "merged", "dropped"]))
@click.option("--priority", type=click.Choice(["P0", "P1", "P2"]))
def task_create(title: str, body: str, convoy: str | None, status: str, priority: str | None) -> None:
    """Create a task issue with a fresh task id."""
    from .issues.tasks import create_task
    issue = create_task(workspace(), title, body, convoy, status, priority)
    emit({"task_id": issue.task_id, "grite_issue_id": issue.issue_id, "task": issue.to_json()},
         f"{issue.task_id} {issue.issue_id}")


@task.command("list")
@common
@click.option("--status", help="Only tasks with this status label.")
def task_list(status: str | None) -> None:
    """List task issues."""
    from .render import tasks_table
    tasks = [t for t in workspace().index.task_issues()
             if status is None or t.label_value("status") == status]
    emit({"tasks": [t.to_json() for t in tasks], "total": len(tasks)}, lambda: tasks_table(tasks))


@task.command("show")
@common
@click.argument("task_ref", metavar="TASK")
def task_show(task_ref: str) -> None:
    """Show a task and its sessions."""
    from .render import task_detail
    ws = workspace()
    issue = ws.index.find_task(task_ref)
    sessions = [ws.with_lease(s) for s in ws.index.sessions(True, issue.issue_id)]
    now = _now()
    emit({"task": issue.to_json(), "sessions": [s.to_json(now) for s in sessions]},
         lambda: task_detail(issue, sessions, now))


# sessions ---------------------------------------------------------------------
@click.group()
def sessions() -> None:
    """Work sessions (`brat session` works too)."""


cli.add_command(sessions, "sessions")


@sessions.command("list")
@common
@click.option("--all", "include_all", is_flag=True, help="Include exited sessions.")
@click.option("--task", "task_ref", help="Only this task (task id or grite issue id).")
@click.option("--status", type=click.Choice(["spawned", "ready", "running", "handoff", "exit"]))
@click.option("--role", help="Only this role (mayor, witness, refinery, deacon, user).")
@click.option("--type", "session_type", type=click.Choice(["polecat", "crew"]))
def sessions_list(include_all: bool, task_ref: str | None, status: str | None, role: str | None,
                  session_type: str | None) -> None:
    """Who is working on what: active sessions (all with --all)."""
    ws = workspace()
    issue_id = ws.index.find_task(task_ref).issue_id if task_ref else None
    found = ws.sessions(include_all or status == "exit")
    found = [s for s in found if (issue_id is None or s.grite_issue_id == issue_id)
             and (status is None or s.status == status) and (role is None or s.role == role)
             and (session_type is None or s.session_type == session_type)]
    now = _now()

    def text() -> str:
        from .render import sessions_table
        return sessions_table(found, now)
    emit({"sessions": [s.to_json(now) for s in found], "total": len(found)}, text)


@sessions.command("show")
@common
@click.argument("session_id")
def sessions_show(session_id: str) -> None:
    """A session and its history (every block, oldest first)."""
    from .render import session_detail
    t = tracker()
    session = t.session(session_id)
    history = t.history(session_id)
    now = _now()
    emit({"session": session.to_json(now), "history": [b.to_json() for b in history]},
         lambda: session_detail(session, history, now))


def _start_options(fn: Callable) -> Callable:
    for option in reversed([
        click.option("--task", "task_ref", required=True, help="Task id or grite issue id."),
        click.option("--role", type=click.Choice(["mayor", "witness", "refinery", "deacon", "user"]),
                     help="Default: witness for polecat, user for crew."),
        click.option("--type", "session_type", type=click.Choice(["polecat", "crew"]),
                     default="polecat", show_default=True),
        click.option("--engine", default="shell", show_default=True),
        click.option("--worktree", help="Default: this worktree, relative to the main one."),
    ]):
        fn = option(fn)
    return fn


@sessions.command("start")
@common
@_start_options
@click.option("--pid", type=int, help="The worker's process id.")
@click.option("--state", type=click.Choice(["spawned", "ready", "running"]), default="spawned",
              show_default=True)
def sessions_start(task_ref: str, role: str | None, session_type: str, engine: str,
                   worktree: str | None, pid: int | None, state: str) -> None:
    """Start a session on a task; prints its id."""
    s = tracker().start(task_ref, role=role, session_type=session_type, engine=engine,
                        worktree=worktree, pid=pid, state=state)
    emit({"session_id": s.session_id, "session": s.to_json()}, s.session_id)


@sessions.command("heartbeat")
@common
@click.argument("session_id")
def sessions_heartbeat(session_id: str) -> None:
    """Renew the session's lease (exit code 4 once the session has exited)."""
    ts = tracker().heartbeat(session_id)
    emit({"session_id": session_id, "last_heartbeat_ts": ts}, f"{session_id} {ts}")


@sessions.command("transition")
@common
@click.argument("session_id")
@click.argument("state", type=click.Choice(["spawned", "ready", "running", "handoff"]))
@click.option("--force", is_flag=True, help="Skip the state machine check.")
def sessions_transition(session_id: str, state: str, force: bool) -> None:
    """Move a session along spawned -> ready -> running -> handoff (exit: `brat sessions exit`)."""
    s = tracker().transition(session_id, state, force=force)
    emit({"session": s.to_json()}, f"{session_id} {s.status}")


@sessions.command("exit")
@common
@click.argument("session_id")
@click.option("--code", type=int, required=True, help="Exit code.")
@click.option("--reason", default="completed", show_default=True,
              type=click.Choice(["completed", "signal", "timeout", "crash", "user-stop"]))
@click.option("--output", type=click.Path(dir_okay=False),
              help="Output log to store (default: .grite/logs/<session>.log if present).")
def sessions_exit(session_id: str, code: int, reason: str, output: str | None) -> None:
    """Record a session's exit."""
    s = tracker().exit(session_id, code, reason, output)
    emit({"session": s.to_json()}, f"{session_id} exit {s.exit_reason} {s.exit_code} "
                                   f"{s.last_output_ref or ''}".rstrip())


@sessions.command("stop")
@common
@click.argument("session_id")
@click.option("--reason", default="user-stop", show_default=True,
              type=click.Choice(["user-stop", "timeout", "crash"]))
@click.option("--grace", type=float, default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def sessions_stop(session_id: str, reason: str, grace: float) -> None:
    """Stop a session: signal its process if it runs here, and record the exit."""
    report = tracker().stop_report(session_id, reason, grace)
    s = report.session
    if report.note and not _json_wanted():
        warn(report.note)
    emit({"session": s.to_json(), "signalled": report.signalled},
         f"{session_id} exit {s.exit_reason} {s.exit_code}")


@sessions.command("log")
@common
@click.argument("session_id")
@click.option("--tail", type=int, help="Only the last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the session runs.")
def sessions_log(session_id: str, tail: int | None, follow: bool) -> None:
    """Print a session's output: the live log while it runs, the stored bytes once exited."""
    from .sessions.output_view import follow_log, read_log
    t = tracker()
    view = read_log(t, session_id)
    data = view.data
    if tail is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
    if _json_wanted():
        emit({"session_id": session_id, "source": view.source, "output_ref": view.output_ref,
              "text": data.decode("utf-8", "replace")}, "")
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    if follow and view.source == "live":
        follow_log(t, session_id, len(view.data), sys.stdout.buffer)


@sessions.command("run", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@common
@_start_options
@click.option("--heartbeat-interval", type=float, help="Seconds (default: .brat/sessions.yaml, 30).")
@click.option("--grace", type=float, default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when the session is ended elsewhere.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sessions_run(task_ref: str, role: str | None, session_type: str, engine: str,
                 worktree: str | None, heartbeat_interval: float | None, grace: float,
                 command: tuple[str, ...]) -> None:
    """Run COMMAND as a session; exits with its status (128+N for signal N)."""
    from .config import load_config
    from .worker.run import run_command
    t = tracker()
    config = load_config(t.ws.ctx.config_root).override(heartbeat_interval=heartbeat_interval)
    code, sid = run_command(t, task_ref, list(command), heartbeat_interval=config.heartbeat_interval,
                            grace_s=grace, tee="stderr" if _json_wanted() else "tee", role=role,
                            session_type=session_type, engine=engine, worktree=worktree)
    if _json_wanted():
        emit({"session_id": sid, "exit_code": code, "session": t.session(sid).to_json()}, "")
    sys.exit(code if 0 <= code <= 255 else EXIT_FAILURE)


@sessions.command("reap")
@common
@click.option("--timeout", type=float, help="Seconds without a sign of life before a session is stale.")
@click.option("--spawn-timeout", type=float, help="The same, for sessions that never heartbeated.")
@click.option("--dry-run", is_flag=True, help="Report, write nothing.")
@click.option("--remote", help="Sync with this remote before and after the pass.")
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when a session was reaped (or would be, with --dry-run).")
def sessions_reap(timeout: float | None, spawn_timeout: float | None, dry_run: bool,
                  remote: str | None, exit_code: bool) -> None:
    """Record exits for sessions that are over (stale, crashed, or ended unrecorded)."""
    from .config import load_config
    from .reaper import reap
    from .render import table
    ws = workspace()
    config = load_config(ws.ctx.config_root).override(timeout=timeout, spawn_timeout=spawn_timeout)
    if remote and not dry_run:
        from .sync import sync
        sync(ws, remote)
    report = reap(ws, config, dry_run=dry_run)
    if remote and not dry_run and report.reaped:
        from .sync import sync
        sync(ws, remote)

    def text() -> str:
        head = (f"{'would reap' if dry_run else 'reaped'} {len(report.reaped)} of "
                f"{report.checked} sessions; {report.alive} alive")
        if not report.reaped:
            return head
        rows = [[v.session_id, v.task_id, v.exit_reason, v.exit_code, v.why] for v in report.reaped]
        return head + "\n" + table(["SESSION", "TASK", "REASON", "CODE", "WHY"], rows)
    emit(report.to_json(), text)
    if exit_code and report.reaped:
        sys.exit(EXIT_FAILURE)


@sessions.command("doctor")
@common
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when a problem is found (for CI); default: exit 0 after reporting.")
def sessions_doctor(exit_code: bool) -> None:
    """Report what the log holds that could not be used: corrupt commits, malformed blocks,
    invalid fields, conflicts, times in the future, an incomplete (shallow) log."""
    from .render import table
    problems = workspace().problems()
    emit({"problems": problems, "total": len(problems)},
         lambda: "no problems" if not problems else
         table(["KIND", "MESSAGE"], [[p["kind"], p["message"]] for p in problems]))
    if exit_code and problems:
        sys.exit(EXIT_FAILURE)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one line on stderr and a documented exit code."""
    try:
        cli.main(args=argv, prog_name="brat", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if _json_wanted():
            fail("bad_arguments", exc.format_message(), EXIT_BAD_ARGS)
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("interrupted", "interrupted", 130)
    except BratError as exc:
        fail(exc.code, exc.message, exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", "interrupted", 130)
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:  # the last line of defence: never a traceback for users
        if os.environ.get("BRAT_DEBUG"):
            raise
        fail("internal", f"internal error: {type(exc).__name__}: {exc} (BRAT_DEBUG=1 shows more)",
             EXIT_FAILURE)


if __name__ == "__main__":
    main()
