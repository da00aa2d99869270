"""`brat sessions ...` that read: list (and --watch), show, log, doctor."""

from __future__ import annotations

import sys
import time
from datetime import UTC
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_FAILURE, BadInput, BratError, EnvironmentProblem, NotFound
from ..kinds import ROLES, SESSION_TYPES, STATES
from ..sessions.model import Session
from .complete import complete_sessions, complete_tasks
from .output import (
    NON_EMPTY,
    colour,
    common,
    emit,
    examples,
    json_wanted,
    now,
    read_workspace,
    seconds,
    stdout_is_terminal,
    terminal_options,
    tracker,
    width,
    workspace,
)
from .plain import envelope

if TYPE_CHECKING:
    from ..workspace import Workspace

SORT_KEYS = ("started", "heartbeat", "id", "task", "state")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "brat sessions list                  # the live sessions",
        "brat sessions list --all --task t-20250114-3a2c",
        "brat sessions run --task t-20250114-3a2c -- codex exec 'fix it'",
        "brat sessions reap                  # CI: exits for stale or crashed sessions",
    ),
)
@common
def sessions() -> None:
    """Work sessions (`brat session` works too)."""


def resolve(ws: Workspace, ref: str) -> str:
    """A full session id for `ref`: an id, a unique prefix, or a unique prefix of its hex part."""
    return ws.fresh_index().resolve_session(ref)


def _sorted(found: list[Session], key: str) -> list[Session]:
    keys = {
        "started": lambda s: (s.started_ts, s.session_id),
        "heartbeat": lambda s: (s.last_heartbeat_ts or 0, s.session_id),
        "id": lambda s: s.session_id,
        "task": lambda s: (s.task_id or "", s.started_ts),
        "state": lambda s: (s.status, s.started_ts),
    }
    return sorted(found, key=keys[key])


@sessions.command(
    "list",
    epilog=examples(
        "brat sessions list                     # live sessions",
        "brat sessions list --all --limit 20 --sort heartbeat",
        "brat sessions list --task t-20250114-3a2c --type crew",
        "brat sessions list --watch             # redraw on every change (Ctrl-C ends)",
    ),
)
@common
@terminal_options
@click.option("--all", "include_all", is_flag=True, help="Include exited sessions.")
@click.option(
    "--task",
    "task_ref",
    shell_complete=complete_tasks,
    help="Only this task (task id, grite issue id, or a unique prefix).",
    **NON_EMPTY,
)
@click.option("--status", type=click.Choice(STATES))
@click.option("--role", type=click.Choice(ROLES))
@click.option("--type", "session_type", type=click.Choice(SESSION_TYPES))
@click.option(
    "--parent",
    "parent_ref",
    shell_complete=complete_sessions,
    help="Only the children of this session.",
    **NON_EMPTY,
)
@click.option(
    "--root",
    "root_ref",
    shell_complete=complete_sessions,
    help="Only the sessions of this session's tree (the root itself included).",
    **NON_EMPTY,
)
@click.option("--sort", "sort_key", type=click.Choice(SORT_KEYS), default="started", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="At most N sessions (the last N by --sort).")
@click.option("--watch", "-w", is_flag=True, help="Redraw whenever the log or a heartbeat changes.")
@click.option(
    "--interval",
    **seconds(0.1),
    default=2.0,
    show_default=True,
    help="Seconds between looks, with --watch.",
)
def sessions_list(
    include_all: bool,
    task_ref: str | None,
    status: str | None,
    role: str | None,
    session_type: str | None,
    parent_ref: str | None,
    root_ref: str | None,
    sort_key: str,
    limit: int | None,
    watch: bool,
    interval: float,
) -> None:
    """Who is working on what: live sessions (every session with --all)."""
    source = click.get_current_context().get_parameter_source("interval")
    if not watch and source is click.core.ParameterSource.COMMANDLINE:
        raise BadInput("--interval goes with --watch")
    ws = read_workspace()
    issue_id = ws.index.resolve_task(task_ref).issue_id if task_ref else None
    parent = resolve(ws, parent_ref) if parent_ref else None
    root = resolve(ws, root_ref) if root_ref else None

    def look() -> tuple[list[Session], int]:
        current = read_workspace() if watch else ws  # each look sees new blocks and heartbeats
        found = current.sessions(include_all or status == "exit")
        found = [
            s
            for s in found
            if (issue_id is None or s.grite_issue_id == issue_id)
            and (status is None or s.status == status)
            and (role is None or s.role == role)
            and (session_type is None or s.session_type == session_type)
            and (parent is None or s.parent_session_id == parent)
            and (root is None or s.root_session_id == root or s.session_id == root)
        ]
        found = _sorted(found, sort_key)
        return (found[-limit:] if limit else found), now()

    def text(found: list[Session], at: int) -> str:
        from ..render import sessions_table

        stale = int((ws.config.effective_timeout + ws.config.clock_skew) * 1000)
        return sessions_table(found, at, width=width(), colour=colour(), stale_after_ms=stale, bare=bare)

    plain = not (status or role or session_type or parent or root)
    if not watch and json_wanted() and include_all and plain and sort_key == "started":
        from .plain import all_list_json, write_pieces

        write_pieces(all_list_json(ws, issue_id, limit))  # from stored text: no object per session
        return
    # sessions whose blocks cannot be read are listed as bare rows, never hidden
    bare = ws.fresh_index().unreadable(issue_id) if include_all and plain else []
    if watch:
        _watch(look, text, interval)
        return
    found, at = look()
    data: dict[str, Any] = {"sessions": [s.to_json(at) for s in found], "total": len(found)}
    if include_all and plain:  # (always there with --all: [] when none)
        data["unreadable"] = bare
    emit(data, lambda: text(found, at))


