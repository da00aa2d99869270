"""grite snapshots: written by us, written by hand from the spec, checked, chosen, collected.

Hand-built snapshots use only cbor2, hashlib and git plumbing (`hash-object`,
`mktree`, `commit-tree`, `update-ref`), never brat_sessions.storage.snapshot: what
they hold is what grite (or anyone who can push refs/grite/*) could write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import cbor2
import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brat_sessions.errors import EnvironmentProblem
from brat_sessions.storage import events as ev
from brat_sessions.storage import snapshot as snapmod
from brat_sessions.storage.events import make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.snapshot import (
    SNAPSHOT_PREFIX,
    Snapshot,
    SnapshotError,
    create_snapshot,
    find_snapshot,
    gc_snapshots,
    list_snapshots,
    load_snapshot,
    snapshot_due,
    usable_snapshot,
)
from brat_sessions.storage.wal import WAL_REF, Wal

from ..grite_writer import GriteWriter
from ..helpers import git, make_repo

ACTOR_HEX = "101112131415161718191a1b1c1d1e1f"
ACTOR = bytes.fromhex(ACTOR_HEX)
T0 = 1_700_000_000_000
GRITE_ENV = {
    "GIT_AUTHOR_NAME": "grite",
    "GIT_AUTHOR_EMAIL": "grit@local",
    "GIT_COMMITTER_NAME": "grite",
    "GIT_COMMITTER_EMAIL": "grit@local",
}


# a log of 2,500 events over 50 commits, written by the project's own writer ------------
def _log_events(total: int) -> list:
    issues = [bytes([n]) * 16 for n in range(1, 11)]
    out = [
        make_event(i, ACTOR, T0 + n, ev.ISSUE_CREATED, [f"issue {n}", "body", ["type:task"]])
        for n, i in enumerate(issues)
    ]
    n = len(out)
    while len(out) < total:
        issue = issues[n % len(issues)]
        if n % 5 == 0:
            out.append(make_event(issue, ACTOR, T0 + n, ev.LABEL_ADDED, [f"l{n % 7}"]))
        else:
            out.append(make_event(issue, ACTOR, T0 + n, ev.COMMENT_ADDED, [f"comment {n:05d}"]))
        n += 1
    return out


def _append_in_commits(wal: Wal, events: list, sizes: list[int]) -> list[str]:
    heads, i, k = [], 0, 0
    while i < len(events):
        part = events[i : i + sizes[k % len(sizes)]]
        head, _ = wal.append(ACTOR_HEX, lambda h, part=part: part)
        heads.append(head)
        i, k = i + len(part), k + 1
    return heads


@pytest.fixture(scope="module")
def base_log(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("base") / "repo")
    events = _log_events(2500)
    heads = _append_in_commits(Wal(open_repo(repo)), events, [1, 2, 5, 13, 40, 97, 3, 250, 77])
    git(repo, "repack", "-adq")  # one pack: each test's copy is quick
    git(repo, "prune-packed")
    shutil.rmtree(repo / ".git" / "hooks")
    return repo, events, heads


@pytest.fixture
def log(base_log, tmp_path):
    """A private copy of the 2,500-event log: (repo path, Wal, events, WAL heads oldest first)."""
    src, events, heads = base_log
    repo = tmp_path / "repo"
    shutil.copytree(src, repo)
    return repo, Wal(open_repo(repo)), events, heads


def blob(repo: Path, ref_or_oid: str) -> bytes:
    return subprocess.run(
        ["git", "cat-file", "blob", ref_or_oid], cwd=repo, capture_output=True, check=True
    ).stdout


# a snapshot written by hand, from the spec only ----------------------------------------
def hand_chunk(records: list) -> bytes:
    return b"GRITECNK" + struct.pack("<H", 1) + bytes([7]) + b"cbor-v1" + cbor2.dumps(records, canonical=True)


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def plumb(repo: Path, *args: str, input: bytes | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=repo, input=input, capture_output=True, env={**os.environ, **GRITE_ENV}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def mktree(repo: Path, entries: dict[str, tuple[str, str]]) -> str:
    """entries: name -> (mode, oid)."""
    text = "".join(
        f"{mode} {'tree' if mode == '040000' else 'blob'} {oid}\t{name}\n"
        for name, (mode, oid) in entries.items()
    )
    return plumb(repo, "mktree", input=text.encode())


def hand_snapshot(repo: Path, ms: int, wal_head: str, records: list, mutate=None) -> str:
    """Write refs/grite/snapshots/<ms> like grite does; `mutate(s)` may edit it first.

    `s` holds "files" (events/ name -> bytes), "meta" (the snapshot.json object),
    "json" (bytes overriding meta), "extra" (more top-level files).
    """
    parts = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    datas = [hand_chunk(p) for p in parts]
    s = {
        "files": {f"{i:04d}.bin": d for i, d in enumerate(datas)},
        "meta": {
            "schema_version": 1,
            "created_ts": ms,
            "wal_head": wal_head,
            "event_count": len(records),
            "chunks": [
                {"path": f"events/{i:04d}.bin", "chunk_hash": blake(d), "event_count": len(p)}
                for i, (p, d) in enumerate(zip(parts, datas))
            ],
        },
        "json": None,
        "extra": {},
    }
    if mutate is not None:
        mutate(s)
    data = s["json"] if s["json"] is not None else json.dumps(s["meta"], indent=2).encode()
    entries = {"snapshot.json": ("100644", plumb(repo, "hash-object", "-w", "--stdin", input=data))}
    events_tree = {
        n: ("100644", plumb(repo, "hash-object", "-w", "--stdin", input=d)) for n, d in s["files"].items()
    }
    if events_tree:
        entries["events"] = ("040000", mktree(repo, events_tree))
    for name, d in s["extra"].items():
        entries[name] = ("100644", plumb(repo, "hash-object", "-w", "--stdin", input=d))
    commit = plumb(
        repo, "commit-tree", mktree(repo, entries), "-m", f"Snapshot: {len(records)} events at {ms}"
    )
    ref = f"{SNAPSHOT_PREFIX}{ms}"
    plumb(repo, "update-ref", ref, commit, "")
    return ref


def records_up_to(wal: Wal, head: str) -> list:
    return [e.to_record() for e in wal.events(head)]


# creating ---------------------------------------------------------------------------
def test_create_writes_grites_layout(log):
    repo, wal, events, heads = log
    snap = create_snapshot(wal, now_ms=T0 + 5)
    assert snap == Snapshot(f"{SNAPSHOT_PREFIX}{T0 + 5}", T0 + 5, heads[-1], 2500, snap.commit_oid)
    assert git(repo, "rev-parse", snap.ref) == snap.commit_oid
    assert git(repo, "ls-tree", "-r", "--name-only", snap.ref).splitlines() == [
        "events/0000.bin",
        "events/0001.bin",
        "events/0002.bin",
        "snapshot.json",
    ]
    assert git(repo, "rev-list", "--parents", "-n1", snap.ref) == snap.commit_oid  # no parent
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", snap.ref)
        == f"grite <grit@local>|grite <grit@local>|Snapshot: 2500 events at {T0 + 5}"
    )
    text = blob(repo, f"{snap.ref}:snapshot.json").decode()
    assert text.startswith('{\n  "schema_version": 1,\n  "created_ts": ')  # pretty, as grite writes it
    meta = json.loads(text)
    assert list(meta) == ["schema_version", "created_ts", "wal_head", "event_count", "chunks"]
    assert (meta["schema_version"], meta["created_ts"], meta["wal_head"], meta["event_count"]) == (
        1,
        T0 + 5,
        heads[-1],
        2500,
    )
    assert [c["event_count"] for c in meta["chunks"]] == [1000, 1000, 500]
    start = 0
    for i, info in enumerate(meta["chunks"]):
        assert list(info) == ["path", "chunk_hash", "event_count"]
        data = blob(repo, f"{snap.ref}:events/{i:04d}.bin")
        assert info["path"] == f"events/{i:04d}.bin" and info["chunk_hash"] == blake(data)
        assert data[:18] == b"GRITECNK\x01\x00\x07cbor-v1"
        records = cbor2.loads(data[18:])
        assert records == [e.to_record() for e in events[start : start + info["event_count"]]]
        assert cbor2.dumps(records, canonical=True) == data[18:]
        start += info["event_count"]


def test_load_returns_exactly_the_full_replay(log):
    _repo, wal, events, _heads = log
    snap = create_snapshot(wal, now_ms=T0)
    loaded = load_snapshot(wal, snap)
    assert loaded == list(wal.events()) == events
    comments = [e for e in events if e.kind == ev.COMMENT_ADDED]
    assert len(comments) > 1900 and [e for e in loaded if e.kind == ev.COMMENT_ADDED] == comments
    (listed,) = list_snapshots(wal.repo)
    assert listed == snap


def test_snapshot_at_an_older_head_and_the_commits_after_it(log):
    _repo, wal, events, heads = log
    mid = heads[20]
    snap = create_snapshot(wal, head=mid, now_ms=T0)
    assert snap.wal_head == mid and snap.event_count == len(list(wal.events(mid)))
    found, problems = usable_snapshot(wal)
    assert problems == [] and found[0] == snap
    after = [e for c in wal.replay(since=snap.wal_head) for e in c.events]
    assert found[1] + after == events


def test_an_existing_ref_is_never_overwritten(log):
    repo, wal, _events, heads = log
    git(repo, "update-ref", f"{SNAPSHOT_PREFIX}{T0}", heads[0])
    git(repo, "update-ref", f"{SNAPSHOT_PREFIX}{T0 + 1}", heads[1])
    snap = create_snapshot(wal, now_ms=T0)
    assert snap.ref == f"{SNAPSHOT_PREFIX}{T0 + 2}" and snap.created_ts == T0 + 2
    assert json.loads(blob(repo, f"{snap.ref}:snapshot.json"))["created_ts"] == T0 + 2
    assert git(repo, "log", "-1", "--format=%s", snap.ref) == f"Snapshot: 2500 events at {T0 + 2}"
    assert git(repo, "rev-parse", f"{SNAPSHOT_PREFIX}{T0}") == heads[0]
    assert git(repo, "rev-parse", f"{SNAPSHOT_PREFIX}{T0 + 1}") == heads[1]


def test_no_log_no_snapshot(repo):
    wal = Wal(open_repo(repo))
    assert create_snapshot(wal, now_ms=T0) is None
    assert usable_snapshot(wal) == (None, [])
    assert list_snapshots(wal.repo) == []


def test_an_incomplete_log_is_not_snapshotted(tmp_path):
    """A shallow clone: its oldest commit's parent is hidden by git. Refuse."""
    origin = make_repo(tmp_path / "origin")
    gw = GriteWriter(origin)
    for n in range(3):
        gw.create_issue(f"issue {n}")
    ci = make_repo(tmp_path / "ci")
    git(ci, "fetch", "-q", "--depth", "1", f"file://{origin}", f"+{WAL_REF}:{WAL_REF}")
    wal = Wal(open_repo(ci))
    with pytest.raises(EnvironmentProblem, match="incomplete"):
        create_snapshot(wal, now_ms=T0)
    assert list_snapshots(wal.repo) == []


