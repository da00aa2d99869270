"""From `[session]` blocks in comments to sessions (the spec's projection rules).

Blocks are ordered by grite's (ts, actor, event_id) order, then their place in
the comment, so that clones holding the same events agree on every session.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..storage.events import COMMENT_ADDED, Event
from .block import has_block, parse_blocks
from .model import EXTENSION_KEYS, USAGE_KEYS, Session
from .rows import BLOCK_FIELD_COLUMNS, INSERT_SESSIONS, fields_from_row, fields_to_row, session_to_row

if TYPE_CHECKING:
    from ..storage.wal import WalCommit


Row = tuple[Any, ...]  # one SQL row, in its table's column order


@dataclass
class BlockRecord:
    """One block as it sits in the log: its fields and the comment that carried it."""

    session_id: str
    issue_id: str
    ts: int
    actor: str
    event_id: str
    seq: int
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "actor": self.actor,
            "ts": self.ts,
            "grite_issue_id": self.issue_id,
            "block": self.fields,
        }


def add_problem(
    db: sqlite3.Connection,
    problem_id: str,
    kind: str,
    message: str,
    commit_id: str | None = None,
    event_id: str | None = None,
    session_id: str | None = None,
) -> None:
    db.execute(
        "INSERT OR IGNORE INTO problems VALUES(?,?,?,?,?,?,?)",
        (problem_id, kind, commit_id, event_id, session_id, message, None),
    )


def comment_rows(ev: Event, commit_id: str | None, origin: str | None = None) -> tuple[list[Row], list[Row]]:
    """The block rows and problem rows of one comment (pure: depends on nothing else).
    `origin` says where the comment was read when not from a commit (a snapshot)."""
    body = ev.payload[0] if ev.payload else None
    if not isinstance(body, str) or not has_block(body):
        return [], []
    eid = ev.event_id.hex()
    where = origin or f"commit {commit_id}"
    issue = ev.issue_id.hex()
    blocks, problems = [], []
    for seq, parsed in enumerate(parse_blocks(body)):
        if parsed.error:
            problems.append(
                (
                    f"block:{eid}:{seq}",
                    "malformed_block",
                    commit_id,
                    eid,
                    parsed.session_hint,
                    f"malformed [session] block in comment {eid} ({where}): {parsed.error}",
                    issue,
                )
            )
            continue
        for n, warning in enumerate(parsed.warnings):
            problems.append(
                (
                    f"field:{eid}:{seq}:{n}",
                    "invalid_field",
                    commit_id,
                    eid,
                    parsed.fields["session_id"],
                    f"[session] block in comment {eid} ({where}): {warning}",
                    issue,
                )
            )
        blocks.append(
            (
                parsed.fields["session_id"],
                ev.ts_unix_ms,
                ev.actor,
                ev.event_id,
                seq,
                ev.issue_id,
                *fields_to_row(parsed.fields),
            )
        )
    return blocks, problems


def prepare_commit(commit: WalCommit) -> dict[bytes, tuple[list[Row], list[Row]]]:
    """The parsed blocks of every comment of a commit, keyed by event id."""
    return {ev.event_id: comment_rows(ev, commit.oid) for ev in commit.events if ev.kind == COMMENT_ADDED}


class BlockFold:
    """Collects the blocks of a batch of comments, then stores them and re-derives sessions."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.blocks: list[Row] = []
        self.problems: list[Row] = []
        self.touched: set[str] = set()

    def add(self, rows: tuple[list[Row], list[Row]]) -> None:
        blocks, problems = rows
        self.blocks += blocks
        self.problems += problems
        self.touched.update(b[0] for b in blocks)

    def reset(self) -> None:
        """Forget everything collected and not yet stored (after a rollback)."""
        self.blocks.clear()
        self.problems.clear()
        self.touched.clear()

    def flush(self) -> None:
        """Store what was collected (sessions are re-derived by `finish`)."""
        self.blocks.sort(key=_BLOCK_KEY)  # inserts in index order touch each B-tree page once
        self.db.executemany(_INSERT_BLOCKS, self.blocks)
        self.db.executemany("INSERT OR IGNORE INTO problems VALUES(?,?,?,?,?,?,?)", self.problems)
        self.blocks.clear()
        self.problems.clear()

    def finish(self) -> None:
        self.flush()
        recompute(self.db, self.touched)
        self.touched.clear()


_BLOCK_COLUMNS = f"session_id, issue_id, ts, actor, event_id, seq, {BLOCK_FIELD_COLUMNS}"  # BlockRecord order
_BLOCK_KEY = itemgetter(0, 1, 2, 3, 4)  # a block row's primary key (session, ts, actor, event, seq)
_INSERT_BLOCKS = (
    f"INSERT OR IGNORE INTO blocks VALUES({', '.join('?' * (6 + len(BLOCK_FIELD_COLUMNS.split(','))))})"
)
STREAM_FROM = 2000  # sessions; more are re-derived from one ordered pass over all blocks
RECOMPUTE_BATCH = 5000  # sessions written at a time


def _record(r: Row) -> BlockRecord:
    return BlockRecord(r[0], r[1].hex(), r[2], r[3].hex(), r[4].hex(), r[5], fields_from_row(r[6:], r[0]))


def load_blocks(db: sqlite3.Connection, session_id: str) -> list[BlockRecord]:
    rows = db.execute(
        f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE session_id=? ORDER BY ts, actor, event_id, seq",
        (session_id,),
    )
    return [_record(r) for r in rows]


