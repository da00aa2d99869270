"""An independent, minimal grite WAL writer for tests, written from docs/spec only.

It imports nothing from brat_sessions: what it writes is what any grite writer
(or an attacker with push access) could write, so tests can feed brat_sessions
logs that its own writer would never produce. Git is driven through its plumbing
(`hash-object`, `mktree`, `commit-tree`, `update-ref`), CBOR through cbor2.

    w = GriteWriter(repo)
    issue = w.create_issue("A task", "", task_labels("t-20250114-beef"))
    w.comment(issue, raw_block(state="running", session_id="../../x", pid=2147483648))
    with w.batch():                  # several events, one WAL commit
        w.comment(issue, "one")
        w.label(issue, "status:running")

Run directly with pytest (`pytest tests/grite_writer.py`) for its own checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2

WAL_REF = "refs/grite/wal"
MAGIC = b"GRITECNK"
CODEC = b"cbor-v1"
ZERO_OID = "0" * 40

ISSUE_CREATED, ISSUE_UPDATED, COMMENT_ADDED, LABEL_ADDED, LABEL_REMOVED, STATE_CHANGED = 1, 2, 3, 4, 5, 6

_GRITE_ENV = {
    "GIT_AUTHOR_NAME": "grite",
    "GIT_AUTHOR_EMAIL": "grit@local",
    "GIT_COMMITTER_NAME": "grite",
    "GIT_COMMITTER_EMAIL": "grit@local",
}


# ids and encoding ---------------------------------------------------------------
def canonical(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _payload_for_id(kind: int, payload: list) -> list:
    if kind == ISSUE_CREATED and len(payload) == 3 and isinstance(payload[2], list):
        return [payload[0], payload[1], sorted(payload[2])]
    return payload


def event_preimage(
    issue_id: bytes, actor: bytes, ts: int, parent: bytes | None, kind: int, payload: list
) -> bytes:
    """The canonical CBOR of [1, issue_id, actor, ts, parent, kind, payload] (spec: event_id)."""
    return canonical([1, issue_id, actor, ts, parent, kind, _payload_for_id(kind, payload)])


def event_id(issue_id: bytes, actor: bytes, ts: int, parent: bytes | None, kind: int, payload: list) -> bytes:
    return blake(event_preimage(issue_id, actor, ts, parent, kind, payload))


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Ev:
    """One event as it will be stored; `event_id` is computed unless given (a forged one)."""

    issue_id: bytes
    actor: bytes
    ts: int
    kind: int
    payload: list
    parent: bytes | None = None
    sig: bytes | None = None
    event_id: bytes | None = None

    def __post_init__(self) -> None:
        self.payload = _payload_for_id(self.kind, self.payload)
        if self.event_id is None:
            self.event_id = event_id(self.issue_id, self.actor, self.ts, self.parent, self.kind, self.payload)

    def record(self) -> list:
        return [
            self.event_id,
            self.issue_id,
            self.actor,
            self.ts,
            self.parent,
            self.kind,
            self.payload,
            self.sig,
        ]


def encode_chunk(events: list[Ev]) -> bytes:
    header = MAGIC + struct.pack("<H", 1) + bytes([len(CODEC)]) + CODEC
    return header + canonical([e.record() for e in events])


# [session] blocks, written the way an attacker would ---------------------------------
class Raw(str):
    """A value already rendered (written into the block verbatim)."""


def render_value(value: Any) -> str:
    """`null`, a bare integer, a Raw string verbatim, or `"..."` with the text as given
    (no escaping at all: put TOML escapes such as `\\u0000` in the text yourself)."""
    if value is None:
        return "null"
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'


DEFAULT_BLOCK = {
    "state": "running",
    "session_id": "s-20250114-0001",
    "role": "witness",
    "session_type": "polecat",
    "engine": "codex",
    "worktree": "",
    "pid": None,
    "started_ts": 1700000000000,
    "last_heartbeat_ts": None,
    "exit_code": None,
    "exit_reason": None,
    "last_output_ref": None,
}


def raw_block(_defaults: bool = True, **fields: Any) -> str:
    """`[session]\\nkey = value\\n...[/session]`, values rendered by `render_value`.

    brat's twelve fields (from DEFAULT_BLOCK unless given) come first in brat's
    order, then any extra keys (e.g. `host`) in the order given. Pass
    `Raw('...')` for a pre-rendered value, `_defaults=False` for only the given keys.
    """
    values = dict(DEFAULT_BLOCK) if _defaults else {}
    values.update(fields)
    lines = ["[session]"] + [f"{k} = {render_value(v)}" for k, v in values.items()] + ["[/session]"]
    return "\n".join(lines)


def task_labels(task_id: str) -> list[str]:
    return ["type:task", f"task:{task_id}", "status:queued"]


# the writer --------------------------------------------------------------------
@dataclass
class GriteWriter:
    repo_path: Path | str
    actor_hex: str | None = None
    _pending: list[Ev] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.repo_path = Path(self.repo_path)
        if self.actor_hex is None:
            self.actor_hex = os.urandom(16).hex()
        self.actor = bytes.fromhex(self.actor_hex)
        assert len(self.actor) == 16

    # git plumbing -------------------------------------------------------------
    def _git(self, *args: str, input: bytes | None = None) -> str:
        out = subprocess.run(
            ["git", *args],
            cwd=self.repo_path,
            input=input,
            capture_output=True,
            env={**os.environ, **_GRITE_ENV},
        )
        if out.returncode != 0:
            raise RuntimeError(f"git {args[0]} failed: {out.stderr.decode(errors='replace')}")
        return out.stdout.decode().strip()

    def _blob(self, data: bytes) -> str:
        return self._git("hash-object", "-w", "--stdin", input=data)

    def _tree(self, entries: list[tuple[str, str, str]]) -> str:
        """entries: (mode, sha, name)."""
        text = "".join(
            f"{mode} {'tree' if mode == '040000' else 'blob'} {sha}\t{name}\n" for mode, sha, name in entries
        )
        return self._git("mktree", input=text.encode())

    def head(self) -> str | None:
        out = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", WAL_REF + "^{commit}"],
            cwd=self.repo_path,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() if out.returncode == 0 else None

    # writing --------------------------------------------------------------------
    def event(self, issue: str | bytes, kind: int, payload: list, ts: int | None = None, **extra: Any) -> Ev:
        issue_id = bytes.fromhex(issue) if isinstance(issue, str) else issue
        return Ev(issue_id, self.actor, now_ms() if ts is None else ts, kind, payload, **extra)

    def append(self, events: list[Ev], chunk: bytes | None = None) -> str:
        """One WAL commit holding `events` (or the given chunk bytes) on the current head."""
        assert events or chunk is not None
        data = encode_chunk(events) if chunk is None else chunk
        digest = hashlib.blake2b(data, digest_size=32).hexdigest()
        ts = events[0].ts if events else now_ms()
        day = datetime.fromtimestamp(ts / 1000, tz=UTC)
        tree = self._tree([("100644", self._blob(data), f"{digest}.bin")])
        for part in (f"{day.day:02d}", f"{day.month:02d}", f"{day.year:04d}"):
            tree = self._tree([("040000", tree, part)])
        tree_entries = [("040000", tree, "events")]
        for _ in range(20):
            parent = self.head()
            meta = {"schema_version": 1, "actor_id": self.actor_hex, "chunk_hash": digest, "prev_wal": parent}
            root = self._tree([("100644", self._blob(json.dumps(meta).encode()), "meta.json"), *tree_entries])
            args = ["commit-tree", root, "-m", f"WAL: {len(events)} events from {self.actor_hex[:8]}"]
            if parent:
                args += ["-p", parent]
            new = self._git(*args)
            done = subprocess.run(
                ["git", "update-ref", "-m", "grite_writer append", WAL_REF, new, parent or ZERO_OID],
                cwd=self.repo_path,
                capture_output=True,
            )
            if done.returncode == 0:
                return new
        raise RuntimeError("lost every race for refs/grite/wal")

    def _emit(self, ev: Ev) -> str:
        if self._pending is not None:
            self._pending.append(ev)
        else:
            self.append([ev])
        return ev.event_id.hex()

    @contextmanager
    def batch(self) -> Iterator[GriteWriter]:
        """Collect the events of the calls inside into one WAL commit."""
        self._pending = []
        try:
            yield self
            if self._pending:
                self.append(self._pending)
        finally:
            self._pending = None

    def create_issue(
        self,
        title: str,
        body: str = "",
        labels: list[str] | tuple = (),
        ts: int | None = None,
        issue_id: bytes | None = None,
    ) -> str:
        issue_id = issue_id or os.urandom(16)
        self._emit(self.event(issue_id, ISSUE_CREATED, [title, body, sorted(labels)], ts))
        return issue_id.hex()

    def comment(self, issue: str, body: str, ts: int | None = None) -> str:
        """A CommentAdded with `body` exactly as given (the raw mode: nothing is escaped)."""
        return self._emit(self.event(issue, COMMENT_ADDED, [body], ts))

    def label(self, issue: str, label: str, add: bool = True, ts: int | None = None) -> str:
        return self._emit(self.event(issue, LABEL_ADDED if add else LABEL_REMOVED, [label], ts))


# its own checks --------------------------------------------------------------------
CHECK_PREIMAGE = (
    "870150000102030405060708090a0b0c0d0e0f50101112131415161718191a1b1c1d1e1f1b0000018"
    "bcfe56800f60183645465737464426f64798263627567627030"
)
CHECK_EVENT_ID = "9c2aee7924bf7482dd3842c6ec32fd5103883b9d2354f63df2075ac61fe3d827"


def test_reproduces_the_spec_check_vector():
    issue = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    actor = bytes.fromhex("101112131415161718191a1b1c1d1e1f")
    payload = ["Test", "Body", ["p0", "bug"]]  # unsorted on purpose: sorted before hashing
    assert event_preimage(issue, actor, 1700000000000, None, 1, payload).hex() == CHECK_PREIMAGE
    ev = Ev(issue, actor, 1700000000000, ISSUE_CREATED, payload)
    assert ev.event_id.hex() == CHECK_EVENT_ID
    assert ev.payload == ["Test", "Body", ["bug", "p0"]]


def test_commit_layout_follows_the_spec(tmp_path):
    from .helpers import git, make_repo

    repo = make_repo(tmp_path / "repo")
    w = GriteWriter(repo)
    issue = w.create_issue("first", ts=1700000000000)
    first = w.head()
    w.comment(issue, "second")
    second = w.head()
    assert git(repo, "rev-parse", f"{second}^") == first
    assert git(repo, "log", "-1", "--format=%an <%ae>", second) == "grite <grit@local>"
    files = git(repo, "ls-tree", "-r", "--name-only", first).splitlines()
    assert len(files) == 2 and files[1] == "meta.json"
    assert files[0].startswith("events/2023/11/14/") and files[0].endswith(".bin")
    data = subprocess.run(
        ["git", "cat-file", "blob", f"{first}:{files[0]}"], cwd=repo, capture_output=True
    ).stdout
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    assert files[0] == f"events/2023/11/14/{digest}.bin"
    assert data[:18] == b"GRITECNK\x01\x00\x07cbor-v1"
    (record,) = cbor2.loads(data[18:])
    assert len(record) == 8 and record[1].hex() == issue and record[5] == ISSUE_CREATED
    meta = json.loads(git(repo, "cat-file", "blob", f"{second}:meta.json"))
    assert meta["prev_wal"] == first and meta["schema_version"] == 1
    assert meta["actor_id"] == w.actor_hex


def test_brat_reads_what_the_writer_wrote(tmp_path):
    from .helpers import brat_json, make_repo

    repo = make_repo(tmp_path / "repo")
    w = GriteWriter(repo)
    issue = w.create_issue("Written by grite_writer", "Paths: a.py", task_labels("t-20250114-beef"))
    with w.batch():
        w.comment(issue, "plain words first")
        w.comment(
            issue,
            "before\n"
            + raw_block(session_id="s-20250114-be01", pid=None, started_ts=now_ms(), host="elsewhere")
            + "\nafter",
        )
        w.label(issue, "priority:P1")
    tasks = brat_json("task", "list", cwd=repo)["tasks"]
    assert [(t["task_id"], t["grite_issue_id"], t["title"]) for t in tasks] == [
        ("t-20250114-beef", issue, "Written by grite_writer")
    ]
    assert "priority:P1" in tasks[0]["labels"]
    (s,) = brat_json("sessions", "list", "--all", cwd=repo)["sessions"]
    assert (s["session_id"], s["task_id"], s["status"], s["host"]) == (
        "s-20250114-be01",
        "t-20250114-beef",
        "running",
        "elsewhere",
    )
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []
