"""grite snapshots in use: cold builds start from one, sync carries and makes them, the CLI."""

from __future__ import annotations

import json
import sqlite3

import pytest

from brat_sessions.index import Index
from brat_sessions.issues.tasks import create_task
from brat_sessions.storage.repo import open_repo
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from .helpers import brat, brat_json, git, make_repo


def _tables(repo) -> dict:
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    try:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("issues", "members", "blocks", "sessions")
        }
    finally:
        db.close()


def _busy(repo, sessions: int = 6) -> list[str]:
    task = create_task(Workspace(repo), "T")
    t = Tracker(repo)
    ids = []
    for n in range(sessions):
        s = t.start(task.task_id)
        t.transition(s.session_id, "ready")
        if n % 2:
            t.exit(s.session_id, n)
        ids.append(s.session_id)
    return ids


def _rebuild(repo, snapshots: bool = True) -> Index:
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink(missing_ok=True)
    return Index(open_repo(repo), snapshots=snapshots).refresh()


def test_a_cold_build_from_a_snapshot_equals_a_full_replay(repo):
    _busy(repo)
    made = brat_json("snapshot", "create", cwd=repo)["snapshot"]
    _busy(repo, 3)  # commits after the snapshot are replayed on top of it
    full = _rebuild(repo, snapshots=False)
    assert full.from_snapshot is None
    clean = _tables(repo)
    quick = _rebuild(repo)
    assert quick.from_snapshot == made["ref"]
    assert _tables(repo) == clean
    listed = brat_json("snapshot", "list", cwd=repo)
    assert listed["total"] == 1 and listed["snapshots"][0]["wal_head"] == made["wal_head"]


def test_a_bad_snapshot_is_reported_and_skipped(repo):
    _busy(repo)
    git(repo, "update-ref", "refs/grite/snapshots/99999999999999", git(repo, "rev-parse", "HEAD"))
    _rebuild(repo)
    problems = brat_json("sessions", "doctor", cwd=repo)["problems"]
    assert [p["kind"] for p in problems] == ["bad_snapshot"]
    assert brat_json("sessions", "list", "--all", cwd=repo)["total"] == 6


def test_gc_keeps_the_newest(repo):
    _busy(repo, 1)
    for _ in range(3):
        brat_json("snapshot", "create", "--force", cwd=repo)  # (the same head each time)
    out = brat_json("snapshot", "gc", "--keep", "1", cwd=repo)
    assert len(out["deleted"]) == 2 and brat_json("snapshot", "list", cwd=repo)["total"] == 1
    assert brat("snapshot", "create", cwd=make_repo(repo.parent / "empty")).returncode == 3


def test_sync_makes_snapshots_past_the_threshold_and_carries_them(tmp_path):
    a = make_repo(tmp_path / "a")
    (a / ".brat").mkdir()
    (a / ".brat" / "sessions.yaml").write_text("snapshot_events: 5\n")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(a, "remote", "add", "origin", str(remote))
    _busy(a, 4)
    report = brat_json("sync", cwd=a)
    assert report["snapshot_created"] and report["snapshots_pushed"] == 1
    assert brat_json("sync", cwd=a)["snapshot_created"] is None  # nothing new since
    b = make_repo(tmp_path / "b")
    git(b, "remote", "add", "origin", str(remote))
    assert brat_json("sync", cwd=b)["snapshots_fetched"] == 1
    index = _rebuild(b)
    assert index.from_snapshot == report["snapshot_created"]
    assert brat_json("sessions", "list", "--all", cwd=b)["total"] == 4


def test_a_sync_that_loses_the_race_pushes_no_snapshot_of_its_lost_head(tmp_path):
    from brat_sessions.sync import Syncer

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    a, b = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    for clone in (a, b):
        git(clone, "remote", "add", "origin", str(remote))
    (a / ".brat").mkdir()
    (a / ".brat" / "sessions.yaml").write_text("snapshot_events: 1\n")
    _busy(a, 2)
    brat_json("sync", cwd=b)

    class Racing(Syncer):
        raced = False

        def push(self, local_head: str | None) -> None:
            if not self.raced:  # another clone's push lands between A's snapshot and A's push
                Racing.raced = True
                brat_json("task", "create", "B's", cwd=b)
                brat_json("sync", cwd=b)
            super().push(local_head)

    report = Racing(Workspace(a)).run()
    assert report.attempts == 2 and report.reappended_commits > 0
    remote_refs = git(remote, "for-each-ref", "--format=%(refname)", "refs/grite/snapshots/").split()
    wal = Workspace(remote).wal
    chain = set(wal.commit_ids())
    for ref in remote_refs:  # only snapshots of the log the remote holds
        wal_head = json.loads(git(remote, "show", f"{ref}:snapshot.json"))["wal_head"]
        assert wal_head in chain, ref


