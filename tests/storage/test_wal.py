import json
import subprocess
import sys
from pathlib import Path

import pygit2

from brat_sessions.errors import CorruptCommit
from brat_sessions.storage import events as ev
from brat_sessions.storage.chunk import chunk_hash, encode_chunk
from brat_sessions.storage.events import make_event, new_issue_id
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import WAL_REF, Wal, WalCommit

from ..helpers import FIXTURES, brat, git

ACTOR = "101112131415161718191a1b1c1d1e1f"


def comment(issue: bytes, text: str, ts: int = 1700000000000):
    return make_event(issue, bytes.fromhex(ACTOR), ts, ev.COMMENT_ADDED, [text])


def raw_commit(wal: Wal, files: dict[str, bytes], parent: str | None) -> str:
    """A commit with exactly these files, published on the WAL ref (for corrupt-input tests)."""
    repo = wal.repo
    index = pygit2.Index()
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("grite", "grit@local")
    oid = str(
        repo.create_commit(None, sig, sig, "WAL: test", tree, [pygit2.Oid(hex=parent)] if parent else [])
    )
    assert wal.move_head(parent, oid)
    return oid


def test_append_writes_grite_layout(repo):
    wal = Wal(open_repo(repo))
    issue = new_issue_id()
    first, _ = wal.append(ACTOR, lambda head: [comment(issue, "one")])
    second, _ = wal.append(ACTOR, lambda head: [comment(issue, "two", 1700086400000)])
    files = git(repo, "ls-tree", "-r", "--name-only", second).splitlines()
    data = encode_chunk([comment(issue, "two", 1700086400000)])
    assert files == [f"events/2023/11/15/{chunk_hash(data)}.bin", "meta.json"]  # UTC date of the event
    meta = json.loads(git(repo, "show", f"{second}:meta.json"))
    assert meta == {"schema_version": 1, "actor_id": ACTOR, "chunk_hash": chunk_hash(data), "prev_wal": first}
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", second)
        == "grite <grit@local>|grite <grit@local>|WAL: 1 events from 10111213"
    )
    assert git(repo, "rev-parse", f"{second}^") == first
    assert [c.events[0].payload for c in wal.replay()] == [["one"], ["two"]]


def test_a_commit_of_an_event_past_year_9999_goes_in_the_last_date_folder(repo):
    wal = Wal(open_repo(repo))
    far, _ = wal.append(ACTOR, lambda head: [comment(new_issue_id(), "far", 2**63 - 1)])
    (path,) = git(repo, "ls-tree", "-r", "--name-only", far).splitlines()[:1]
    assert path.startswith("events/9999/12/31/")
    assert [c.events[0].ts_unix_ms for c in wal.replay()] == [2**63 - 1]


def test_replay_since_returns_only_new_commits(repo):
    wal = Wal(open_repo(repo))
    issue = new_issue_id()
    first, _ = wal.append(ACTOR, lambda head: [comment(issue, "one")])
    wal.append(ACTOR, lambda head: [comment(issue, "two")])
    assert [c.events[0].payload[0] for c in wal.replay(since=first)] == ["two"]


def test_reads_a_log_written_with_another_meta_style(repo):
    wal = Wal(open_repo(repo))
    data = bytes.fromhex((FIXTURES / "grite" / "check_vector_chunk.hex").read_text().strip())
    meta = (FIXTURES / "grite" / "meta_pretty.json").read_text().replace("__CHUNK_HASH__", chunk_hash(data))
    raw_commit(wal, {"meta.json": meta.encode(), f"events/2023/11/14/{chunk_hash(data)}.bin": data}, None)
    (commit,) = list(wal.replay())
    assert isinstance(commit, WalCommit)
    assert commit.events[0].payload == ["Test", "Body", ["bug", "p0"]]


def _good_files(issue: bytes, text: str, prev: str | None) -> dict[str, bytes]:
    data = encode_chunk([comment(issue, text)])
    meta = {"schema_version": 1, "actor_id": ACTOR, "chunk_hash": chunk_hash(data), "prev_wal": prev}
    return {"meta.json": json.dumps(meta).encode(), f"events/2023/11/14/{chunk_hash(data)}.bin": data}


