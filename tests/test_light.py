"""The warm path reads git's files directly (no pygit2) and falls back whenever it must."""

from __future__ import annotations

import os
import subprocess
import sys

from brat_sessions.light import LightWorkspace
from brat_sessions.storage.plain_git import Unsupported, find, read_ref, refs_under
from brat_sessions.worker.api import Tracker

from .helpers import WORKTREE_ENV, brat_json, git


def _imports(repo, *args: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "brat_sessions.cli", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def test_a_warm_list_show_and_task_list_never_import_pygit2(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    t.heartbeat(s.session_id)
    cold = brat_json("sessions", "list", cwd=repo)
    for args in (
        ("sessions", "list", "--json"),
        ("sessions", "show", s.session_id, "--json"),
        ("task", "list", "--json"),
        ("task", "show", task.task_id, "--json"),
    ):
        _, imports = _imports(repo, *args)
        assert "pygit2" not in imports, args
    warm, _ = _imports(repo, "sessions", "list", "--json")
    import json

    data = json.loads(warm)["data"]
    assert data["sessions"][0]["last_heartbeat_ts"] == cold["sessions"][0]["last_heartbeat_ts"]
    assert data["sessions"][0]["session_id"] == s.session_id


def test_it_falls_back_on_a_new_head_packed_objects_and_odd_layouts(repo, task, tmp_path):
    t = Tracker(repo)
    s = t.start(task.task_id)
    t.heartbeat(s.session_id)
    brat_json("sessions", "list", cwd=repo)
    assert LightWorkspace(repo).session(s.session_id).last_heartbeat_ts
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from .helpers import append_raw, block_text

    text = block_text(session_id="s-20260101-0002", started_ts=s.started_ts)
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\x02" * 16, 5, COMMENT_ADDED, [text])])
    try:
        LightWorkspace(repo)
        raise AssertionError("a stale index must not be answered from")
    except Unsupported:
        pass
    assert brat_json("sessions", "list", cwd=repo)["total"] == 2  # through the full path
    git(repo, "pack-refs", "--all")
    git(repo, "gc", "-q")  # lease blobs packed, refs in packed-refs
    assert read_ref(find(repo).common_dir, "refs/grite/wal") == git(repo, "rev-parse", "refs/grite/wal")
    assert len(refs_under(find(repo).common_dir, "refs/brat/sessions/leases/")) == 1
    try:
        LightWorkspace(repo)
        raise AssertionError("a packed lease blob needs pygit2")
    except Unsupported:
        pass
    data = brat_json("sessions", "list", cwd=repo)
    assert data["total"] == 2 and any(x["last_heartbeat_ts"] for x in data["sessions"])
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt))
    assert find(wt).common_dir == find(repo).common_dir and find(wt).worktree == wt
    assert brat_json("sessions", "list", cwd=wt)["total"] == 2