def test_a_root_commit_that_names_a_prev_wal_is_the_logs_first(repo):
    """meta.json's prev_wal on a commit that has no parent is the writer's word alone:
    the log starts there (anyone could push one to make every clone's log incomplete)."""
    wal = Wal(open_repo(repo))
    data = hand_chunk([make_event(bytes(16), ACTOR, T0, ev.COMMENT_ADDED, ["x"]).to_record()])
    meta = {"schema_version": 1, "actor_id": ACTOR_HEX, "chunk_hash": blake(data), "prev_wal": "ab" * 20}
    tree = mktree(
        repo, {f"{blake(data)}.bin": ("100644", plumb(repo, "hash-object", "-w", "--stdin", input=data))}
    )
    for part in ("14", "11", "2023"):
        tree = mktree(repo, {part: ("040000", tree)})
    root = mktree(
        repo,
        {
            "events": ("040000", tree),
            "meta.json": (
                "100644",
                plumb(repo, "hash-object", "-w", "--stdin", input=json.dumps(meta).encode()),
            ),
        },
    )
    plumb(repo, "update-ref", WAL_REF, plumb(repo, "commit-tree", root, "-m", "WAL: 1"), "")
    made = create_snapshot(wal, now_ms=T0)
    assert made is not None and made.event_count == 1 and wal.root_gap is None