def _watch(look, text, interval: float) -> None:  # type: ignore[no-untyped-def]
    """Redraw (a terminal) or print again (a pipe, JSON: one envelope a line) on each change
    (no ages in the JSON, which would change every time)."""
    last = None
    try:
        while True:
            found, at = look()
            shown = (
                text(found, at)
                if not json_wanted()
                else envelope({"sessions": [s.to_json() for s in found], "total": len(found)})
            )
            if shown != last:
                if stdout_is_terminal() and not json_wanted():
                    click.echo("\x1b[H\x1b[2J", nl=False)  # home, clear: like `watch`
                    click.echo(f"every {interval:g}s: brat sessions list    {time.strftime('%H:%M:%S')}\n")
                click.echo(shown)
                last = shown
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@sessions.command(
    "show",
    epilog=examples(
        "brat sessions show s-20250114-7b3d",
        "brat sessions show 7b3d",
        "brat sessions show s-20250114-7b --json",
    ),
)
@common
@terminal_options
@click.argument("session_ref", metavar="SESSION", shell_complete=complete_sessions)
def sessions_show(session_ref: str) -> None:
    """A session and its history (every block, oldest first). SESSION may be a unique prefix."""
    from ..render import safe, session_detail

    ws = read_workspace()
    sid = resolve(ws, session_ref)
    bare = [b for b in ws.fresh_index().unreadable() if b["session_id"] == sid]
    if bare:
        emit(
            {"session": bare[0], "history": []},
            lambda: "\n".join(f"{k:<12} {safe(v)}" for k, v in bare[0].items()),
        )
        return
    session = ws.session(sid)
    history = ws.fresh_index().history(sid)
    at = now()
    emit(
        {"session": session.to_json(at), "history": [b.to_json() for b in history]},
        lambda: session_detail(session, history, at),
    )


@sessions.command("log", epilog=examples("brat sessions log 7b3d --tail 50", "brat sessions log 7b3d -f"))
@common
@click.argument("session_ref", metavar="SESSION", shell_complete=complete_sessions)
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the session runs.")
def sessions_log(session_ref: str, tail: int | None, follow: bool) -> None:
    """Print a session's output as it is (the live log while it runs, the stored bytes
    verified against their sha256 once it has exited). The one command that prints text
    from the log raw, like `docker logs`."""
    from ..sessions.output_view import follow_log, read_log, wait_for_log

    if follow and json_wanted():
        raise BadInput("--follow prints the output as it comes; it does not go with --json")
    try:
        t = tracker()
        sid = resolve(t.ws, session_ref)
        view = wait_for_log(t, sid) if follow else read_log(t, sid)
        data = view.data if tail is None else _last_lines(view.data, tail)
        if json_wanted():
            try:
                text, exact = data.decode("utf-8"), None
            except UnicodeDecodeError:  # (JSON holds text: the bytes themselves go as base64)
                import base64

                text, exact = data.decode("utf-8", "replace"), base64.b64encode(data).decode("ascii")
            emit(
                {
                    "session_id": sid,
                    "source": view.source,
                    "output_ref": view.output_ref,
                    "text": text,
                    "base64": exact,
                },
                "",
            )
            return
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if follow and view.source == "live":
            follow_log(t, sid, len(view.data), sys.stdout.buffer)
    except KeyboardInterrupt:
        if not follow:
            raise
        # (as `list --watch`: ending a follow is no failure)


