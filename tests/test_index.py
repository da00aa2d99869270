import sqlite3
import subprocess
import sys

from brat_sessions.index import FORMAT_VERSION, Index
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

from .helpers import T0, append_raw, block_text, brat, brat_json
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
