"""Fold grite events into issues (stored in the index's SQL tables).

Every rule is order-independent and idempotent, so the same events give the
same issues in whatever order a clone saw them: title, body, state, labels and
assignees are last-writer-wins by grite's order (ts, actor, event_id).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ..storage import events as ev_kinds
from ..storage.events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS issues(
  issue_id TEXT PRIMARY KEY, created INTEGER NOT NULL DEFAULT 0,
  created_ts INTEGER, updated_ts INTEGER NOT NULL DEFAULT 0,
  title TEXT, title_key TEXT, body TEXT, body_key TEXT,
  state TEXT, state_key TEXT, task_id TEXT, comments INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS issues_task ON issues(task_id);
CREATE TABLE IF NOT EXISTS members(
  issue_id TEXT, kind TEXT, value TEXT, present INTEGER, key TEXT,
  PRIMARY KEY(issue_id, kind, value));
"""


def order_key(ev: Event) -> str:
    """grite's (ts, actor, event_id) order as a string that sorts the same way."""
    return f"{ev.ts_unix_ms:016x}{ev.actor.hex()}{ev.event_id.hex()}"


@dataclass
class Issue:
    issue_id: str
    title: str
    body: str
    state: str
    labels: list[str]
    assignees: list[str]
    created_ts: int | None
    updated_ts: int
    created: bool
    comments: int = 0
    task_id: str | None = None
    extra: dict = field(default_factory=dict)

    def label_value(self, prefix: str) -> str | None:
        """The value of the first `prefix:value` label."""
        for label in self.labels:
            if label.startswith(prefix + ":"):
                return label[len(prefix) + 1:]
        return None

    def to_json(self) -> dict:
        return {"grite_issue_id": self.issue_id, "task_id": self.task_id, "title": self.title,
                "body": self.body, "state": self.state, "labels": self.labels,
                "assignees": self.assignees, "status": self.label_value("status"),
                "convoy_id": self.label_value("convoy"), "created_ts": self.created_ts,
                "updated_ts": self.updated_ts}


def _lww(db: sqlite3.Connection, iid: str, column: str, value: str, key: str) -> None:
    db.execute(f"UPDATE issues SET {column}=?, {column}_key=? WHERE issue_id=? "
               f"AND ({column}_key IS NULL OR {column}_key < ?)", (value, key, iid, key))


def _member(db: sqlite3.Connection, iid: str, kind: str, value: str, present: bool, key: str) -> None:
    db.execute("INSERT INTO members(issue_id, kind, value, present, key) VALUES(?,?,?,?,?) "
               "ON CONFLICT(issue_id, kind, value) DO UPDATE SET present=excluded.present, "
               "key=excluded.key WHERE excluded.key > members.key",
               (iid, kind, value, int(present), key))


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text in payload")
    return value


def apply_event(db: sqlite3.Connection, ev: Event) -> bool:
    """Fold one event into its issue. True when it may change the issue's labels."""
    iid = ev.issue_id.hex()
    key = order_key(ev)
    p = ev.payload
    kind = ev.kind
    if kind in (ev_kinds.CONTEXT_UPDATED, ev_kinds.PROJECT_CONTEXT_UPDATED):
        return False  # not about issues; kept in the log, unused here
    db.execute("INSERT INTO issues(issue_id, updated_ts) VALUES(?, ?) ON CONFLICT(issue_id) "
               "DO UPDATE SET updated_ts=MAX(updated_ts, excluded.updated_ts)", (iid, ev.ts_unix_ms))
    if kind == ev_kinds.ISSUE_CREATED:
        title, body, labels = _text(p[0]), _text(p[1]), p[2]
        db.execute("UPDATE issues SET created=1, created_ts=MIN(COALESCE(created_ts, ?), ?) "
                   "WHERE issue_id=?", (ev.ts_unix_ms, ev.ts_unix_ms, iid))
        _lww(db, iid, "title", title, key)
        _lww(db, iid, "body", body, key)
        _lww(db, iid, "state", "open", key)
        for label in labels:
            _member(db, iid, "label", _text(label), True, key)
        return True
    if kind == ev_kinds.ISSUE_UPDATED:
        if p[0] is not None:
            _lww(db, iid, "title", _text(p[0]), key)
        if len(p) > 1 and p[1] is not None:
            _lww(db, iid, "body", _text(p[1]), key)
    elif kind in (ev_kinds.LABEL_ADDED, ev_kinds.LABEL_REMOVED):
        _member(db, iid, "label", _text(p[0]), kind == ev_kinds.LABEL_ADDED, key)
        return True
    elif kind in (ev_kinds.ASSIGNEE_ADDED, ev_kinds.ASSIGNEE_REMOVED):
        _member(db, iid, "assignee", _text(p[0]), kind == ev_kinds.ASSIGNEE_ADDED, key)
    elif kind == ev_kinds.STATE_CHANGED:
        state = _text(p[0])
        if state in ("open", "closed"):
            _lww(db, iid, "state", state, key)
    elif kind == ev_kinds.COMMENT_ADDED:
        _text(p[0])
        db.execute("UPDATE issues SET comments=comments+1 WHERE issue_id=?", (iid,))
    return False


def refresh_task_id(db: sqlite3.Connection, iid: str) -> None:
    row = db.execute("SELECT value FROM members WHERE issue_id=? AND kind='label' AND present=1 "
                     "AND value LIKE 'task:%' ORDER BY value LIMIT 1", (iid,)).fetchone()
    db.execute("UPDATE issues SET task_id=? WHERE issue_id=?", (row[0][5:] if row else None, iid))


def load_issue(db: sqlite3.Connection, iid: str) -> Issue | None:
    row = db.execute("SELECT issue_id, title, body, state, created_ts, updated_ts, created, "
                     "comments, task_id FROM issues WHERE issue_id=?", (iid,)).fetchone()
    if row is None:
        return None
    members = db.execute("SELECT kind, value FROM members WHERE issue_id=? AND present=1 "
                         "ORDER BY value", (iid,)).fetchall()
    return Issue(issue_id=row[0], title=row[1] or "", body=row[2] or "", state=row[3] or "open",
                 labels=[v for k, v in members if k == "label"],
                 assignees=[v for k, v in members if k == "assignee"],
                 created_ts=row[4], updated_ts=row[5], created=bool(row[6]),
                 comments=row[7], task_id=row[8])