def _last_lines(data: bytes, n: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""


@sessions.command(
    "doctor", epilog=examples("brat sessions doctor", "brat sessions doctor --exit-code --json")
)
@common
@terminal_options
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when a problem is found (for CI); default: exit 0 after reporting.",
)
def sessions_doctor(exit_code: bool) -> None:
    """Report what the log holds that could not be used: corrupt commits, malformed blocks,
    invalid fields, conflicts, times in the future, an incomplete (shallow) log."""
    from ..render import table

    problems = workspace().problems()  # (not the warm path's: it may read commits again)
    emit(
        {"problems": problems, "total": len(problems)},
        lambda: (
            "no problems"
            if not problems
            else table(
                ["KIND", "MESSAGE"], [[p["kind"], p["message"]] for p in problems], width=width(), flex=(1,)
            )
        ),
    )
    if exit_code and problems:
        sys.exit(EXIT_FAILURE)


@sessions.command(
    "tree",
    epilog=examples(
        "brat sessions tree               # every tree with a live session",
        "brat sessions tree 7b3d          # one session and all below it",
        "brat sessions tree --task t-2025 --all",
    ),
)
@common
@terminal_options
@click.argument("session_ref", metavar="[SESSION]", required=False, shell_complete=complete_sessions)
@click.option(
    "--task",
    "task_ref",
    shell_complete=complete_tasks,
    help="The trees of this task's sessions.",
    **NON_EMPTY,
)
@click.option("--all", "include_all", is_flag=True, help="Also trees whose sessions all exited.")
def sessions_tree(session_ref: str | None, task_ref: str | None, include_all: bool) -> None:
    """Who spawned whom: sessions as trees, with state, duration and usage rolled up
    through each subtree."""
    from ..render import session_tree, walk_trees
    from ..report import subtree_totals
    from ..sessions.usage import usage_json
    from ..worker.lineage import children_of

    ws = read_workspace()
    everything = ws.sessions(include_exited=True)
    by_id = {s.session_id: s for s in everything}
    kids = children_of(everything)
    for group in kids.values():
        group.sort(key=lambda s: (s.started_ts, s.session_id))
    if session_ref:
        if task_ref:
            raise BadInput("give a SESSION or --task, not both")
        roots = [by_id[resolve(ws, session_ref)]]
    else:
        issue_id = ws.index.resolve_task(task_ref).issue_id if task_ref else None
        roots = [s for s in everything if not s.parent_session_id or s.parent_session_id not in by_id]
        if issue_id is not None:
            roots = [s for s in roots if s.grite_issue_id == issue_id]
        if not include_all:
            roots = [r for r in roots if _any_live(r, kids)]
    at = now()
    rollups = subtree_totals(
        {s.session_id: s.parent_session_id for s in everything},
        {s.session_id: dict(s.usage or {}) for s in everything},
    )

    def trees() -> list[dict[str, Any]]:
        """The JSON of each tree, nested as `walk_trees` walks them (at most TREE_DEPTH
        levels: JSON nested deeper than about 500 cannot be written or read by many
        tools, Python's included)."""
        found: list[dict[str, Any]] = []
        nodes: dict[str, dict[str, Any]] = {}
        for s, parent, _last in walk_trees(roots, kids):
            node: dict[str, Any] = {
                "session": s.to_json(at),
                "usage_total": usage_json(rollups[s.session_id]) if rollups.get(s.session_id) else None,
                "children": [],
            }
            (found if parent is None else nodes[parent.session_id]["children"]).append(node)
            nodes[s.session_id] = node
        return found

    emit(
        {"trees": trees()},
        lambda: session_tree(
            roots,
            kids,
            at,
            rollups,
            colour=colour(),
            width=width(),
            stale_after_ms=int((ws.config.effective_timeout + ws.config.clock_skew) * 1000),
        ),
    )


def _any_live(root: Session, kids: dict[str, list[Session]]) -> bool:
    stack, seen = [root], set()
    while stack:
        s = stack.pop()
        if s.session_id in seen:
            continue
        seen.add(s.session_id)
        if not s.exited:
            return True
        stack.extend(kids.get(s.session_id, []))
    return False


