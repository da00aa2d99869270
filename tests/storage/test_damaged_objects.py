"""A damaged (truncated) loose object never hangs brat: it is named and skipped in bounded time."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from brat_sessions.issues.tasks import create_task
from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from ..helpers import T0, append_raw, brat, brat_json, git, make_repo

COMMANDS = (
    ("sessions", "list", "--all"),
    ("sessions", "doctor"),
    ("task", "list"),
    ("sessions", "reap", "--dry-run"),
    ("sessions", "reap"),
)


def _objects_of_a_commit(repo: Path, commit: str) -> dict[str, str]:
    """The commit, root tree, events/ tree, day tree, meta.json and chunk of one WAL commit."""
    tree = git(repo, "rev-parse", f"{commit}^{{tree}}")
    found = {
        "commit": commit,
        "root tree": tree,
        "events tree": git(repo, "rev-parse", f"{commit}:events"),
        "meta.json": git(repo, "rev-parse", f"{commit}:meta.json"),
    }
    listing = git(repo, "ls-tree", "-r", "-t", commit).splitlines()
    trees = [line.split()[2] for line in listing if line.split()[1] == "tree"]
    found["day tree"] = trees[-1]
    found["chunk"] = next(line.split()[2] for line in listing if line.endswith(".bin"))
    return found


def _truncate(repo: Path, oid: str) -> None:
    path = repo / ".git" / "objects" / oid[:2] / oid[2:]
    data = path.read_bytes()
    assert zlib.decompress(data)  # a loose object, intact until now
    path.chmod(0o644)
    path.write_bytes(data[: len(data) // 2])


def _world(tmp_path: Path) -> tuple[Path, str]:
    repo = make_repo(tmp_path / "repo")
    task = create_task(Workspace(repo), "T")
    t = Tracker(repo)
    t.start(task.task_id)
    middle = git(repo, "rev-parse", "refs/grite/wal")
    t.start(task.task_id)
    return repo, middle


@pytest.mark.parametrize("kind", ["commit", "root tree", "events tree", "day tree", "meta.json", "chunk"])
def test_each_kind_of_damaged_object_is_reported_in_bounded_time(tmp_path, kind):
    repo, middle = _world(tmp_path)
    _truncate(repo, _objects_of_a_commit(repo, middle)[kind])
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()  # read the log again, cold
    for args in COMMANDS:
        try:
            out = brat(*args, cwd=repo, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"brat {' '.join(args)} hung on a damaged {kind}")
        assert out.returncode in (0, 5), (args, out.stderr)
        assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
        if args[1] != "doctor" and out.returncode == 0:
            assert middle in out.stderr  # named, in one line
    problems = brat("sessions", "doctor", "--json", cwd=repo).stdout
    assert middle in problems


def test_a_damaged_loose_copy_defers_to_a_good_packed_one(tmp_path):
    repo, middle = _world(tmp_path)
    chunk = _objects_of_a_commit(repo, middle)["chunk"]
    path = repo / ".git" / "objects" / chunk[:2] / chunk[2:]
    good = path.read_bytes()
    git(repo, "repack", "-a", "-q")  # packed, and the loose copy kept
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(good[: len(good) // 2])
    ctx = open_repo(repo)
    assert len(ctx.repo[chunk].data) > 0


def test_a_commit_skipped_for_a_damaged_object_is_folded_once_the_object_is_repaired(tmp_path):
    repo, middle = _world(tmp_path)
    chunk = _objects_of_a_commit(repo, middle)["chunk"]
    path = repo / ".git" / "objects" / chunk[:2] / chunk[2:]
    good = path.read_bytes()
    _truncate(repo, chunk)
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    assert len(brat_json("sessions", "list", cwd=repo)["sessions"]) == 1  # the other is skipped
    path.write_bytes(good)  # repaired (a good copy fetched, or restored)
    kinds = [p["kind"] for p in brat_json("sessions", "doctor", cwd=repo)["problems"]]
    assert "corrupt_commit" not in kinds
    assert len(brat_json("sessions", "list", cwd=repo)["sessions"]) == 2


def test_a_corrupt_commit_the_log_moved_away_from_is_no_longer_reported(tmp_path):
    repo, middle = _world(tmp_path)
    empty_tree = git(repo, "hash-object", "-t", "tree", "-w", "/dev/null")
    corrupt = git(repo, "commit-tree", empty_tree, "-p", git(repo, "rev-parse", "refs/grite/wal"), "-m", "x")
    git(repo, "update-ref", "refs/grite/wal", corrupt)  # (another tool's commit: no meta.json)
    out = brat("sessions", "list", cwd=repo)
    assert corrupt in out.stderr
    # the log moves to another chain (not back to an older commit: that is built anew)
    issue = bytes.fromhex(Tracker(repo).sessions()[0].grite_issue_id)
    git(repo, "update-ref", "refs/grite/wal", middle)
    append_raw(repo, [make_event(issue, b"\x01" * 16, T0, COMMENT_ADDED, ["no block"])])
    out = brat("sessions", "list", cwd=repo)
    assert out.returncode == 0 and corrupt not in out.stderr, out.stderr
    assert corrupt not in brat("sessions", "doctor", cwd=repo).stdout
