import json
import sqlite3
import subprocess
import sys

import pytest

from brat_sessions.index import FORMAT_VERSION, Index
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

from .helpers import T0, WORKTREE_ENV, append_raw, block_text, brat, brat_json
from .sessions.test_projection import comment, created


def listing(repo):
    sessions = brat_json("sessions", "list", "--all", cwd=repo)["sessions"]
    for s in sessions:
        s.pop("heartbeat_age_ms")  # depends on the clock, not on the log
    return sessions


def test_index_lives_in_the_git_dir_and_tracks_the_head(repo):
    append_raw(repo, [created()])
    head = append_raw(repo, [comment(block_text(), 10)])
    index = Index(open_repo(repo)).refresh()
    assert index.path == repo / ".git" / "brat_sessions" / "index.sqlite"
    assert index.indexed_head() == head
    assert not (repo / "brat_sessions").exists()


def test_a_log_marked_for_a_rebuild_is_folded_anew_even_by_another_process(repo, monkeypatch):
    """What a sync does when its re-append leaves out events this index folded: mark, move
    the log, and die before refreshing; the next brat process builds the index anew. A
    mark whose sync never moved the log costs nothing while the log only grows."""
    append_raw(repo, [created()])
    base = append_raw(repo, [comment(block_text(state="running"), 10)])
    append_raw(repo, [comment(block_text(state="exit", exit_code=0, exit_reason="completed"), 20)])
    index = Index(open_repo(repo)).refresh()
    assert index.session("s-20250114-0001").status == "exit"
    wal = Wal(open_repo(repo))
    index.mark_for_rebuild()  # a sync that loses its race: the log stays...
    index.mark_for_rebuild(-1)  # ...and it takes its mark back
    index.mark_for_rebuild()  # another, killed before it could move the log
    append_raw(repo, [comment(block_text(session_id="s-2"), 25)])
    replayed = []
    original = Wal.read_commit
    monkeypatch.setattr(Wal, "read_commit", lambda self, c: replayed.append(c) or original(self, c))
    index.refresh()
    assert len(replayed) == 1  # only the new commit: the indexed head is still in the log
    monkeypatch.undo()
    grown = wal.head()
    assert wal.move_head(grown, base)  # another sync re-appends without the exit...
    new = append_raw(repo, [comment(block_text(state="running", pid=7), 30)])
    assert brat_json("sessions", "show", "s-20250114-0001", cwd=repo)["session"]["status"] == "running"
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []
    # a writer that read the head before the log moved folds nothing of it now
    late = Index(open_repo(repo))
    assert late.indexed_head() == new
    late.refresh(grown)
    assert late.indexed_head() == new and late.session("s-20250114-0001").status == "running"


def test_refresh_replays_only_new_commits(repo, monkeypatch):
    append_raw(repo, [created()])
    append_raw(repo, [comment(block_text(state="spawned"), 10)])
    index = Index(open_repo(repo)).refresh()
    append_raw(repo, [comment(block_text(state="running"), 20)])
    seen = []
    original = Wal.read_commit
    monkeypatch.setattr(Wal, "read_commit", lambda self, c: seen.append(c) or original(self, c))
    index.refresh()
    assert len(seen) == 1
    assert index.session("s-20250114-0001").status == "running"


