"""Fold grite events into issues (kept in the index's SQL tables).

Every rule is order-independent and idempotent, so the same events give the
same issues in whatever order a clone saw them: title, body, state, labels and
assignees are last-writer-wins by grite's order (ts, actor, event_id).
A batch of events is folded in memory and written back in one go.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ..rules import I64_MAX, valid_id
from ..storage import events as ev_kinds
from ..storage.events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS issues(
  issue_id TEXT PRIMARY KEY, created INTEGER NOT NULL DEFAULT 0,
  created_ts INTEGER, updated_ts INTEGER NOT NULL DEFAULT 0,
  title TEXT, title_key BLOB, body TEXT, body_key BLOB,
  state TEXT, state_key BLOB, task_id TEXT);
CREATE INDEX IF NOT EXISTS issues_task ON issues(task_id);
CREATE TABLE IF NOT EXISTS members(
  issue_id TEXT, kind TEXT, value TEXT, present INTEGER, key BLOB,
  PRIMARY KEY(issue_id, kind, value)) WITHOUT ROWID;
"""

_COLUMNS = (
    "issue_id",
    "created",
    "created_ts",
    "updated_ts",
    "title",
    "title_key",
    "body",
    "body_key",
    "state",
    "state_key",
    "task_id",
)


@dataclass
class Issue:
    """An issue as its events leave it."""

    issue_id: str
    title: str
    body: str
    state: str
    labels: list[str]
    assignees: list[str]
    created_ts: int | None
    updated_ts: int
    created: bool
    task_id: str | None = None

    def label_value(self, prefix: str) -> str | None:
        """The value of the first `prefix:value` label."""
        for label in self.labels:
            if label.startswith(prefix + ":"):
                return label[len(prefix) + 1 :]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "grite_issue_id": self.issue_id,
            "task_id": self.task_id,
            "title": self.title,
            "body": self.body,
            "state": self.state,
            "labels": self.labels,
            "assignees": self.assignees,
            "status": self.label_value("status"),
            "convoy_id": self.label_value("convoy"),
            "priority": self.label_value("priority"),
            "created_ts": self.created_ts,
            "updated_ts": self.updated_ts,
        }


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text in payload")
    return value


def _check_payload(kind: int, p: list[Any]) -> None:
    if kind == ev_kinds.ISSUE_CREATED:
        for value in (p[0], p[1], *p[2]):
            _text(value)
    elif kind in (
        ev_kinds.LABEL_ADDED,
        ev_kinds.LABEL_REMOVED,
        ev_kinds.ASSIGNEE_ADDED,
        ev_kinds.ASSIGNEE_REMOVED,
        ev_kinds.STATE_CHANGED,
        ev_kinds.COMMENT_ADDED,
    ):
        _text(p[0])
    elif kind == ev_kinds.ISSUE_UPDATED:
        for value in p[:2]:
            if value is not None:
                _text(value)


def check_event(ev: Event) -> None:
    """ValueError/TypeError/IndexError for an event the fold refuses (reported as
    `bad_event`, folded nowhere); for an issue event it folds, nothing."""
    if ev.ts_unix_ms > I64_MAX:  # (a u64 in the log; SQLite and every reader here are i64)
        raise ValueError(f"ts_unix_ms {ev.ts_unix_ms} is past 2^63-1")
    _check_payload(ev.kind, ev.payload)