# written by grite ---------------------------------------------------------------------
def test_a_snapshot_written_by_grite_is_used(repo):
    w = GriteWriter(repo, ACTOR_HEX)
    written = []
    for batch in range(3):
        issue, ts = os.urandom(16), T0 + batch * 10_000
        evs = [w.event(issue, 1, [f"issue {batch}", "", ["type:task"]], ts)]
        evs += [
            w.event(issue, 3, [f"comment {batch}-{n}"], ts + n + 1) for n in range(600 if batch < 2 else 30)
        ]
        head = w.append(evs)
        written.append(evs)
        if batch == 1:
            snap_head = head
    wal = Wal(open_repo(repo))
    ref = hand_snapshot(repo, T0, snap_head, [e.record() for e in written[0] + written[1]])
    found, problems = usable_snapshot(wal)
    assert problems == []
    snap, events = found
    assert (snap.ref, snap.created_ts, snap.wal_head, snap.event_count) == (ref, T0, snap_head, 1202)
    assert [e.to_record() for e in events] == [e.record() for e in written[0] + written[1]]
    after = [e.to_record() for c in wal.replay(since=snap.wal_head) for e in c.events]
    assert after == [e.record() for e in written[2]]
    assert [e.to_record() for e in events] + after == [e.to_record() for e in wal.events()]