def test_a_snapshot_push_refused_by_a_hook_is_tried_again(tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    flag = tmp_path / "refuse"
    flag.touch()
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ngrep -q refs/grite/snapshots/ && test -e {flag} && exit 1\nexit 0\n")
    hook.chmod(0o755)
    a = make_repo(tmp_path / "a")
    git(a, "remote", "add", "origin", str(remote))
    _busy(a, 1)
    brat_json("sync", cwd=a)  # the log first: a hook refusing snapshots refuses only them
    brat_json("snapshot", "create", cwd=a)
    report = brat_json("sync", cwd=a)
    assert report["snapshots_pushed"] == 0
    assert any("tried again at the next syncs" in w for w in report["warnings"]), report["warnings"]
    flag.unlink()
    assert brat_json("sync", cwd=a)["snapshots_pushed"] == 1
    # a remote that always refuses them is offered each one three times, then no more
    flag.touch()
    brat_json("snapshot", "create", "--force", cwd=a)
    warned = [bool(brat_json("sync", cwd=a)["warnings"]) for _ in range(4)]
    assert warned == [True, True, True, False]


def test_snapshot_chunks_are_cut_smaller_when_events_are_large(monkeypatch):
    from brat_sessions.storage import snapshot as snapshot_module
    from brat_sessions.storage.chunk import decode_chunk
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    monkeypatch.setattr(snapshot_module, "MAX_CHUNK_BYTES", 50_000)
    events = [make_event(bytes(16), bytes(16), 1 + n, COMMENT_ADDED, ["x" * 9_000]) for n in range(30)]
    files = list(snapshot_module._chunk_files(events))
    assert all(len(data) <= 50_000 for data, _ in files) and len(files) > 1
    assert [e for data, _ in files for e in decode_chunk(data)] == events


def test_snapshot_chunks_are_cut_smaller_when_they_would_hold_too_many_items(monkeypatch):
    from brat_sessions.storage import chunk as chunk_module
    from brat_sessions.storage import snapshot as snapshot_module
    from brat_sessions.storage.chunk import decode_chunk
    from brat_sessions.storage.events import CONTEXT_UPDATED, make_event

    monkeypatch.setattr(chunk_module, "MAX_CHUNK_ITEMS", 20_000)  # (the writer asks the reader's rule)
    monkeypatch.setattr(chunk_module, "CHECK_AS_DECODED", 10_000)
    symbols = [[f"F{n}", "type", n, n + 2] for n in range(1_000)]  # each event ~5,000 items
    events = [
        make_event(bytes(16), bytes(16), 1 + n, CONTEXT_UPDATED, ["g.go", "go", symbols]) for n in range(12)
    ]
    files = list(snapshot_module._chunk_files(events))
    assert len(files) > 1  # every one of them readable, as grite's would be
    assert [e for data, _ in files for e in decode_chunk(data)] == events


@pytest.mark.parametrize("writer", ["brat", "another actor"])
def test_a_local_commit_too_large_to_read_here_is_carried_over_unread(tmp_path, monkeypatch, writer):
    # grite may read what brat refuses to: a sync never leaves a commit of its log behind
    from brat_sessions.storage import snapshot as snapshot_module
    from brat_sessions.storage import wal as wal_module
    from brat_sessions.sync import Syncer

    from .grite_writer import GriteWriter

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    a, b = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    for clone in (a, b):
        git(clone, "remote", "add", "origin", str(remote))
    _busy(a, 1)
    brat_json("sync", cwd=a)
    brat_json("sync", cwd=b)
    brat_json("task", "create", "B's", cwd=b)
    brat_json("sync", cwd=b)
    if writer == "brat":  # the chains part
        brat_json("task", "create", "A's", "--body", "x" * 5000, cwd=a)
    else:
        gw = GriteWriter(a)
        gw.append([gw.event(bytes(16), 3, ["x" * 5000])])
    big = git(a, "rev-parse", "refs/grite/wal")
    chunk = next(ln.split()[2] for ln in git(a, "ls-tree", "-r", big).splitlines() if ln.endswith(".bin"))
    monkeypatch.setattr(wal_module, "MAX_WAL_CHUNK_BYTES", 4096)
    report = Syncer(Workspace(a)).run()
    assert report.reappended_commits == 1 and any("carried over unread" in w for w in report.warnings)
    pushed = git(remote, "rev-parse", "refs/grite/wal")
    assert chunk in git(remote, "ls-tree", "-r", pushed)  # the very same chunk, on the remote
    monkeypatch.setattr(wal_module, "MAX_WAL_CHUNK_BYTES", 16 * 1024 * 1024)
    brat_json("sync", cwd=b)
    if writer == "brat":  # b reads it (its limit is the real one)
        assert "A's" in {t["title"] for t in brat_json("task", "list", cwd=b)["tasks"]}
    # and no snapshot leaves it out while this reader cannot read it
    monkeypatch.setattr(wal_module, "MAX_WAL_CHUNK_BYTES", 4096)
    from brat_sessions.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem, match="a snapshot would leave its events out"):
        snapshot_module.create_snapshot(Workspace(a).wal)


def test_gc_never_keeps_junk_in_place_of_a_good_snapshot(repo):
    _busy(repo, 1)
    good = brat_json("snapshot", "create", cwd=repo)["snapshot"]
    empty = git(repo, "hash-object", "-t", "tree", "-w", "--stdin")
    junk = git(repo, "commit-tree", empty, "-m", "not a snapshot")
    for n in range(1, 4):  # newer names than the good one, no snapshot.json
        git(repo, "update-ref", f"refs/grite/snapshots/{good['created_ts'] + n}", junk)
    out = brat_json("snapshot", "gc", "--keep", "3", cwd=repo)
    assert len(out["deleted"]) == 3
    assert [s["ref"] for s in brat_json("snapshot", "list", cwd=repo)["snapshots"]] == [good["ref"]]