def _blocks_of(db: sqlite3.Connection, session_ids: set[str]) -> Iterator[list[BlockRecord]]:
    """The ordered blocks of each session (one query each, or one pass for many)."""
    if len(session_ids) < STREAM_FROM:
        for sid in session_ids:
            yield load_blocks(db, sid)
        return
    rows = db.execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks ORDER BY session_id, ts, actor, event_id, seq")
    for sid, group in groupby(rows, key=lambda r: r[0]):
        if sid in session_ids:
            yield [_record(r) for r in group]


def derive(blocks: list[BlockRecord]) -> tuple[Session, list[BlockRecord]]:
    """The session its ordered blocks describe, and the foreign (conflicting) blocks."""
    owner = blocks[0].issue_id
    own = [b for b in blocks if b.issue_id == owner]
    foreign = [b for b in blocks if b.issue_id != owner]
    effective = own
    for i, b in enumerate(own):
        if b.fields["state"] == "exit":
            effective = own[: i + 1]  # the first exit is final
            break
    latest = effective[-1].fields
    beats = sorted(
        {b.fields["last_heartbeat_ts"] for b in own if isinstance(b.fields.get("last_heartbeat_ts"), int)}
    )
    pid = latest.get("pid")
    host = next((b.fields["host"] for b in reversed(effective) if b.fields.get("host")), None)
    session = Session(
        session_id=latest["session_id"],
        task_id=None,
        grite_issue_id=owner,
        role=latest["role"],
        session_type=latest["session_type"],
        engine=latest["engine"],
        worktree=latest["worktree"],
        pid=pid,
        status=latest["state"],
        started_ts=latest["started_ts"],
        last_heartbeat_ts=max(beats) if beats else None,
        exit_code=latest.get("exit_code"),
        exit_reason=latest.get("exit_reason"),
        last_output_ref=latest.get("last_output_ref"),
        host=host,
        updated_ts=effective[-1].ts,
        blocks=len(own),
        conflicts=len(foreign),
        beats=beats,
        **_extensions(effective),
    )
    return session, foreign


_EXTENSION_FIELDS = frozenset((*EXTENSION_KEYS, "spawn_depth", *USAGE_KEYS))


def _extensions(effective: list[BlockRecord]) -> dict[str, Any]:
    """The extension keys of a session: each from the latest of its blocks that has it."""
    found: dict[str, Any] = {}
    for b in effective:  # (a later block's value replaces an earlier one's)
        for key in b.fields.keys() & _EXTENSION_FIELDS:  # (most blocks have none)
            if b.fields[key] is not None:
                found[key] = b.fields[key]
    usage = {name: found.pop(key) for key, name in USAGE_KEYS.items() if key in found}
    if usage:
        found["usage"] = usage
    return found


def recompute(db: sqlite3.Connection, session_ids: set[str]) -> None:
    """Re-derive the stored summary of each session from all its blocks (written in
    batches: memory does not grow with the number of sessions)."""
    rows: list[Row] = []
    # sessions said to have several exits: the blocks now counted may say otherwise (a
    # block that came later moved the session to another issue)
    extra = {sid for (sid,) in db.execute("SELECT session_id FROM problems WHERE kind='extra_exit'")}
    for blocks in _blocks_of(db, session_ids):
        if not blocks:
            continue
        sid = blocks[0].session_id
        session, foreign = derive(blocks)
        rows.append(session_to_row(session))
        if foreign:
            _store_conflicts(db, sid, session.grite_issue_id, foreign)
        exits = [b for b in blocks if b.fields["state"] == "exit" and b.issue_id == session.grite_issue_id]
        if len(exits) > 1:
            _store_extra_exits(db, sid, exits)
        elif sid in extra:
            db.execute("DELETE FROM problems WHERE problem_id=?", (f"exits:{sid}",))
        if len(rows) >= RECOMPUTE_BATCH:
            db.executemany(INSERT_SESSIONS, rows)
            rows.clear()
    db.executemany(INSERT_SESSIONS, rows)


def _store_conflicts(db: sqlite3.Connection, sid: str, owner: str, foreign: list[BlockRecord]) -> None:
    db.execute("DELETE FROM problems WHERE kind='conflict' AND session_id=?", (sid,))
    db.executemany(
        "INSERT OR IGNORE INTO problems VALUES(?,?,?,?,?,?,?)",
        [
            (
                f"conflict:{b.event_id}:{b.seq}",
                "conflict",
                None,
                b.event_id,
                sid,
                f"session {sid}: block in comment {b.event_id} is on issue "
                f"{b.issue_id}, but the session belongs to issue {owner}; ignored",
                b.issue_id,
            )
            for b in foreign
        ],
    )


def _store_extra_exits(db: sqlite3.Connection, sid: str, exits: list[BlockRecord]) -> None:
    """One problem row for a session with more than one exit block (the first is final)."""
    first = exits[0].fields
    db.execute(
        "INSERT OR REPLACE INTO problems VALUES(?,?,?,?,?,?,?)",
        (
            f"exits:{sid}",
            "extra_exit",
            None,
            exits[1].event_id,
            sid,
            f"session {sid} has {len(exits)} exit blocks; the first ({first.get('exit_reason')} "
            f"{first.get('exit_code')}, comment {exits[0].event_id}) is final, the others are ignored",
            exits[0].issue_id,
        ),
    )