def test_damaged_or_old_index_is_rebuilt_with_one_line(repo):
    append_raw(repo, [created()])
    append_raw(repo, [comment(block_text(), 10)])
    before = listing(repo)
    path = repo / ".git" / "brat_sessions" / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        (repo / ".git" / "brat_sessions" / f"index.sqlite{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    out = brat("sessions", "list", "--all", "--json", cwd=repo)
    assert out.returncode == 0 and "is damaged" in out.stderr and "rebuilding" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={FORMAT_VERSION - 1}")
    db.commit()
    db.close()
    out = brat("sessions", "list", "--all", "--json", cwd=repo)
    assert out.returncode == 0 and "another format" in out.stderr
    assert listing(repo) == before


def test_rebuild_from_scratch_equals_incremental(repo):
    append_raw(repo, [created()])
    for i, state in enumerate(["spawned", "ready", "running", "exit"]):
        append_raw(repo, [comment(block_text(state=state, last_heartbeat_ts=T0 + i), 10 + i)])
        listing(repo)  # refresh one commit at a time
    incremental = listing(repo)
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    assert listing(repo) == incremental


REFRESHER = """
import sys
from brat_sessions.index import Index
from brat_sessions.storage.repo import open_repo
for _ in range(5):
    Index(open_repo(sys.argv[1])).refresh().sessions(True)
"""


def test_concurrent_refreshers_do_not_corrupt_the_index(repo):
    append_raw(repo, [created()])
    writers = [subprocess.Popen([sys.executable, "-c", REFRESHER, str(repo)]) for _ in range(4)]
    for i in range(20):
        append_raw(repo, [comment(block_text(session_id=f"s-{i:02d}"), 10 + i)])
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    assert len(listing(repo)) == 20
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_long_replays_read_through_git_give_the_same_index(repo, monkeypatch):
    """The paths a big repository takes (git plumbing, one-pass re-derivation) agree."""
    from brat_sessions.sessions import projection as session_proj
    from brat_sessions.storage import wal as wal_module

    append_raw(repo, [created()])
    for i in range(30):
        append_raw(repo, [comment(block_text(session_id=f"s-{i:02d}", state="running"), 10 + i)])
    append_raw(repo, [comment("[session]\nbroken\n[/session]", 99)])
    serial = Index(open_repo(repo)).refresh()
    expected = ([vars(s) for s in serial.sessions(True)], serial.problems())
    serial.close()
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    monkeypatch.setattr(wal_module, "STREAM_FROM", 1)
    monkeypatch.setattr(session_proj, "STREAM_FROM", 1)
    parallel = Index(open_repo(repo)).refresh()
    assert ([vars(s) for s in parallel.sessions(True)], parallel.problems()) == expected


def test_a_long_cold_build_shows_progress_on_a_terminal_only(repo):
    from .helpers import brat_on_terminal

    append_raw(repo, [created()])
    for i in range(30):
        append_raw(repo, [comment(block_text(session_id=f"s-2025-{i:04d}"), 10 + i)])
    index = repo / ".git" / "brat_sessions" / "index.sqlite"
    index.unlink(missing_ok=True)
    rc, screen = brat_on_terminal("sessions", "list", "--json", cwd=repo, env={"BRAT_PROGRESS_AFTER": "0"})
    assert rc == 0 and "reading the log: 31/31 commits" in screen and "folding sessions" in screen
    index.unlink()
    streamed = {"BRAT_PROGRESS_AFTER": "0", "BRAT_STREAM_FROM": "1"}  # the total comes from git
    rc, screen = brat_on_terminal("sessions", "list", "--json", cwd=repo, env=streamed)
    assert rc == 0 and "reading the log: 31/31 commits" in screen and "folding sessions" in screen
    index.unlink()
    piped = brat("sessions", "list", "--json", cwd=repo, env={"BRAT_PROGRESS_AFTER": "0"})
    assert piped.returncode == 0 and "reading the log" not in piped.stderr


def _blocks(first: int, count: int) -> list:
    return [
        comment(block_text(session_id=f"s-{n:04d}", host="h" * 200), T0 + n)
        for n in range(first, first + count)
    ]


def test_a_full_disk_leaves_the_index_as_it_was_and_the_command_answers(repo):
    """A refresh that cannot write (a file size limit stands in for a full disk): SQLite
    rolls back by itself; the index was deleted and rebuilt in a loop until Python's
    recursion limit, and was lost. It is kept, and the command answers from a copy in
    memory, with one warning."""
    import os
    import resource

    append_raw(repo, [created()])
    for k in range(6):
        append_raw(repo, _blocks(100 * k, 100))
    assert len(brat_json("sessions", "list", cwd=repo)["sessions"]) == 600
    path = repo / ".git" / "brat_sessions" / "index.sqlite"
    inode = path.stat().st_ino
    for k in range(6, 12):
        append_raw(repo, _blocks(100 * k, 100))
    limit = 700 * 1024
    out = subprocess.run(
        [sys.executable, "-P", "-m", "brat_sessions.cli", "sessions", "list", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads(out.stdout)["data"]["sessions"]) == 1200
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "cannot be written" in lines[0] and "copy in memory" in lines[0], lines[:3]
    assert path.stat().st_ino == inode  # the index is the one it was
    assert len(brat_json("sessions", "list", cwd=repo)["sessions"]) == 1200


def test_a_log_set_back_or_deleted_leaves_nothing_of_the_commits_it_lost(repo):
    from .helpers import git

    append_raw(repo, [created()])
    kept = append_raw(repo, _blocks(0, 1))
    append_raw(repo, _blocks(1, 1))
    assert [s["session_id"] for s in brat_json("sessions", "list", cwd=repo)["sessions"]] == [
        "s-0000",
        "s-0001",
    ]
    git(repo, "update-ref", "refs/grite/wal", kept)  # a reset, by hand or by another tool
    assert [s["session_id"] for s in brat_json("sessions", "list", cwd=repo)["sessions"]] == ["s-0000"]
    git(repo, "update-ref", "-d", "refs/grite/wal")
    assert brat_json("sessions", "list", "--all", cwd=repo)["sessions"] == []
    assert brat_json("task", "list", cwd=repo)["tasks"] == []


def test_a_reader_that_waited_for_the_lock_folds_the_log_as_it_is_then(repo):
    """A reader reads the head, waits for the index's lock; meanwhile the log moves to a
    chain without that head (a sync dropped an exit). The reader must not fold the head
    it read before: it reads the head again once it holds the lock."""
    import threading
    import time

    from .helpers import git

    append_raw(repo, [created()])
    running = append_raw(repo, [comment(block_text(session_id="s-1", state="running"), T0 + 1)])
    Index(open_repo(repo)).refresh()
    append_raw(repo, [comment(block_text(session_id="s-1", state="exit", exit_code=0), T0 + 2)])
    holder = Index(open_repo(repo))
    holder.db.execute("BEGIN IMMEDIATE")
    thread = threading.Thread(target=lambda: Index(open_repo(repo)).refresh())  # reads the head
    # with the exit, then waits for the lock
    thread.start()
    time.sleep(0.5)  # (for the reader to reach the lock; were it late, it would read the new head)
    other = append_raw(repo, [comment(block_text(session_id="s-2"), T0 + 3)])  # on the exit
    git(repo, "update-ref", "refs/grite/wal", running)
    chain = append_raw(repo, [comment(block_text(session_id="s-2"), T0 + 3)])  # without it
    assert chain != other
    holder.db.execute("COMMIT")
    thread.join()
    statuses = {
        s["session_id"]: s["status"] for s in brat_json("sessions", "list", "--all", cwd=repo)["sessions"]
    }
    assert statuses == {"s-1": "running", "s-2": "running"}


def test_an_extra_exit_problem_goes_when_a_later_block_moves_the_session(repo):
    from .sessions.test_projection import OTHER

    append_raw(repo, [created(), created(issue=OTHER, task="t-20250114-0002")])
    for ts in (T0 + 20, T0 + 30):
        append_raw(repo, [comment(block_text(state="exit", exit_code=0, exit_reason="completed"), ts)])

    def kinds():
        return sorted(p["kind"] for p in brat_json("sessions", "doctor", cwd=repo)["problems"])

    assert kinds() == ["extra_exit"]
    # a block that sorts first, on the other issue: the session is that issue's now, and
    # its two exits are conflicts (as a build from nothing says)
    append_raw(repo, [comment(block_text(state="running"), T0 + 10, issue=OTHER)])
    incremental = kinds()
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    assert incremental == kinds() == ["conflict", "conflict"]


def test_an_issue_created_at_time_zero_keeps_the_earliest_creation_in_any_fold_order(repo):
    from brat_sessions.storage import events as ev
    from brat_sessions.storage.events import make_event

    from .sessions.test_projection import ISSUE, A, B

    labels = ["type:task", "task:t-20250114-0001"]
    append_raw(repo, [make_event(ISSUE, A, 0, ev.ISSUE_CREATED, ["T", "", labels])])
    append_raw(repo, [make_event(ISSUE, B, 5, ev.ISSUE_CREATED, ["T2", "", labels])])
    for stream_from in ("100000", "1"):  # libgit2, oldest first; git's plumbing, newest first
        (repo / ".git" / "brat_sessions").mkdir(exist_ok=True)
        for f in (repo / ".git" / "brat_sessions").glob("index.sqlite*"):
            f.unlink()
        env = {"BRAT_STREAM_FROM": stream_from}
        out = brat("task", "show", "t-20250114-0001", "--json", cwd=repo, env=env)
        assert json.loads(out.stdout)["data"]["task"]["created_ts"] == 0, out.stderr


def test_a_symbolic_log_ref_and_a_gap_commit_gone_are_clear_answers(repo):
    import os

    from .helpers import git

    append_raw(repo, [created()])
    middle = append_raw(repo, [comment(block_text(session_id="s-1"), T0 + 1)])
    append_raw(repo, [comment(block_text(session_id="s-2"), T0 + 2)])
    loose = repo / ".git" / "objects" / middle[:2] / middle[2:]
    os.chmod(loose, 0o644)
    loose.write_bytes(loose.read_bytes()[:40])  # a damaged commit: the log is cut there
    assert brat("sessions", "list", cwd=repo).returncode == 0
    loose.unlink()  # the damaged file removed (the commit is gone)
    out = brat("sessions", "list", "--all", "--json", cwd=repo)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-800:]
    head = git(repo, "rev-parse", "refs/grite/wal").strip()
    git(repo, "update-ref", "refs/grite/real", head)
    git(repo, "symbolic-ref", "refs/grite/wal", "refs/grite/real")
    out = brat("sessions", "list", cwd=repo)
    assert out.returncode == 5 and out.stderr.count("\n") == 1 and "symbolic" in out.stderr, out.stderr


def test_no_room_for_the_shared_memory_file_keeps_the_index(repo):
    """Each process of the index makes a 32 KiB -shm file first: on a disk without that
    room, even a command with nothing to fold stopped; it answers from a copy in memory,
    the index kept."""
    import os
    import resource

    append_raw(repo, [created()])
    append_raw(repo, _blocks(0, 50))
    brat_json("sessions", "list", cwd=repo)
    path = repo / ".git" / "brat_sessions" / "index.sqlite"
    size = path.stat().st_size
    (repo / ".git" / "brat_sessions" / "index.sqlite-shm").unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-P", "-m", "brat_sessions.cli", "task", "list"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)),
        timeout=60,
    )
    assert out.returncode == 0 and out.stderr.count("\n") == 1, out.stderr[-2000:]
    assert "copy in memory" in out.stderr and "t-" in out.stdout
    assert path.stat().st_size == size