class IssueFold:
    """Folds a batch of events into the issues they touch, then writes them back."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.rows: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[tuple[str, str], tuple[int, bytes]]] = {}
        self.changed_members: set[tuple[str, str, str]] = set()
        self.dirty: set[str] = set()

    def reset(self) -> None:
        """Forget everything folded and not yet written (after a rollback)."""
        self.rows.clear()
        self.members.clear()
        self.changed_members.clear()
        self.dirty.clear()

    def _row(self, iid: str) -> dict[str, Any]:
        row = self.rows.get(iid)
        if row is None:
            found = self.db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM issues WHERE issue_id=?", (iid,)
            ).fetchone()
            row = dict(zip(_COLUMNS, found)) if found else dict.fromkeys(_COLUMNS)
            if not found:
                row.update(issue_id=iid, created=0, updated_ts=0)
            self.rows[iid] = row
            self.members[iid] = {
                (k, v): (p, key)
                for k, v, p, key in self.db.execute(
                    "SELECT kind, value, present, key FROM members WHERE issue_id=?", (iid,)
                )
            }
        return row

    @staticmethod
    def _lww(row: dict[str, Any], column: str, value: str, key: bytes) -> None:
        if row[f"{column}_key"] is None or row[f"{column}_key"] < key:
            row[column] = value
            row[f"{column}_key"] = key

    def _member(self, iid: str, kind: str, value: str, present: bool, key: bytes) -> None:
        current = self.members[iid].get((kind, value))
        if current is None or current[1] < key:
            self.members[iid][(kind, value)] = (int(present), key)
            self.changed_members.add((iid, kind, value))

    def apply(self, ev: Event) -> None:
        """Fold one event; ValueError/TypeError/IndexError for a payload of the wrong shape."""
        kind, p = ev.kind, ev.payload
        if kind in (ev_kinds.CONTEXT_UPDATED, ev_kinds.PROJECT_CONTEXT_UPDATED) or kind > 14:
            return  # not about issues, or unknown: kept in the log, unused here
        iid = ev.issue_id.hex()
        key = ev.order_key
        check_event(ev)  # before touching anything: a bad event changes nothing
        row = self.rows.get(iid) or self._row(iid)
        self.dirty.add(iid)
        if ev.ts_unix_ms > row["updated_ts"]:
            row["updated_ts"] = ev.ts_unix_ms
        if kind == ev_kinds.ISSUE_CREATED:
            row["created"] = 1
            known = row["created_ts"]
            row["created_ts"] = ev.ts_unix_ms if known is None else min(known, ev.ts_unix_ms)
            self._lww(row, "title", p[0], key)
            self._lww(row, "body", p[1], key)
            self._lww(row, "state", "open", key)
            for label in p[2]:
                self._member(iid, "label", label, True, key)
        elif kind == ev_kinds.ISSUE_UPDATED:
            if p[0] is not None:
                self._lww(row, "title", p[0], key)
            if len(p) > 1 and p[1] is not None:
                self._lww(row, "body", p[1], key)
        elif kind in (ev_kinds.LABEL_ADDED, ev_kinds.LABEL_REMOVED):
            self._member(iid, "label", p[0], kind == ev_kinds.LABEL_ADDED, key)
        elif kind in (ev_kinds.ASSIGNEE_ADDED, ev_kinds.ASSIGNEE_REMOVED):
            self._member(iid, "assignee", p[0], kind == ev_kinds.ASSIGNEE_ADDED, key)
        elif kind == ev_kinds.STATE_CHANGED and p[0] in ("open", "closed"):
            self._lww(row, "state", p[0], key)

    def flush(self) -> None:
        """Write the issues changed since the last flush (rows stay cached for this fold)."""
        for iid in self.dirty:
            tasks = sorted(
                v[5:]
                for (k, v), (present, _) in self.members[iid].items()
                if k == "label" and present and v.startswith("task:") and valid_id(v[5:])
            )  # a hostile task id never becomes one
            self.rows[iid]["task_id"] = tasks[0] if tasks else None
        self.db.executemany(
            f"INSERT OR REPLACE INTO issues({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            [tuple(self.rows[iid][c] for c in _COLUMNS) for iid in self.dirty],
        )
        self.dirty.clear()
        self.db.executemany(
            "INSERT OR REPLACE INTO members VALUES(?,?,?,?,?)",
            [(iid, k, v, *self.members[iid][(k, v)]) for iid, k, v in self.changed_members],
        )
        self.changed_members.clear()


class IssueView:
    """What a set of events shows (each issue's creation, title, body, state, the labels and
    assignees present; dependencies; the context entries), folded in memory: `brat snapshot
    verify` compares a snapshot's view with its log's. Times are left out: leaving out a
    superseded pair of events may move `updated_ts` and changes nothing a reader sees."""

    def __init__(self) -> None:
        db = sqlite3.connect(":memory:")
        db.executescript(SCHEMA)
        self.fold = IssueFold(db)
        self.other: dict[tuple[Any, ...], tuple[bytes, Any]] = {}  # last writer wins, by key

    def _lww(self, key: tuple[Any, ...], order: bytes, value: Any) -> None:
        current = self.other.get(key)
        if current is None or current[0] < order:
            self.other[key] = (order, value)

    def apply(self, ev: Event) -> None:
        p = ev.payload
        try:
            if ev.kind in (ev_kinds.DEPENDENCY_ADDED, ev_kinds.DEPENDENCY_REMOVED):
                if type(p[0]) is not bytes or len(p[0]) != 16:
                    return  # not an issue id: shows nothing (never `bytes(n)` of a number)
                key = ("dependency", ev.issue_id.hex(), p[0].hex(), str(p[1]))
                self._lww(key, ev.order_key, ev.kind == ev_kinds.DEPENDENCY_ADDED)
            elif ev.kind == ev_kinds.CONTEXT_UPDATED:
                self._lww(("context", str(p[0])), ev.order_key, repr(p[1:]))
            elif ev.kind == ev_kinds.PROJECT_CONTEXT_UPDATED:
                self._lww(("project_context", str(p[0])), ev.order_key, repr(p[1:]))
            else:
                self.fold.apply(ev)
        except (TypeError, ValueError, IndexError):
            pass  # a bad payload changes nothing, in either view

    def issues(self) -> dict[str, tuple[Any, ...]]:
        """issue id (or a dependency or context key) -> what it shows."""
        found: dict[str, tuple[Any, ...]] = {}
        for iid, row in self.fold.rows.items():
            present = frozenset(m for m, (flag, _) in self.fold.members.get(iid, {}).items() if flag)
            found[iid] = (row["created"], row["created_ts"], row["title"], row["body"], row["state"], present)
        for key, (_, value) in self.other.items():
            if value is not False:  # a dependency removed shows as one never added
                found[":".join(key)] = (value,)
        return found


def load_issue(db: sqlite3.Connection, iid: str) -> Issue | None:
    row = db.execute(
        "SELECT issue_id, title, body, state, created_ts, updated_ts, created, "
        "task_id FROM issues WHERE issue_id=?",
        (iid,),
    ).fetchone()
    if row is None:
        return None
    members = db.execute(
        "SELECT kind, value FROM members WHERE issue_id=? AND present=1 ORDER BY value", (iid,)
    ).fetchall()
    return Issue(
        issue_id=row[0],
        title=row[1] or "",
        body=row[2] or "",
        state=row[3] or "open",
        labels=[v for k, v in members if k == "label"],
        assignees=[v for k, v in members if k == "assignee"],
        created_ts=row[4],
        updated_ts=row[5],
        created=bool(row[6]),
        task_id=row[7],
    )
