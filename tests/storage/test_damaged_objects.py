"""A damaged (truncated) loose object never hangs brat: it is named and skipped in bounded time."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from brat_sessions.issues.tasks import create_task
from brat_sessions.storage.repo import open_repo
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from ..helpers import brat, git, make_repo

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
