"""How sessions and their blocks sit in the index's SQL tables (cheap to import)."""

from __future__ import annotations

import json

from ..kinds import BRAT_FIELDS
from .model import Session

SCHEMA = """
-- one B-tree, no rowid: a session's blocks in order, and the identity of a block (a
-- replayed comment is ignored), the fields as compact JSON without nulls
CREATE TABLE IF NOT EXISTS blocks(
  session_id TEXT NOT NULL, ts INTEGER NOT NULL, actor TEXT NOT NULL, event_id TEXT NOT NULL,
  seq INTEGER NOT NULL, issue_id TEXT NOT NULL, fields TEXT NOT NULL,
  PRIMARY KEY(session_id, ts, actor, event_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
  session_id TEXT PRIMARY KEY, issue_id TEXT NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions(status);
CREATE INDEX IF NOT EXISTS sessions_issue ON sessions(issue_id);
CREATE TABLE IF NOT EXISTS problems(
  problem_id TEXT PRIMARY KEY, kind TEXT NOT NULL, commit_id TEXT, event_id TEXT,
  session_id TEXT, message TEXT NOT NULL, issue_id TEXT);
"""


def session_to_row(s: Session) -> str:
    return json.dumps(vars(s), separators=(",", ":"))


def fields_to_row(fields: dict[str, object]) -> str:
    """A block's fields as stored: compact, nulls left out (`fields_from_row` restores brat's)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))


def fields_from_row(data: str) -> dict[str, object]:
    fields: dict[str, object] = dict.fromkeys(BRAT_FIELDS)
    fields.update(json.loads(data))
    return fields


def session_from_row(data: str, task_id: str | None) -> Session:
    d = json.loads(data)
    d["task_id"] = task_id
    return Session(**d)
