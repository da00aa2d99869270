"""A cold index read through git's plumbing (storage/stream.py) is the index the pygit2
path builds, whatever the log holds: corrupt commits, odd trees, damaged objects, a
shallow clone, or no git at all."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from brat_sessions.storage.events import COMMENT_ADDED, ISSUE_CREATED, make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

from ..helpers import T0, block_text, brat, git, git_blob
from .test_damaged_objects import _objects_of_a_commit, _truncate
from .test_wal import _good_files, raw_commit

STREAM = {"BRAT_STREAM_FROM": "1"}  # every replay through git
PYGIT2 = {"BRAT_STREAM_FROM": "1000000"}  # every replay commit by commit with pygit2
ACTOR = bytes.fromhex("ab" * 16)
TASK_LABELS = ["type:task", "task:t-20250101-0001", "status:queued"]


def _fill(repo: Path, n_commits: int) -> bytes:
    wal = Wal(open_repo(repo))
    issue = os.urandom(16)
    wal.append(ACTOR.hex(), lambda h: [make_event(issue, ACTOR, T0, ISSUE_CREATED, ["T", "", TASK_LABELS])])
    for i in range(n_commits):
        text = block_text(session_id=f"s-20250101-{i:04x}", started_ts=T0 + i)
        wal.append(
            ACTOR.hex(),
            lambda h, i=i, text=text: [
                make_event(issue, ACTOR, T0 + i, COMMENT_ADDED, [text]),
                make_event(issue, ACTOR, T0 + i, COMMENT_ADDED, [f"plain comment {i}"]),
            ],
        )
    return issue


def _tables(repo: Path) -> dict:
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    try:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("meta", "issues", "members", "blocks", "sessions", "problems")
        }
    finally:
        db.close()


def _cold(repo: Path, env: dict[str, str]) -> tuple[dict, subprocess.CompletedProcess]:
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink(missing_ok=True)
    out = brat("sessions", "doctor", "--json", cwd=repo, env=env)
    assert "Traceback" not in out.stderr, out.stderr
    return _tables(repo), out


def _same_both_ways(repo: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    by_git, streamed = _cold(repo, STREAM)
    by_pygit2, walked = _cold(repo, PYGIT2)
    assert by_git == by_pygit2
    assert streamed.stdout == walked.stdout
    return streamed, walked


def test_a_healthy_log_gives_the_same_index(repo):
    _fill(repo, 40)
    streamed, _ = _same_both_ways(repo)
    assert streamed.stderr == ""  # nothing fell back


def test_corrupt_commits_and_odd_trees_give_the_same_index(repo):
    issue = _fill(repo, 5)
    wal = Wal(open_repo(repo))
    head = wal.head()
    good = _good_files(issue, "x", head)
    bin_name = next(k for k in good if k.endswith(".bin"))
    other = _good_files(issue, "y", head)
    other_bin = next(k for k in other if k.endswith(".bin"))
    worlds = [
        {bin_name: good[bin_name]},  # no meta.json
        {**good, "meta.json": b"{not json"},
        {**good, other_bin.replace("11/14", "11/15"): other[other_bin]},  # two chunks
        {"meta.json": good["meta.json"], "events/2023/x.bin": good[bin_name]},  # wrong depth
        {**good, "README": b"extra files are ignored"},
        {"meta.json": good["meta.json"], bin_name.replace(".bin", ".txt"): good[bin_name]},
        good,  # the same chunk again, unchanged: a diff shows nothing for it
        good,
    ]
    for files in worlds:
        head = raw_commit(wal, files, head)
    last = block_text(session_id="s-last")
    wal.append(ACTOR.hex(), lambda h: [make_event(issue, ACTOR, T0 + 999, COMMENT_ADDED, [last])])
    _same_both_ways(repo)
    doctor = brat("sessions", "doctor", "--json", cwd=repo, env=STREAM).stdout
    assert doctor.count("corrupt_commit") >= 4


@pytest.mark.parametrize("kind", ["commit", "root tree", "events tree", "day tree", "meta.json", "chunk"])
def test_a_damaged_object_gives_the_same_index(repo, kind):
    _fill(repo, 3)
    middle = git(repo, "rev-parse", "refs/grite/wal")
    _fill(repo, 3)
    _truncate(repo, _objects_of_a_commit(repo, middle)[kind])
    streamed, _ = _same_both_ways(repo)
    assert middle in streamed.stdout


def test_a_missing_chunk_is_read_with_libgit2_for_its_commit_alone(repo):
    _fill(repo, 3)
    middle = git(repo, "rev-parse", "refs/grite/wal")
    _fill(repo, 3)
    chunk = _objects_of_a_commit(repo, middle)["chunk"]
    (repo / ".git" / "objects" / chunk[:2] / chunk[2:]).unlink()
    streamed, _ = _same_both_ways(repo)
    assert middle in streamed.stdout and "reading it with libgit2" not in streamed.stderr


def test_a_shallow_clone_is_reported_incomplete_the_same_way(repo, tmp_path):
    _fill(repo, 6)
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--bare", "--depth", "1", f"file://{repo}", str(clone))
    git(clone, "fetch", "-q", "--depth", "3", f"file://{repo}", "refs/grite/wal:refs/grite/wal")
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", str(work))
    shutil.rmtree(work / ".git")
    shutil.copytree(clone, work / ".git")
    streamed, walked = _same_both_ways(work)
    assert "incomplete" in streamed.stdout and "incomplete" in streamed.stderr
    assert walked.stderr == streamed.stderr


def test_without_git_the_build_falls_back_to_libgit2(repo, tmp_path):
    _fill(repo, 10)
    expected, _ = _cold(repo, PYGIT2)
    bare_path = tmp_path / "no-git"
    bare_path.mkdir()
    python = Path(shutil.which("python3") or "/usr/bin/python3")
    (bare_path / "python3").symlink_to(python)
    got, out = _cold(repo, {**STREAM, "PATH": str(bare_path)})
    assert got == expected
    assert "reading it with libgit2" in out.stderr


def test_modules_beside_the_git_folder_are_not_imported_by_the_planner(repo):
    """The planner runs in the git folder: a re.py or subprocess.py there is never imported."""
    _fill(repo, 10)
    for name in ("re", "subprocess"):
        (repo / ".git" / f"{name}.py").write_text("print('HIJACKED'); raise SystemExit(7)\n")
    streamed, _ = _same_both_ways(repo)
    assert "reading it with libgit2" not in streamed.stderr


def test_a_merge_in_the_chain_is_read_against_its_first_parent(repo):
    """A hostile merge commit whose tree differs from its first parent's: each chunk once."""
    issue = _fill(repo, 4)
    wal = Wal(open_repo(repo))
    base = wal.head()
    side = raw_commit(wal, _good_files(issue, "side", base), base)
    assert wal.move_head(side, base)  # the side commit is off the chain again
    files = _good_files(issue, "merged", base)
    tree = git(repo, "rev-parse", f"{raw_commit(wal, files, base)}^{{tree}}")
    assert wal.move_head(wal.head(), base)
    merge = git(repo, "commit-tree", tree, "-p", base, "-p", side, "-m", "WAL: merge")
    assert wal.move_head(base, merge)
    _fill_on(repo, issue, 3)
    _same_both_ways(repo)


