"""The CI guide's reap script, run exactly as docs/ci-reaping.md gives it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from freezegun import freeze_time

from brat_sessions.issues.tasks import create_task
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from .helpers import ROOT, WORKTREE_ENV, brat_json, git, make_repo

REAPER = "c0ffee" + "0" * 26


def recipe_script() -> str:
    text = (ROOT / "docs" / "ci-reaping.md").read_text()
    section = text.split("### The reap script", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


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
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "brat").write_text(f'#!/bin/sh\nexec {sys.executable} -m brat_sessions.cli "$@"\n')
    (bindir / "brat").chmod(0o755)
    script = tmp_path / "brat-reap.sh"
    script.write_text(recipe_script())
    env = {
        **os.environ,
        **WORKTREE_ENV,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "BRAT_ACTOR": REAPER,
    }
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
