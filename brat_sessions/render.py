"""Plain-text rendering of sessions, tasks and reports for people."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from .issues.projection import Issue
    from .sessions.model import Session
    from .sessions.projection import BlockRecord


def age(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = ms // 1000
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def sessions_table(sessions: list[Session], now: int) -> str:
    if not sessions:
        return "no sessions"
    rows = []
    for s in sessions:
        state = s.status if not s.exited else f"exit({s.exit_reason}:{s.exit_code})"
        rows.append([s.session_id, s.task_id or s.grite_issue_id[:12], f"{s.role}/{s.session_type}",
                     s.engine, state, s.pid, age(s.heartbeat_age_ms(now))])
    return table(["SESSION", "TASK", "ROLE/TYPE", "ENGINE", "STATE", "PID", "HEARTBEAT"], rows)


def session_detail(s: Session, history: list[BlockRecord], now: int) -> str:
    lines = [f"session      {s.session_id}", f"task         {s.task_id or '-'}",
             f"grite issue  {s.grite_issue_id}", f"role/type    {s.role}/{s.session_type}",
             f"engine       {s.engine}", f"state        {s.status}",
             f"worktree     {s.worktree or '(main)'}", f"host         {s.host or '-'}",
             f"pid          {s.pid if s.pid is not None else '-'}",
             f"started      {when(s.started_ts)}",
             f"heartbeat    {when(s.last_heartbeat_ts)} ({age(s.heartbeat_age_ms(now))} ago)"]
    if s.exited:
        lines += [f"exit         {s.exit_reason} (code {s.exit_code})",
                  f"output       {s.last_output_ref or '-'}"]
    if s.conflicts:
        lines.append(f"conflicts    {s.conflicts} block(s) on other issues ignored (brat sessions doctor)")
    lines += ["", "history:"]
    rows = [[when(b.ts), b.actor[:8], b.fields.get("state"), b.fields.get("pid"),
             b.fields.get("exit_code"), b.fields.get("exit_reason"),
             "" if b.issue_id == s.grite_issue_id else "ignored: other issue"] for b in history]
    lines.append(table(["TIME", "ACTOR", "STATE", "PID", "CODE", "REASON", ""], rows))
    return "\n".join(lines)


def tasks_table(tasks: list[Issue]) -> str:
    if not tasks:
        return "no tasks"
    rows = [[t.task_id, t.label_value("status"), t.label_value("session"), t.label_value("convoy"),
             t.title[:60]] for t in tasks]
    return table(["TASK", "STATUS", "SESSION", "CONVOY", "TITLE"], rows)


def task_detail(t: Issue, sessions: list[Session], now: int) -> str:
    lines = [f"task         {t.task_id}", f"grite issue  {t.issue_id}", f"title        {t.title}",
             f"state        {t.state}", f"labels       {', '.join(t.labels)}",
             f"created      {when(t.created_ts)}"]
    if t.body:
        lines += ["", t.body]
    lines += ["", sessions_table(sessions, now)]
    return "\n".join(lines)