def _fill_on(repo: Path, issue: bytes, n_commits: int) -> None:
    wal = Wal(open_repo(repo))
    for i in range(n_commits):
        text = block_text(session_id=f"s-20250102-{i:04x}", started_ts=T0 + i)
        wal.append(ACTOR.hex(), lambda h, text=text: [make_event(issue, ACTOR, T0, COMMENT_ADDED, [text])])


def test_a_reader_that_stops_early_leaves_no_process_behind(repo):
    from brat_sessions.sessions.projection import prepare_commit
    from brat_sessions.storage import stream as stream_module

    _fill(repo, 300)
    wal = Wal(open_repo(repo))
    stream = stream_module.CommitStream(wal, prepare_commit, wal.head(), None)
    items = iter(stream)
    for _ in range(3):
        next(items)
    procs = list(stream.procs)
    assert len(procs) == 3  # git log, the planner, git cat-file
    items.close()  # the reader stops: git and the planner are stopped
    assert all(p.poll() is not None for p in procs)


def _tree(repo: Path, entries: list[tuple[str, str, str]], literally: bool = False) -> str:
    """A tree object from (mode, oid, name) entries; `literally` allows what mktree refuses."""
    if not literally:
        text = "".join(f"{m} {'tree' if m == '040000' else 'blob'} {o}\t{n}\n" for m, o, n in entries)
        return (
            subprocess.run(["git", "mktree"], cwd=repo, input=text.encode(), capture_output=True, check=True)
            .stdout.decode()
            .strip()
        )
    data = b"".join(f"{m.lstrip('0')} {n}".encode() + b"\0" + bytes.fromhex(o) for m, o, n in entries)
    return (
        subprocess.run(
            ["git", "hash-object", "-w", "--literally", "-t", "tree", "--stdin"],
            cwd=repo,
            input=data,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )


def _commit_tree(repo: Path, wal: Wal, tree: str) -> None:
    head = wal.head()
    new = git(repo, "commit-tree", tree, "-p", head, "-m", "WAL: crafted")
    assert wal.move_head(head, new)


def test_crafted_trees_read_the_same_both_ways(repo):
    """Trees no git command writes: duplicate entries, an empty folder beside the chunk's,
    names git would quote, two meta.json."""
    issue = _fill(repo, 4)
    shapes = ("duplicate chunk", "empty sibling", "quoted name", "two meta", "junk", "hidden", "events blob")
    _craft(repo, issue, shapes)
    _same_both_ways(repo)


def test_a_type_change_is_undone_without_leaving_the_stream(repo):
    issue = _fill(repo, 4)
    _craft(repo, issue, ["events blob", "hidden"])
    streamed, _ = _same_both_ways(repo)
    assert "reading it with libgit2" not in streamed.stderr  # each odd commit alone, by pygit2


def _craft(repo: Path, issue: bytes, shapes) -> None:
    """A commit of each shape (then a good one), on the log."""
    wal = Wal(open_repo(repo))
    empty = _tree(repo, [])
    for n, shape in enumerate(shapes):
        files = _good_files(issue, f"crafted {n}", wal.head())
        meta = git_blob(repo, files["meta.json"])
        (path, data) = next((k, v) for k, v in files.items() if k.endswith(".bin"))
        name = path.rsplit("/", 1)[1]
        chunk = ("100644", git_blob(repo, data), name)
        day = [chunk]
        if shape == "duplicate chunk":
            day = [chunk, chunk]
        if shape == "quoted name":
            day = [chunk, ("100644", git_blob(repo, b"junk"), '\u00e9 "x".bin')]
        day_tree = _tree(repo, day, literally=shape == "duplicate chunk")
        month = [("040000", day_tree, "14")] + ([("040000", empty, "15")] if shape == "empty sibling" else [])
        if shape == "hidden":  # an empty "14" and a file named "14/<hash>.bin": listed as one chain
            month = [("040000", empty, "14"), (chunk[0], chunk[1], f"14/{name}")]
        month_tree = _tree(repo, month, literally=shape == "hidden")
        events = _tree(repo, [("040000", _tree(repo, [("040000", month_tree, "11")]), "2023")])
        root = [("100644", meta, "meta.json"), ("040000", events, "events")]
        if shape == "events blob":  # then a tree again in the next commit: a type change
            root = [("100644", meta, "meta.json"), ("100644", git_blob(repo, b"not a folder"), "events")]
        if shape == "two meta":
            root = [("100644", git_blob(repo, b"{not json"), "meta.json"), *root]
        if shape == "junk":
            junk = _tree(repo, [("100644", git_blob(repo, str(i).encode()), f"f{i}") for i in range(50)])
            root.append(("040000", junk, "junk"))
        _commit_tree(repo, wal, _tree(repo, root, literally=shape == "two meta"))
        _fill_on(repo, issue, 1)


def test_git_settings_that_change_log_output_change_nothing(repo):
    """diff.relative from a subfolder of a worktree set by core.worktree, and a log output
    encoding that would turn NUL into text."""
    _fill(repo, 10)
    expected, _ = _cold(repo, PYGIT2)
    git(repo, "config", "core.worktree", str(repo))
    git(repo, "config", "diff.relative", "true")
    git(repo, "config", "i18n.logOutputEncoding", "UTF-7")
    (repo / "sub").mkdir()
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    out = brat("sessions", "doctor", "--json", cwd=repo / "sub", env=STREAM)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert _tables(repo) == expected


def test_a_meta_json_nested_too_deep_is_a_corrupt_commit(repo):
    issue = _fill(repo, 3)
    wal = Wal(open_repo(repo))
    files = _good_files(issue, "deep", wal.head())
    raw_commit(wal, {**files, "meta.json": b"[" * 60_000}, wal.head())  # (under the size limit)
    _fill_on(repo, issue, 2)
    streamed, _ = _same_both_ways(repo)
    assert "meta.json is not valid" in streamed.stdout
    assert "Traceback" not in streamed.stderr