def test_lenient_reading_compact_json_any_key_order_and_extra_top_level_files(log):
    repo, wal, events, heads = log

    def compact(s):
        s["json"] = json.dumps(dict(reversed(list(s["meta"].items()))), separators=(",", ":")).encode()
        s["extra"]["README"] = b"made by hand\n"

    ref = hand_snapshot(repo, T0, heads[-1], records_up_to(wal, heads[-1]), compact)
    found, problems = usable_snapshot(wal)
    assert problems == [] and found[0].ref == ref and found[1] == events


# skipped with a reason, an older one used -----------------------------------------------
def _flip_comment(data: bytes) -> bytes:
    at = data.index(b"comment ")
    return data[:at] + b"C" + data[at + 1 :]


def _rehash(s, name: str, data: bytes) -> None:
    s["files"][name] = data
    s["meta"]["chunks"][int(name[:4])]["chunk_hash"] = blake(data)


def _set(path, value):
    def mutate(s):
        target = s["meta"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _off_chain(repo: Path) -> str:
    return git(repo, "rev-parse", "main")


def _one_more_record(s):
    extra = make_event(bytes(16), ACTOR, T0, ev.COMMENT_ADDED, ["extra"]).to_record()
    records = cbor2.loads(s["files"]["0000.bin"][18:]) + [extra]
    _rehash(s, "0000.bin", hand_chunk(records))
    s["meta"]["chunks"][0]["event_count"] = 1001
    s["meta"]["event_count"] += 1


def _flood_chunk(s):
    """50,000 records with wrong ids where 1000 are listed: refused before any id is checked."""
    junk = [bytes(32)] + cbor2.loads(s["files"]["0000.bin"][18:])[0][1:]
    _rehash(s, "0000.bin", hand_chunk([junk] * 50_000))


CORRUPTIONS = {
    "chunk hash": (
        lambda s: s["files"].update({"0001.bin": _flip_comment(s["files"]["0001.bin"])}),
        "events/0001.bin does not match its chunk_hash",
    ),
    "event id": (
        lambda s: _rehash(s, "0002.bin", _flip_comment(s["files"]["0002.bin"])),
        "does not match its content",
    ),
    "bad magic": (lambda s: _rehash(s, "0000.bin", b"NOTMAGIC" + s["files"]["0000.bin"][8:]), "bad magic"),
    "event_count lie": (_set(["event_count"], 2501), "event_count 2501 is not the sum"),
    "huge event_count": (_set(["event_count"], 10**15), "is not the sum"),
    "chunk count lie": (
        lambda s: (_set(["chunks", 2, "event_count"], 499)(s), _set(["event_count"], 2499)(s)),
        "holds 500 events, not 499",
    ),
    "chunk over 1000": (_one_more_record, "not between 0 and 1000"),
    "chunk flood": (_flood_chunk, "events/0000.bin holds 50000 events, not 1000"),
    "chunk left out": (
        lambda s: (s["meta"]["chunks"].pop(), _set(["event_count"], 2000)(s)),
        "does not list: 0002.bin",
    ),
    "chunk missing": (lambda s: s["files"].pop("0001.bin"), "events/0001.bin is missing"),
    "path": (_set(["chunks", 1, "path"], "events/1.bin"), "chunks[1].path"),
    "order": (lambda s: s["meta"]["chunks"].reverse(), "chunks[0].path"),
    "unlisted file": (lambda s: s["files"].update({"extra.bin": b"x"}), "does not list: extra.bin"),
    "bad json": (lambda s: s.update(json=b'{"schema_version": 1, '), "not valid JSON"),
    "not an object": (lambda s: s.update(json=b"[1, 2]"), "not an object"),
    "huge json": (
        lambda s: s.update(json=json.dumps(s["meta"]).encode() + b" " * snapmod.MAX_JSON_BYTES),
        "larger than",
    ),
    "schema 2": (_set(["schema_version"], 2), "unsupported schema_version 2"),
    "no wal_head": (lambda s: s["meta"].pop("wal_head"), "wal_head is not a commit id"),
    "too many chunks": (_set(["chunks"], [{}] * (snapmod.MAX_CHUNKS + 1)), "more than 10000 chunks"),
    "wal_head unknown": (_set(["wal_head"], "ab" * 20), "is not in this repository"),
    "wal_head off chain": (None, "is not on the first-parent chain"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_bad_snapshot_is_skipped_with_its_reason_and_an_older_one_used(log, name):
    repo, wal, events, heads = log
    mutate, reason = CORRUPTIONS[name]
    older = hand_snapshot(repo, T0, heads[10], records_up_to(wal, heads[10]))
    if name == "wal_head off chain":
        mutate = _set(["wal_head"], _off_chain(repo))
    newer = hand_snapshot(repo, T0 + 1, heads[-1], records_up_to(wal, heads[-1]), mutate)
    found, problems = usable_snapshot(wal)
    assert [ref for ref, _ in problems] == [newer]
    assert reason in problems[0][1]
    snap, loaded = found
    assert snap.ref == older and snap.wal_head == heads[10]
    assert loaded + [e for c in wal.replay(since=snap.wal_head) for e in c.events] == events
    listed_newer = list_snapshots(wal.repo)[0]
    assert listed_newer.ref == newer
    if not name.startswith("wal_head"):  # the content itself is bad: load_snapshot says why
        with pytest.raises(SnapshotError) as exc:
            load_snapshot(wal, listed_newer)
        assert exc.value.ref == newer and reason in exc.value.reason


def test_unreadable_json_is_listed_with_empty_fields_and_odd_refs_are_ignored(log):
    repo, wal, _events, heads = log
    hand_snapshot(repo, 9, heads[0], records_up_to(wal, heads[0]))
    hand_snapshot(repo, 100, heads[1], records_up_to(wal, heads[1]), lambda s: s.update(json=b"nope"))
    hand_snapshot(repo, 10, heads[2], records_up_to(wal, heads[2]))
    for odd in ("latest", "12/34", "-5", "1e3"):
        git(repo, "update-ref", SNAPSHOT_PREFIX + odd, heads[0])
    blob_oid = plumb(repo, "hash-object", "-w", "--stdin", input=b"not a commit")
    git(repo, "update-ref", f"{SNAPSHOT_PREFIX}50", blob_oid)
    listed = list_snapshots(wal.repo)
    assert [s.ref[len(SNAPSHOT_PREFIX) :] for s in listed] == ["100", "50", "10", "9"]  # by number
    bad, blob_ref = listed[0], listed[1]
    assert (bad.created_ts, bad.wal_head, bad.event_count) == (100, None, None)
    assert bad.commit_oid is not None and "not valid JSON" in bad.problem
    assert (blob_ref.commit_oid, blob_ref.problem) == (None, "the ref does not point at a commit")
    assert (listed[2].wal_head, listed[2].event_count, listed[2].problem) == (
        heads[2],
        len(records_up_to(wal, heads[2])),
        None,
    )
    found, problems = usable_snapshot(wal)
    assert found[0].ref == f"{SNAPSHOT_PREFIX}10"
    assert [ref[len(SNAPSHOT_PREFIX) :] for ref, _ in problems] == ["100", "50"]
    with pytest.raises(SnapshotError, match="not valid JSON"):
        load_snapshot(wal, bad)


def test_none_usable_means_a_full_replay(log):
    repo, wal, _events, heads = log
    hand_snapshot(repo, T0, heads[-1], records_up_to(wal, heads[-1]), _set(["event_count"], 1))
    hand_snapshot(repo, T0 + 1, _off_chain(repo), [])
    found, problems = usable_snapshot(wal)
    assert found is None and len(problems) == 2


def test_a_flood_of_bad_snapshots_costs_bounded_work(log):
    repo, wal, _events, heads = log
    good = hand_snapshot(repo, 1, heads[3], records_up_to(wal, heads[3]))
    bad_records = records_up_to(wal, heads[5])
    for n in range(snapmod.MAX_LOADS + 1):
        hand_snapshot(repo, 10 + n, heads[5], bad_records, _set(["chunks", 0, "chunk_hash"], "0" * 64))
    found, problems = usable_snapshot(wal)
    assert found is None
    assert len(problems) == snapmod.MAX_LOADS + 1 and "not checked" in problems[-1][1]
    assert good not in [ref for ref, _ in problems]


def test_a_snapshot_of_the_current_head_needs_no_replay(log):
    _repo, wal, _events, heads = log
    snap = create_snapshot(wal, now_ms=T0)
    found, problems = usable_snapshot(wal, heads[-1])
    assert found[0] == snap and list(wal.replay(since=snap.wal_head)) == []
    found, problems = usable_snapshot(wal, heads[-2])  # the snapshot is newer than this head
    assert found is None and "not on the first-parent chain" in problems[0][1]


# gc and thresholds ---------------------------------------------------------------------
def test_gc_keeps_the_n_newest(log):
    repo, wal, _events, heads = log
    refs = [
        create_snapshot(wal, head=heads[i], now_ms=ms).ref
        for i, ms in [(0, 9), (1, 10), (2, 200), (3, 30), (4, 1000)]
    ]
    git(repo, "update-ref", f"{SNAPSHOT_PREFIX}latest", heads[0])
    assert gc_snapshots(wal, 2) == [refs[3], refs[1], refs[0]]  # 30, 10, 9
    assert [s.ref for s in list_snapshots(wal.repo)] == [refs[4], refs[2]]  # 1000, 200
    assert gc_snapshots(wal, 5) == []
    assert gc_snapshots(wal, 0) == [refs[4], refs[2]]
    assert list_snapshots(wal.repo) == []
    assert git(repo, "rev-parse", f"{SNAPSHOT_PREFIX}latest") == heads[0]  # not a snapshot: kept
    with pytest.raises(ValueError):
        gc_snapshots(wal, -1)


DAY = 86_400_000


@pytest.mark.parametrize(
    "latest_ts,events_since,due",
    [
        (None, 10_000, False),
        (None, 10_001, True),
        (T0, 10_000, False),
        (T0, 10_001, True),
        (T0 - 7 * DAY, 1, False),
        (T0 - 7 * DAY - 1, 1, True),
        (T0 - 30 * DAY, 0, False),  # nothing new since: it would repeat the last one
        (T0 + DAY, 5, False),  # from the future (skew): only the count can make it due
    ],
)
def test_snapshot_due_thresholds(repo, latest_ts, events_since, due):
    wal = Wal(open_repo(repo))
    latest = None if latest_ts is None else Snapshot("r", latest_ts, "a" * 40, 1, "b" * 40)
    assert snapshot_due(wal, latest, events_since, T0) is due


def test_snapshot_due_counts_events_since_the_latest_from_the_log(log):
    _repo, wal, events, heads = log
    snap = create_snapshot(wal, head=heads[-2], now_ms=T0)
    after = len(events) - snap.event_count
    assert after > 0
    assert snapshot_due(wal, snap, None, T0, max_events=after - 1) is True
    assert snapshot_due(wal, snap, None, T0, max_events=after) is False
    assert snapshot_due(wal, None, None, T0, max_events=2499) is True


# properties ----------------------------------------------------------------------------
POOL = _log_events(2600)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=6).filter(lambda s: sum(s) <= 2600))
def test_any_log_round_trips_in_chunks_of_1000(sizes):
    with tempfile.TemporaryDirectory() as tmp:
        pygit2.init_repository(tmp)
        wal = Wal(open_repo(tmp))
        total = sum(sizes)
        _append_in_commits(wal, POOL[:total], sizes)
        snap = create_snapshot(wal, now_ms=T0)
        meta = json.loads(wal.repo.revparse_single(f"{snap.ref}:snapshot.json").data)
        assert [c["event_count"] for c in meta["chunks"]] == [1000] * (total // 1000) + (
            [total % 1000] if total % 1000 else []
        )
        assert load_snapshot(wal, snap) == POOL[:total]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_chunk_entries = st.fixed_dictionaries(
    {
        "path": st.sampled_from(["events/0000.bin", "events/0001.bin", 7]),
        "chunk_hash": st.sampled_from(["0" * 64, "zz", None]),
        "event_count": st.sampled_from([0, 1, 1000, 1001, -1, True]),
    }
)
_metas = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, True, 2, "1"]),
        "wal_head": st.sampled_from(["HEAD", "ab" * 20, "ab" * 32, 5]),
        "event_count": st.sampled_from([0, 1, 2, -1, 10**30, 1.5]),
        "chunks": st.lists(_chunk_entries, max_size=3) | _json_values,
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=64),
        _metas.map(lambda m: json.dumps(m).encode()),
        _json_values.map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_snapshot_json_is_reported_never_raised(repo, data):
    pg = pygit2.Repository(str(repo / ".git"))
    if pg.references.get(WAL_REF) is None:  # the first example writes the log
        Wal(open_repo(repo)).append(
            ACTOR_HEX, lambda h: [make_event(bytes(16), ACTOR, T0, ev.COMMENT_ADDED, ["x"])]
        )
    head = str(pg.references[WAL_REF].target)
    data = data.replace(b'"HEAD"', f'"{head}"'.encode())
    sj = pg.create_blob(data)
    chunk = pg.create_blob(hand_chunk([]))
    folder = pg.TreeBuilder()
    folder.insert("0000.bin", chunk, pygit2.enums.FileMode.BLOB)
    root = pg.TreeBuilder()
    root.insert("snapshot.json", sj, pygit2.enums.FileMode.BLOB)
    root.insert("events", folder.write(), pygit2.enums.FileMode.TREE)
    sig = pygit2.Signature("grite", "grit@local")
    commit = pg.create_commit(None, sig, sig, "Snapshot", root.write(), [])
    pg.references.create(f"{SNAPSHOT_PREFIX}1", commit, force=True)
    wal = Wal(open_repo(repo))
    found, problems = usable_snapshot(wal)  # no chunk_hash offered can match: never usable
    assert found is None and [ref for ref, _ in problems] == [f"{SNAPSHOT_PREFIX}1"]


