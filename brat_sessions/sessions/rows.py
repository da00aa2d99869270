"""How sessions and their blocks sit in the index's SQL tables (cheap to import)."""

from __future__ import annotations

import json

from ..kinds import BRAT_FIELDS
from .model import Session
from .usage import usage_json

SCHEMA = """
-- one B-tree, no rowid: a session's blocks in order, and the identity of a block (a
-- replayed comment is ignored), ids as bytes, the fields as a compact JSON array
-- (`fields_to_row`)
CREATE TABLE IF NOT EXISTS blocks(
  session_id TEXT NOT NULL, ts INTEGER NOT NULL, actor BLOB NOT NULL, event_id BLOB NOT NULL,
  seq INTEGER NOT NULL, issue_id BLOB NOT NULL, fields TEXT NOT NULL,
  PRIMARY KEY(session_id, ts, actor, event_id, seq)) WITHOUT ROWID;
-- a session as the projection left it: `body` is its JSON without the fields that depend
-- on the clock, the task label or the lease (task_id, last_heartbeat_ts, future_ts, usage,
-- beats), which sit in their own columns, so `list --all` splices text instead of
-- rebuilding JSON
CREATE TABLE IF NOT EXISTS sessions(
  session_id TEXT PRIMARY KEY, issue_id TEXT NOT NULL, status TEXT NOT NULL,
  started_ts INTEGER NOT NULL, top_beat INTEGER, beats TEXT NOT NULL, usage TEXT, usage_out TEXT,
  body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions(status);
CREATE INDEX IF NOT EXISTS sessions_issue ON sessions(issue_id);
CREATE TABLE IF NOT EXISTS problems(
  problem_id TEXT PRIMARY KEY, kind TEXT NOT NULL, commit_id TEXT, event_id TEXT,
  session_id TEXT, message TEXT NOT NULL, issue_id TEXT);
"""


# kept apart from `body`: see the sessions table
_APART = ("task_id", "last_heartbeat_ts", "future_ts", "beats", "usage")
SESSION_COLUMNS = "s.body, s.beats, s.usage, s.top_beat, i.task_id"  # session_from_row's order
SESSIONS_WITH_TASKS = "sessions s LEFT JOIN issues i ON i.issue_id = s.issue_id"


def session_to_row(s: Session) -> tuple[object, ...]:
    """The sessions table's row for a session, in column order."""
    body = {k: v for k, v in vars(s).items() if k not in _APART}
    usage = json.dumps(s.usage) if s.usage else None
    usage_out = json.dumps(usage_json(s.usage)) if s.usage else None
    return (
        s.session_id,
        s.grite_issue_id,
        s.status,
        s.started_ts,
        s.last_heartbeat_ts,
        json.dumps(s.beats),
        usage,
        usage_out,
        json.dumps(body),
    )


# brat's fields stored by position (the session id is the row's own column)
_POSITIONAL = tuple(k for k in BRAT_FIELDS if k != "session_id")
_BRAT = frozenset(BRAT_FIELDS)


def fields_to_row(fields: dict[str, object]) -> str:
    """A block's fields as stored: brat's values in brat's order without the session id,
    trailing nulls left out, then any other keys (not null) as one object:
    `["running","witness","polecat","codex","wt",4242,1700000000000,{"host":"h1"}]`."""
    row: list[object] = [fields.get(k) for k in _POSITIONAL]
    while row and row[-1] is None:
        row.pop()
    extra = {k: v for k, v in fields.items() if k not in _BRAT and v is not None}
    if extra:
        row.append(extra)
    return json.dumps(row, separators=(",", ":"))


def fields_from_row(data: str, session_id: str) -> dict[str, object]:
    """The fields `fields_to_row` stored, every brat field present (None when absent)."""
    values = json.loads(data)
    extra = values.pop() if values and isinstance(values[-1], dict) else {}
    fields: dict[str, object] = dict.fromkeys(BRAT_FIELDS)
    fields.update(zip(_POSITIONAL, values))
    fields["session_id"] = session_id
    fields.update(extra)
    return fields


def session_from_row(
    body: str, beats: str, usage: str | None, top: int | None, task_id: str | None
) -> Session:
    """A session from its row (SESSION_COLUMNS)."""
    d = json.loads(body)
    d.update(task_id=task_id, last_heartbeat_ts=top, beats=json.loads(beats), future_ts=None)
    d["usage"] = json.loads(usage) if usage else None
    return Session(**d)


def exited_json_sql(filtered: str) -> str:
    """Exited sessions as `Session.to_json(now)` text, spliced by SQLite (no JSON parsed):
    (started_ts, session_id, json), the spliced keys first. Sessions with a time after
    :limit are left out (their times must be judged in Python). `filtered` adds conditions
    on `s`. (A task id is quoted as it is: only valid ids become task ids.)"""
    return (
        "SELECT s.started_ts, s.session_id, "
        "'{\"task_id\": ' || ifnull('\"' || i.task_id || '\"', 'null') "
        "|| ', \"last_heartbeat_ts\": ' || ifnull(s.top_beat, 'null') "
        "|| ', \"future_ts\": null, \"usage\": ' || ifnull(s.usage_out, 'null') "
        "|| ', \"heartbeat_age_ms\": ' || ifnull(max(0, :now - s.top_beat), 'null') "
        "|| ', ' || substr(s.body, 2) "
        f"FROM {SESSIONS_WITH_TASKS} WHERE s.status = 'exit' AND s.started_ts <= :limit "
        f"AND (s.top_beat IS NULL OR s.top_beat <= :limit){filtered}"
    )
