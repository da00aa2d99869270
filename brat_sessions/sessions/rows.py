"""How sessions and their blocks sit in the index's SQL tables (cheap to import)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import fields
from operator import itemgetter

from .fields import BRAT_FIELDS
from .model import Session
from .usage import usage_json

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

SCHEMA = """
-- one B-tree, no rowid: a session's blocks in order, and the identity of a block (a
-- replayed comment is ignored), ids as bytes, then brat's fields each in a column of no
-- type (a value stays the text or integer it was: the worktree at brat's place for the
-- session is the integer 1) and any other keys as one compact JSON object, or NULL
-- (`fields_to_row`: nothing to encode or parse for brat's own fields)
CREATE TABLE IF NOT EXISTS blocks(
  session_id TEXT NOT NULL, ts INTEGER NOT NULL, actor BLOB NOT NULL, event_id BLOB NOT NULL,
  seq INTEGER NOT NULL, issue_id BLOB NOT NULL,
  state, role, session_type, engine, worktree, pid, started_ts, last_heartbeat_ts, exit_code,
  exit_reason, last_output_ref, extra,
  PRIMARY KEY(session_id, ts, actor, event_id, seq)) WITHOUT ROWID;
-- a session as the projection left it: `body` is its JSON without the fields that depend
-- on the clock, the task label or the lease (task_id, last_heartbeat_ts, future_ts, usage,
-- beats) and without those kept in columns anyway (session_id, grite_issue_id as issue_id,
-- status, started_ts), so `list --all` splices text instead of rebuilding JSON. The
-- extension keys (lineage, progress ...) are `ext`, NULL when they all hold their
-- defaults (most sessions: EXT_DEFAULT is spliced instead)
CREATE TABLE IF NOT EXISTS sessions(
  session_id TEXT PRIMARY KEY, issue_id TEXT NOT NULL, status TEXT NOT NULL,
  started_ts INTEGER NOT NULL, top_beat INTEGER, beats TEXT NOT NULL, usage TEXT, usage_out TEXT,
  body TEXT NOT NULL, ext TEXT);
-- the live sessions only (a few among many exited ones)
CREATE INDEX IF NOT EXISTS sessions_live ON sessions(status) WHERE status != 'exit';
CREATE INDEX IF NOT EXISTS sessions_issue ON sessions(issue_id);
CREATE TABLE IF NOT EXISTS problems(
  problem_id TEXT PRIMARY KEY, kind TEXT NOT NULL, commit_id TEXT, event_id TEXT,
  session_id TEXT, message TEXT NOT NULL, issue_id TEXT);
"""


# kept apart from `body`: see the sessions table
_APART = ("task_id", "last_heartbeat_ts", "future_ts", "beats", "usage")
_IN_COLUMNS = ("session_id", "grite_issue_id", "status", "started_ts")
_FIELDS = [f for f in fields(Session) if f.name not in _APART]
_FIRST_EXT = [f.name for f in _FIELDS].index("parent_session_id")
_BODY_KEYS = tuple(f.name for f in _FIELDS[:_FIRST_EXT] if f.name not in _IN_COLUMNS)
_EXT_KEYS = tuple(f.name for f in _FIELDS[_FIRST_EXT:])  # the rest, in the model's order
EXT_DEFAULT = json.dumps({f.name: f.default for f in _FIELDS[_FIRST_EXT:]})
_EXT_DEFAULTS = tuple(f.default for f in _FIELDS[_FIRST_EXT:])
_ext_of = itemgetter(*_EXT_KEYS)  # (most sessions hold the defaults: no JSON made for them)
# session_from_row's arguments
SESSION_COLUMNS = (
    "s.session_id, s.issue_id, s.status, s.started_ts, s.body, s.ext, s.beats, s.usage, s.top_beat, i.task_id"
)
SESSIONS_WITH_TASKS = "sessions s LEFT JOIN issues i ON i.issue_id = s.issue_id"
INSERT_SESSIONS = "INSERT OR REPLACE INTO sessions VALUES(?,?,?,?,?,?,?,?,?,?)"


def session_to_row(s: Session) -> tuple[object, ...]:
    """The sessions table's row for a session, in column order."""
    values = vars(s)
    usage = json.dumps(s.usage) if s.usage else None
    usage_out = json.dumps(usage_json(s.usage)) if s.usage else None
    ext_values = _ext_of(values)
    ext = None if ext_values == _EXT_DEFAULTS else json.dumps(dict(zip(_EXT_KEYS, ext_values)))
    return (
        s.session_id,
        s.grite_issue_id,
        s.status,
        s.started_ts,
        s.last_heartbeat_ts,
        json.dumps(s.beats),
        usage,
        usage_out,
        json.dumps({k: values[k] for k in _BODY_KEYS}),
        None if ext == EXT_DEFAULT else ext,  # (values equal to the defaults, not identical)
    )


# brat's fields stored by position (the session id is the row's own column)
_POSITIONAL = tuple(k for k in BRAT_FIELDS if k != "session_id")
BLOCK_FIELD_COLUMNS = ", ".join((*_POSITIONAL, "extra"))  # the columns `fields_to_row` fills
_BRAT = frozenset(BRAT_FIELDS)
_WORKTREE = _POSITIONAL.index("worktree")
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def fields_to_row(fields: dict[str, object]) -> tuple[object, ...]:
    """A block's fields as the blocks table stores them: brat's values in brat's order
    without the session id, then any other keys (not null) as one JSON object or None. A
    worktree at brat's place for the session (`.grite/worktrees/<session id>`) is stored
    as 1 (a worktree read from a block is always text). Every value is text or a bounded
    integer (`block.py` drops or refuses any other)."""
    row = list(map(fields.get, _POSITIONAL))
    if row[_WORKTREE] == _worktree_of(fields.get("session_id")):
        row[_WORKTREE] = 1
    extra = None
    if not fields.keys() <= _BRAT:  # (most blocks have brat's keys only)
        others = {k: v for k, v in fields.items() if k not in _BRAT and v is not None}
        extra = _COMPACT(others) if others else None
    row.append(extra)
    return tuple(row)


def fields_from_row(values: tuple[object, ...], session_id: str) -> dict[str, object]:
    """The fields `fields_to_row` stored (`values`: its columns), every brat field present
    (None when absent), in brat's order, then the other keys."""
    fields: dict[str, object] = dict(zip(BRAT_FIELDS, (values[0], session_id, *values[1:-1])))
    if fields["worktree"] == 1:
        fields["worktree"] = _worktree_of(session_id)
    extra = values[-1]
    if extra is not None:
        fields.update(json.loads(extra))  # type: ignore[arg-type]
    return fields


def _worktree_of(session_id: object) -> str:
    return f".grite/worktrees/{session_id}"


def session_from_row(
    session_id: str,
    issue_id: str,
    status: str,
    started_ts: int,
    body: str,
    ext: str | None,
    beats: str,
    usage: str | None,
    top: int | None,
    task_id: str | None,
) -> Session:
    """A session from its row (SESSION_COLUMNS); absent extension keys take their defaults."""
    d = json.loads(body)
    if ext is not None:
        d.update(json.loads(ext))
    d.update(session_id=session_id, grite_issue_id=issue_id, status=status, started_ts=started_ts)
    d.update(task_id=task_id, last_heartbeat_ts=top, beats=json.loads(beats), future_ts=None)
    d["usage"] = json.loads(usage) if usage else None
    return Session(**d)


# what exited_texts reads of an exited session (its status is "exit"), started_ts and
# session_id first: rows sort by start, then id (unique), whatever follows
EXITED_COLUMNS = "s.started_ts, s.session_id, s.top_beat, s.usage_out, s.issue_id, s.body, s.ext"


def exited_texts(rows: Iterable[tuple[Any, ...]], tasks: dict[str, str], now: int) -> Iterator[str]:
    """Each row as `Session.to_json(now)` text: an exited session's row (EXITED_COLUMNS) is
    spliced from its stored text without parsing any JSON, the spliced keys first; a row
    (started_ts, session_id, text) is text made already. `tasks` maps issue ids to task
    ids. (Ids are written as they are: only valid ids become session and task ids, and
    issue ids are hex.)"""
    default = EXT_DEFAULT[1:]
    task_of = {issue: f'"{task}"' for issue, task in tasks.items()}.get
    for row in rows:
        if len(row) == 3:
            yield row[2]
            continue
        started, sid, top, usage, issue, body, ext = row
        yield (
            f'{{"task_id": {task_of(issue, "null")}, "last_heartbeat_ts": {"null" if top is None else top}, '
            f'"future_ts": null, "usage": {usage or "null"}, '
            f'"heartbeat_age_ms": {"null" if top is None else (now - top if top < now else 0)}, '
            f'"session_id": "{sid}", "grite_issue_id": "{issue}", "status": "exit", '
            f'"started_ts": {started}, {body[1:-1]}, {ext[1:] if ext else default}'
        )