def _index_tables(repo: Path, snapshots: bool) -> tuple[dict, str | None]:
    from brat_sessions.index import Index

    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink(missing_ok=True)
    index = Index(open_repo(repo), snapshots=snapshots).refresh()
    tables = {
        t: sorted(index.db.execute(f"SELECT * FROM {t}").fetchall())
        for t in ("issues", "members", "blocks", "sessions")
    }
    tables["problems"] = sorted(index.db.execute("SELECT kind, problem_id FROM problems").fetchall())
    used = index.from_snapshot
    index.close()
    return tables, used


@pytest.mark.parametrize("name", ["chunk hash", "event id", "chunk count lie"])
def test_a_snapshot_found_bad_halfway_through_the_fold_leaves_nothing_behind(log, name):
    """The index folds a snapshot chunk by chunk; a bad later chunk undoes the earlier ones."""
    repo, wal, _events, heads = log
    mutate, _reason = CORRUPTIONS[name]
    older = hand_snapshot(repo, T0, heads[10], records_up_to(wal, heads[10]))
    newer = hand_snapshot(repo, T0 + 1, heads[-1], records_up_to(wal, heads[-1]), mutate)
    replayed, _ = _index_tables(repo, snapshots=False)
    folded, used = _index_tables(repo, snapshots=True)
    assert used == older
    assert folded.pop("problems") == [("bad_snapshot", f"snapshot:{newer}")]
    replayed.pop("problems")
    assert folded == replayed