def test_corrupt_commits_are_reported_and_skipped(repo):
    wal = Wal(open_repo(repo))
    issue = new_issue_id()
    head = raw_commit(wal, _good_files(issue, "before", None), None)
    good = _good_files(issue, "x", head)
    bin_name = next(k for k in good if k.endswith(".bin"))

    def with_chunk(data: bytes) -> dict[str, bytes]:
        meta = json.loads(good["meta.json"])
        meta["chunk_hash"] = chunk_hash(data)
        return {"meta.json": json.dumps(meta).encode(), f"events/2023/11/14/{chunk_hash(data)}.bin": data}

    bad_magic = with_chunk(b"NOTMAGIC" + good[bin_name][8:])
    bad_cbor = with_chunk(good[bin_name][:18] + b"\x81" + b"\xff" * 80)  # an array, then stray breaks
    wrong_id = bytearray(good[bin_name])
    wrong_id[-2] ^= (
        1  # the comment text ("x"), just before the null sig: the stored event_id no longer matches
    )
    no_meta = {bin_name: good[bin_name]}
    bad = {}
    for name, files in [
        ("magic", bad_magic),
        ("cbor", bad_cbor),
        ("event id", with_chunk(bytes(wrong_id))),
        ("meta", no_meta),
    ]:
        head = raw_commit(wal, files, head)
        bad[name] = head
    raw_commit(wal, _good_files(issue, "after", head), head)
    items = list(wal.replay())
    readable = [c.events[0].payload[0] for c in items if isinstance(c, WalCommit)]
    corrupt = {c.commit: c.reason for c in items if isinstance(c, CorruptCommit)}
    assert readable == ["before", "after"]
    assert "bad magic" in corrupt[bad["magic"]]
    assert "bad CBOR" in corrupt[bad["cbor"]]
    assert "does not match" in corrupt[bad["event id"]]
    assert "meta.json" in corrupt[bad["meta"]]


def test_corrupt_commit_is_named_by_list_and_the_rest_still_listed(repo, tracker, task):
    s = tracker.start(task.task_id)
    wal = tracker.ws.wal
    head = wal.head()
    files = _good_files(new_issue_id(), "x", head)
    files = {k: (b"NOTMAGIC" + v[8:] if k.endswith(".bin") else v) for k, v in files.items()}
    bin_data = next(v for k, v in files.items() if k.endswith(".bin"))
    meta = json.loads(files["meta.json"])
    meta["chunk_hash"] = chunk_hash(bin_data)
    bad = raw_commit(
        wal,
        {"meta.json": json.dumps(meta).encode(), f"events/2023/11/14/{chunk_hash(bin_data)}.bin": bin_data},
        head,
    )
    tracker.transition(s.session_id, "ready")
    out = brat("sessions", "list", cwd=repo)
    assert out.returncode == 0
    assert f"corrupt WAL commit {bad}: bad magic" in out.stderr
    assert "Traceback" not in out.stderr
    assert s.session_id in out.stdout and "ready" in out.stdout


def test_eight_processes_appending_lose_and_double_nothing(repo):
    wal = Wal(open_repo(repo))
    issue = new_issue_id()
    script = Path(__file__).parent / "appender.py"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(repo), "15", f"w{n}", issue.hex(), ACTOR])
        for n in range(8)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    texts = [e.payload[0] for e in wal.events()]
    assert sorted(texts) == sorted(f"w{n}-{i}" for n in range(8) for i in range(15))
    assert len({e.event_id for e in wal.events()}) == 120
    assert int(git(repo, "rev-list", "--count", WAL_REF)) == 120


def test_lost_compare_and_swap_is_reported(repo):
    wal = Wal(open_repo(repo))
    issue = new_issue_id()
    head, _ = wal.append(ACTOR, lambda h: [comment(issue, "a")])
    stale = wal.write_commit(None, ACTOR, [comment(issue, "b")])
    assert wal.move_head(None, stale) is False  # the ref exists already
    assert wal.move_head("0" * 40, stale) is False  # not the current head
    assert wal.head() == head


def test_linked_worktree_writes_the_shared_log(repo, tmp_path):
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    wal_wt = Wal(open_repo(tmp_path / "wt"))
    issue = new_issue_id()
    wal_wt.append(ACTOR, lambda h: [comment(issue, "from the worktree")])
    # a stale compare-and-swap from a worktree must fail too (libgit2 quirk guarded)
    stale = wal_wt.write_commit(None, ACTOR, [comment(issue, "b")])
    assert wal_wt.move_head(None, stale) is False
    assert [e.payload[0] for e in Wal(open_repo(repo)).events()] == ["from the worktree"]


def test_a_commit_whose_chunk_or_meta_is_too_big_is_named_and_skipped_unread(tmp_path):
    # decoding a chunk can take fifty times its size in memory: the size is checked from the
    # object's header first, on both read paths (libgit2, and git's plumbing for long logs)
    from brat_sessions.storage.wal import MAX_META_BYTES, MAX_WAL_CHUNK_BYTES

    from ..grite_writer import GriteWriter
    from ..helpers import brat_json, make_repo

    repo = make_repo(tmp_path / "r")
    brat_json("task", "create", "T", cwd=repo)
    gw = GriteWriter(repo)
    big = gw.append([], chunk=b"GRITECNK" + b"\x00" * MAX_WAL_CHUNK_BYTES)
    for stream_from in ("1", "500"):  # the plumbing stream, then libgit2 commit by commit
        (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
        env = {"BRAT_STREAM_FROM": stream_from}
        problems = brat_json("sessions", "doctor", cwd=repo, env=env)["problems"]
        (corrupt,) = [p for p in problems if p["kind"] == "corrupt_commit"]
        assert corrupt["commit_id"] == big and "larger than" in corrupt["message"]
        assert brat_json("task", "list", cwd=repo, env=env)["total"] == 1
    assert MAX_META_BYTES < MAX_WAL_CHUNK_BYTES
