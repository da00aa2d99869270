"""The CI guide's reap script, run exactly as docs/ci-reaping.md gives it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from freezegun import freeze_time

from brat_sessions.issues.tasks import create_task
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from .helpers import ROOT, WORKTREE_ENV, brat_json, git, make_repo, push_snapshot

REAPER = "c0ffee" + "0" * 26


def doc_script(heading: str) -> str:
    """The first bash block under `### heading` in docs/ci-reaping.md, as written."""
    text = (ROOT / "docs" / "ci-reaping.md").read_text()
    section = text.split(f"### {heading}", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def brat_on_path(tmp_path) -> dict[str, str]:
    """An environment whose PATH finds `brat` (this working tree's), as a CI job's would."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "brat").write_text(f'#!/bin/sh\nexec {sys.executable} -m brat_sessions.cli "$@"\n')
    (bindir / "brat").chmod(0o755)
    return {**os.environ, **WORKTREE_ENV, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_the_documented_reap_script_reaps_through_a_bare_remote(tmp_path):
    worker = make_repo(tmp_path / "worker")
    task = create_task(Workspace(worker), "T")
    with freeze_time("2026-01-01 00:00:00"):
        stale = Tracker(worker, host="far-away").start(task.task_id, state="running").session_id
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(worker), str(remote))
    git(worker, "remote", "add", "origin", str(remote))
    assert brat_json("sync", cwd=worker)["pushed_commits"] > 0
    ci = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote}", str(ci))  # as actions/checkout
    script = tmp_path / "brat-reap.sh"
    script.write_text(doc_script("The reap script"))
    env = {**brat_on_path(tmp_path), "BRAT_ACTOR": REAPER}
    out = subprocess.run(["bash", str(script)], cwd=ci, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "reaped 1 of 1" in (ci / "reap.txt").read_text()
    assert brat_json("sync", cwd=worker)["fetched_commits"] > 0
    shown = brat_json("sessions", "show", stale, cwd=worker)
    assert shown["session"]["exit_reason"] == "timeout"
    assert shown["history"][-1]["actor"] == REAPER  # the one stable reaper actor
    # without BRAT_ACTOR the script says what is missing, and does nothing
    del env["BRAT_ACTOR"]
    out = subprocess.run(["bash", str(script)], cwd=ci, capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "BRAT_ACTOR" in out.stderr
    # a failing reaper fails the script even behind `| tee` (pipefail)
    env["BRAT_ACTOR"] = REAPER
    (ci / ".brat").mkdir()
    (ci / ".brat" / "sessions.yaml").write_text("timeout: [nonsense]\n")
    out = subprocess.run(["bash", str(script)], cwd=ci, capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr


def test_the_documented_snapshot_check_deletes_a_forged_snapshot_from_the_remote(tmp_path):
    from brat_sessions.storage.chunk import encode_chunk
    from brat_sessions.storage.events import COMMENT_ADDED, make_event
    from brat_sessions.storage.wal import WalCommit

    from .helpers import block_text

    worker = make_repo(tmp_path / "worker")
    task = create_task(Workspace(worker), "T")
    sid = Tracker(worker).start(task.task_id, state="running").session_id
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(worker, "remote", "add", "origin", str(remote))
    brat_json("snapshot", "create", cwd=worker)
    brat_json("sync", cwd=worker)
    # someone with push access publishes a newer snapshot: every event, and a forged exit
    ws = Workspace(worker)
    events = [e for c in ws.wal.replay() if isinstance(c, WalCommit) for e in c.events]
    forged = make_event(
        events[-1].issue_id,
        b"\xbb" * 16,
        events[-1].ts_unix_ms + 1,
        COMMENT_ADDED,
        [block_text(session_id=sid, state="exit", exit_code=0, exit_reason="completed")],
    )
    number = int(time.time() * 1000) + 60_000
    chunk = encode_chunk([*events, forged])
    push_snapshot(worker, number, [chunk], [len(events) + 1], ws.wal.head())
    bad_ref = f"refs/grite/snapshots/{number}"
    ci = tmp_path / "ci"
    git(tmp_path, "clone", "-q", f"file://{remote}", str(ci))
    script = tmp_path / "check.sh"
    script.write_text(doc_script("The snapshot check"))
    env = brat_on_path(tmp_path)
    out = subprocess.run(["bash", str(script)], cwd=ci, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and f"deleted {bad_ref}" in out.stderr, out.stderr
    assert bad_ref not in git(remote, "for-each-ref", "--format=%(refname)", "refs/grite/snapshots/")
    # the next run checks the honest one (newest now) and passes; the remote keeps it
    clean = tmp_path / "ci2"
    git(tmp_path, "clone", "-q", f"file://{remote}", str(clean))
    out = subprocess.run(
        ["bash", str(script)], cwd=clean, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    left = git(remote, "for-each-ref", "--format=%(refname)", "refs/grite/snapshots/").split()
    assert len(left) == 1 and left[0] != bad_ref


def test_a_reaper_in_a_clone_with_a_shallow_log_reaps_at_its_first_run(tmp_path):
    """`reap --remote` syncs first, which makes the log whole: the pass after it must see
    that (libgit2 kept the shallow boundary it read when the repository was opened)."""
    from .helpers import brat

    worker = make_repo(tmp_path / "worker")
    task = create_task(Workspace(worker), "T")
    with freeze_time("2026-01-01 00:00:00"):
        t = Tracker(worker, host="far-away")
        stale = t.start(task.task_id, state="running").session_id
    for n in range(3):  # (a log of several commits: the shallow fetch leaves out the older)
        create_task(Workspace(worker), f"T{n}")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(worker), str(remote))
    git(worker, "remote", "add", "origin", str(remote))
    brat_json("sync", cwd=worker)
    ci = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote}", str(ci))
    git(ci, "fetch", "-q", "--depth", "1", "origin", "+refs/grite/*:refs/grite/*")
    env = {"BRAT_ACTOR": REAPER}
    out = brat("sessions", "reap", "--remote", "origin", "--json", cwd=ci, env=env)
    assert out.returncode == 0, out.stderr
    assert [v["session_id"] for v in json.loads(out.stdout)["data"]["reaped"]] == [stale]
    assert "incomplete" not in out.stderr