def test_a_snapshot_over_the_byte_cap_is_neither_read_nor_made(log, monkeypatch):
    repo, wal, _events, heads = log
    ref = hand_snapshot(repo, T0, heads[-1], records_up_to(wal, heads[-1]))
    snap = find_snapshot(wal.repo, ref)
    assert len(load_snapshot(wal, snap)) == snap.event_count  # (under the real cap)
    monkeypatch.setattr(snapmod, "MAX_SNAPSHOT_BYTES", 1000)  # (sizes come from object headers)
    with pytest.raises(SnapshotError, match="chunks add up to more than 1,000 bytes"):
        load_snapshot(wal, snap)
    loose = git(repo, "count-objects")
    with pytest.raises(EnvironmentProblem, match="more than one snapshot may hold"):
        create_snapshot(wal, now_ms=T0 + 1)
    assert git(repo, "count-objects") == loose  # (nothing written: a sync tries it every time)


def test_one_snapshot_commit_under_many_names_is_read_once(log):
    repo, wal, _events, heads = log
    bad = hand_snapshot(
        repo, 10, heads[5], records_up_to(wal, heads[5]), _set(["chunks", 0, "chunk_hash"], "0" * 64)
    )
    for n in range(11, 14):
        git(repo, "update-ref", f"{SNAPSHOT_PREFIX}{n}", git(repo, "rev-parse", bad))
    found, problems = usable_snapshot(wal)
    assert found is None and len(problems) == 4
    assert sum("does not match its chunk_hash" in why for _, why in problems) == 1  # read once
    assert sum("the same snapshot commit as" in why for _, why in problems) == 3