def test_an_index_that_cannot_be_written_is_worked_from_a_copy_in_memory(repo):
    # (a full disk, a read-only file system: the command still answers, and one that wrote
    # to the log finishes instead of failing after its commit, which a retry would double)
    folder = repo / ".git" / "brat_sessions"
    task = brat_json("task", "create", "T", cwd=repo)["task_id"]  # (no index open in this process)
    for locked in (folder / "index.sqlite", folder):
        for extra in folder.glob("index.sqlite-*"):  # (SQLite writes to these where it can)
            extra.unlink()
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            pytest.skip("chattr is not available here")
        try:
            out = brat("sessions", "start", "--task", task, cwd=repo)
            assert out.returncode == 0 and out.stdout.startswith("s-"), out.stderr
            assert out.stderr.count("working from a copy in memory") == 1, out.stderr
            listed = brat_json("sessions", "list", cwd=repo)["sessions"]
            assert out.stdout.strip() in [s["session_id"] for s in listed]
        finally:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert len(brat_json("sessions", "list", cwd=repo)["sessions"]) == 2  # (the file, brought up to date)


def test_a_damaged_index_that_cannot_be_replaced_is_built_in_memory(repo):
    folder = repo / ".git" / "brat_sessions"
    task = brat_json("task", "create", "T", cwd=repo)["task_id"]
    brat_json("sessions", "start", "--task", task, cwd=repo)
    with open(folder / "index.sqlite", "r+b") as fh:  # (pages past the header made noise)
        fh.seek(8192)
        fh.write(b"\xff" * 40000)
    locked = [str(folder / "index.sqlite"), str(folder)]
    if subprocess.run(["chattr", "+i", *locked], capture_output=True).returncode != 0:
        pytest.skip("chattr is not available here")
    try:
        out = brat("sessions", "start", "--task", task, cwd=repo)
        assert out.returncode == 0 and out.stdout.startswith("s-"), out.stderr
        listed = brat("sessions", "list", "--json", cwd=repo)
        assert listed.returncode == 0 and len(json.loads(listed.stdout)["data"]["sessions"]) == 2, (
            listed.stderr
        )
    finally:
        subprocess.run(["chattr", "-i", *locked], check=True)


def test_an_index_head_that_is_not_text_is_replayed_over(repo):
    append_raw(repo, [created()])
    append_raw(repo, _blocks(0, 3))
    brat_json("sessions", "list", cwd=repo)
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    with db:
        db.execute("UPDATE meta SET value = x'00ff' WHERE key = 'head'")  # (a hand-edited file)
    db.close()
    out = brat("sessions", "list", "--json", cwd=repo)
    assert out.returncode == 0 and len(json.loads(out.stdout)["data"]["sessions"]) == 3, out.stderr
