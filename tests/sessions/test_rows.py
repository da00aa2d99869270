"""How blocks and sessions are stored in the index's rows, and read back unchanged."""

import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from brat_sessions.sessions.fields import BRAT_FIELDS
from brat_sessions.sessions.model import Session
from brat_sessions.sessions.rows import (
    BLOCK_FIELD_COLUMNS,
    EXT_DEFAULT,
    SCHEMA,
    fields_from_row,
    fields_to_row,
    session_from_row,
    session_to_row,
)

SID = "s-20250114-0001"
values = st.one_of(st.none(), st.integers(-(2**53), 2**53), st.text(max_size=30))
known = st.dictionaries(st.sampled_from([k for k in BRAT_FIELDS if k != "session_id"]), values)
extra = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in BRAT_FIELDS), values
)


def _through_sqlite(fields: dict) -> tuple:
    """The block's columns as a real blocks table gives them back."""
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    db.execute(
        f"INSERT INTO blocks VALUES(?,?,?,?,?,?,{','.join('?' * len(BLOCK_FIELD_COLUMNS.split(',')))})",
        (SID, 1, b"a", b"e", 0, b"i", *fields_to_row(fields)),
    )
    return db.execute(f"SELECT {BLOCK_FIELD_COLUMNS} FROM blocks").fetchone()


@given(known, extra, st.sampled_from(["", f".grite/worktrees/{SID}", ".grite/worktrees/s-other", "1"]))
def test_block_fields_read_back_as_written(fields, more, worktree):
    fields = {**fields, **more, "session_id": SID, "worktree": worktree}
    back = fields_from_row(_through_sqlite(fields), SID)
    assert back == {**dict.fromkeys(BRAT_FIELDS), **{k: v for k, v in fields.items() if v is not None}}
    assert all(type(back[k]) is type(v) for k, v in fields.items() if v is not None)  # "1" stays text
    assert list(back)[: len(BRAT_FIELDS)] == list(BRAT_FIELDS)  # brat's order, then the others


def test_the_worktree_at_brats_place_is_stored_short():
    fields = {"state": "running", "session_id": SID, "worktree": f".grite/worktrees/{SID}"}
    assert fields_to_row(fields) == ("running", None, None, None, 1, *[None] * 7)
    assert fields_from_row(_through_sqlite(fields), "s-x")["worktree"] == ".grite/worktrees/s-x"


def _session(**more):
    base = dict(
        session_id=SID,
        task_id=None,
        grite_issue_id="01" * 16,
        role="witness",
        session_type="polecat",
        engine="codex",
        worktree="",
        pid=7,
        status="exit",
        started_ts=1_736_000_000_000,
        last_heartbeat_ts=1_736_000_001_000,
        exit_code=0,
        exit_reason="completed",
        last_output_ref=None,
        beats=[1_736_000_001_000],
    )
    return Session(**{**base, **more})


def _round_trip(s: Session) -> Session:
    row = session_to_row(s)
    # SESSION_COLUMNS: session_id, issue_id, status, started_ts, body, ext, beats, usage, top_beat, task_id
    return session_from_row(row[0], row[1], row[2], row[3], row[8], row[9], row[5], row[6], row[4], "t-1")


def test_a_session_without_extension_keys_stores_no_ext():
    s = _session()
    assert session_to_row(s)[9] is None
    assert vars(_round_trip(s)) == {**vars(s), "task_id": "t-1"}
    assert '"ledger": null' in EXT_DEFAULT and '"spawn_depth": 0' in EXT_DEFAULT


def test_a_session_with_extension_keys_reads_back_whole():
    s = _session(parent_session_id="s-1", root_session_id="s-0", spawn_depth=2, phase="p", usage={"calls": 3})
    assert session_to_row(s)[9] is not None
    assert vars(_round_trip(s)) == {**vars(s), "task_id": "t-1"}
