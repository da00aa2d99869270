"""Plain-text rendering of sessions, tasks and reports for people."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from .issues.projection import Issue
    from .sessions.model import Session
    from .sessions.projection import BlockRecord


# C0 and C1 controls, DEL, line and paragraph separators, bidi and zero-width format
# characters: anything that could move the cursor, end a line or reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(m: re.Match[str]) -> str:
    ch = m.group(0)
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def safe(value: object) -> str:
    """Text from the log as a terminal may show it: control characters made visible
    (`\\x1b`, `\\n`, ...), so no value can change the screen or add a line to a table."""
    text = "-" if value is None else str(value)
    return _UNSAFE.sub(_visible, text)


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
    """A time for people; any integer is shown, however far out of range."""
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return f"{ts} ms (out of range)"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[safe(c) for c in r] for r in rows]
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


def _fields(pairs: Sequence[tuple[str, object]]) -> list[str]:
    return [f"{name:<12} {safe(value)}" for name, value in pairs]


def session_detail(s: Session, history: list[BlockRecord], now: int) -> str:
    beat = (f"{when(s.last_heartbeat_ts)} ({age(s.heartbeat_age_ms(now))} ago)"
            if s.last_heartbeat_ts is not None else "never")
    lines = _fields([("session", s.session_id), ("task", s.task_id), ("grite issue", s.grite_issue_id),
                     ("role/type", f"{s.role}/{s.session_type}"), ("engine", s.engine),
                     ("state", s.status), ("worktree", s.worktree or "(main)"), ("host", s.host),
                     ("pid", s.pid), ("started", when(s.started_ts)), ("heartbeat", beat)])
    if s.future_ts is not None:
        lines.append(f"{'warning':<12} a time in the future ({when(s.future_ts)}) is ignored")
    if s.exited:
        lines += _fields([("exit", f"{s.exit_reason} (code {s.exit_code})"),
                          ("output", s.last_output_ref)])
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
    lines = _fields([("task", t.task_id), ("grite issue", t.issue_id), ("title", t.title),
                     ("state", t.state), ("labels", ", ".join(t.labels)),
                     ("created", when(t.created_ts))])
    if t.body:
        lines += [""] + [safe(line) for line in t.body.split("\n")]
    lines += ["", sessions_table(sessions, now)]
    return "\n".join(lines)
