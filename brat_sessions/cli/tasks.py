"""`brat task ...`: task issues (grite issues labelled type:task)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..kinds import PRIORITIES, TASK_STATUSES
from .complete import complete_tasks
from .output import colour, common, emit, examples, now, read_workspace, terminal_options, width, workspace

if TYPE_CHECKING:
    from ..issues.projection import Issue


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples('brat task create "Fix the parser"', "brat task list", "brat task show t-20250114-3a2c"),
)
@common
def task() -> None:
    """Task issues (grite issues labelled type:task)."""


@task.command(
    "create",
    epilog=examples(
        'brat task create "Fix the parser" --body "Paths: src/parse.rs" --priority P1',
        'T=$(brat task create "Review" --status needs-review --json | jq -r .data.task_id)',
    ),
)
@common
@click.argument("title")
@click.option("--body", default="", help="Issue body (Paths:, Constraints:, Acceptance:, Notes: lines).")
@click.option("--convoy", help="Convoy id (c-YYYYMMDD-xxxx).")
@click.option("--status", default="queued", show_default=True, type=click.Choice(TASK_STATUSES))
@click.option("--priority", type=click.Choice(PRIORITIES))
def task_create(title: str, body: str, convoy: str | None, status: str, priority: str | None) -> None:
    """Create a task issue with a fresh task id; prints the task id and the grite issue id."""
    from ..issues.tasks import create_task

    issue = create_task(workspace(), title, body, convoy, status, priority)
    emit(
        {"task_id": issue.task_id, "grite_issue_id": issue.issue_id, "task": issue.to_json()},
        f"{issue.task_id} {issue.issue_id}",
    )


@task.command("list", epilog=examples("brat task list", "brat task list --status running --json"))
@common
@terminal_options
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks with this status label.")
def task_list(status: str | None) -> None:
    """List task issues, with the state of each one's newest session."""
    from ..render import tasks_table

    index = read_workspace().index
    tasks = [t for t in index.task_issues() if status is None or t.label_value("status") == status]
    newest = index.newest_sessions()

    def with_newest(t: Issue) -> dict[str, Any]:
        found = newest.get(t.issue_id)
        keys = ("status", "exit_reason", "exit_code", "session_type", "session_id")
        return {**t.to_json(), "newest_session": dict(zip(keys, found)) if found else None}

    emit(
        {"tasks": [with_newest(t) for t in tasks], "total": len(tasks)},
        lambda: tasks_table(tasks, newest, width=width()),
    )


@task.command(
    "show",
    epilog=examples(
        "brat task show t-20250114-3a2c",
        "brat task show t-2025011",
        "brat task show 2f77e2   # a grite issue id prefix",
    ),
)
@common
@terminal_options
@click.argument("task_ref", metavar="TASK", shell_complete=complete_tasks)
def task_show(task_ref: str) -> None:
    """Show a task and its sessions (TASK: a task id, a grite issue id, or a unique prefix)."""
    from ..render import task_detail

    ws = read_workspace()
    issue = ws.index.resolve_task(task_ref)
    sessions = [ws.with_lease(s) for s in ws.index.sessions(True, issue.issue_id)]
    bare = ws.index.unreadable(issue.issue_id)  # (never hidden: as in `sessions list --all`)
    at = now()
    stale = int((ws.config.effective_timeout + ws.config.clock_skew) * 1000)  # (as `sessions list`)
    emit(
        {"task": issue.to_json(), "sessions": [s.to_json(at) for s in sessions], "unreadable": bare},
        lambda: task_detail(
            issue, sessions, at, width=width(), colour=colour(), stale_after_ms=stale, bare=bare
        ),
    )