def _dicts(ws: Workspace, found: list[Session], at: int, ledgers: bool = False) -> list[dict[str, Any]]:
    """Sessions as the report and timeline read them: JSON, with the task's convoy and, when
    asked, the ledger (the lease's while live, the stored one once exited)."""
    from ..sessions.outputs import read_output
    from ..sessions.usage import stored_ledger

    convoys: dict[str, str | None] = {}
    out = []
    for s in found:
        data = s.to_json(at)
        if s.grite_issue_id not in convoys:
            issue = ws.index.issue(s.grite_issue_id)
            convoys[s.grite_issue_id] = issue.label_value("convoy") if issue else None
        data["convoy_id"] = convoys[s.grite_issue_id]
        if ledgers and data.get("ledger") is None and s.usage_ref:
            try:  # (not in this clone, or not a ledger: counted as "-")
                data["ledger"] = stored_ledger(read_output(ws.repo, s.usage_ref))
            except BratError:
                data["ledger"] = None
        out.append(data)
    return out


def _since(value: str | None, at: int) -> int | None:
    """`--since`: a duration back from now (`90m`, `12h`, `7d`) or a UTC date (`2025-01-14`)."""
    if value is None:
        return None
    import re
    from datetime import datetime

    m = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if m:
        return at - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] * 1000
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise BadInput(
            f"--since takes a duration (90m, 12h, 7d) or a date (2025-01-14), not {value!r}"
        ) from None
    return int(day.timestamp() * 1000)


@sessions.command(
    "report",
    epilog=examples(
        "brat sessions report --by task",
        "brat sessions report --by model --since 7d --json",
        "brat sessions report --by day --since 2025-01-01",
    ),
)
@common
@terminal_options
@click.option(
    "--by",
    type=click.Choice(["task", "convoy", "engine", "model", "day"]),
    default="task",
    show_default=True,
    help="What to group by.",
)
@click.option("--since", help="Only sessions started since: a duration (90m, 12h, 7d) or a date.")
def sessions_report(by: str, since: str | None) -> None:
    """Sessions, wall time, outcomes, tokens and cost, grouped."""
    from ..report import aggregate, report_table, totals

    ws = workspace() if by == "model" else read_workspace()  # ledgers are stored objects
    at = now()
    found = _dicts(ws, ws.sessions(include_exited=True), at, ledgers=by == "model")
    rows = aggregate(found, by, at, _since(since, at))
    total = totals(found, at, _since(since, at))
    emit(
        {"by": by, "rows": rows, "total": total},
        lambda: report_table(rows, width=width(), total=total, ids=by in ("task", "convoy")),
    )


@sessions.command(
    "timeline",
    epilog=examples(
        "brat sessions timeline --task t-20250114-3a2c",
        "brat sessions timeline --since 1d --html sessions.html",
    ),
)
@common
@terminal_options
@click.option(
    "--task", "task_ref", shell_complete=complete_tasks, help="Only this task's sessions.", **NON_EMPTY
)
@click.option("--convoy", help="Only the sessions of this convoy's tasks.", **NON_EMPTY)
@click.option("--since", help="Only sessions started since: a duration (90m, 12h, 7d) or a date.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    help="Write one self-contained HTML file (inline SVG, no scripts, no network).",
)
def sessions_timeline(
    task_ref: str | None, convoy: str | None, since: str | None, html_file: str | None
) -> None:
    """Sessions on a shared time axis: a line and a bar each in the terminal, or an HTML
    picture with a lane per task, bars coloured by outcome and parent-child links."""
    from ..timeline import timeline_html, timeline_text

    ws = read_workspace()
    at = now()
    issue_id = ws.index.resolve_task(task_ref).issue_id if task_ref else None
    start = _since(since, at)
    found = [
        s
        for s in ws.sessions(include_exited=True)
        if (issue_id is None or s.grite_issue_id == issue_id) and (start is None or s.started_ts >= start)
    ]
    data = _dicts(ws, found, at)
    if convoy is not None:
        if not any(t.label_value("convoy") == convoy for t in ws.index.task_issues()):
            raise NotFound(f"no task in convoy {convoy!r}")  # (as an unknown --task)
        data = [d for d in data if d.get("convoy_id") == convoy]
    if html_file:
        from pathlib import Path

        try:
            Path(html_file).write_text(timeline_html(data, at), encoding="utf-8")
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {html_file}: {exc.strerror}") from None
        emit({"html": html_file, "sessions": len(data)}, f"wrote {html_file} ({len(data)} sessions)")
        return
    emit(
        {"sessions": data, "total": len(data)},
        lambda: timeline_text(data, at, width=width() or 120, colour=colour()),
    )
