"""Regressions found by review: races on leases, hostile snapshots, reused pids, inherited ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brat_sessions.clock import now_ms
from brat_sessions.issues.tasks import create_task
from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.worker import procs
from brat_sessions.worker.api import Tracker
from brat_sessions.worker.proof import ProcessProof
from brat_sessions.workspace import Workspace

from .helpers import WORKTREE_ENV, append_raw, block_text, brat, brat_json, git, make_repo

USAGE = """
import sys
from brat_sessions import Tracker
t = Tracker(sys.argv[1])
for _ in range(5):
    t.usage(sys.argv[2], model="m", input_tokens=1, output_tokens=1)
"""


def test_concurrent_usage_on_a_session_without_a_lease_loses_nothing(repo, task):
    now = now_ms()
    sid = "s-20260101-aaaa"
    append_raw(
        repo,
        [
            make_event(
                bytes.fromhex(task.issue_id),
                b"\x09" * 16,
                now,
                COMMENT_ADDED,
                [block_text(session_id=sid, started_ts=now, state="running")],
            )
        ],
    )
    procs_ = [
        subprocess.Popen([sys.executable, "-c", USAGE, str(repo), sid], env={**os.environ, **WORKTREE_ENV})
        for _ in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs_)
    assert brat_json("sessions", "show", sid, cwd=repo)["session"]["usage"]["calls"] == 20


def test_a_hostile_snapshot_ref_does_not_break_sync_or_reading(tmp_path):
    a = make_repo(tmp_path / "a")
    task = create_task(Workspace(a), "T")
    Tracker(a).start(task.task_id)
    remote = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(a, "remote", "add", "origin", str(remote))
    brat_json("sync", cwd=a)
    # a snapshot ref whose snapshot.json names a wal_head this repository never saw
    meta = json.dumps(
        {"schema_version": 1, "created_ts": 1, "wal_head": "ab" * 20, "event_count": 0, "chunks": []}
    ).encode()
    blob = (
        subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=a, input=meta, capture_output=True)
        .stdout.decode()
        .strip()
    )
    tree = subprocess.run(
        ["git", "mktree"], cwd=a, input=f"100644 blob {blob}\tsnapshot.json\n", capture_output=True, text=True
    ).stdout.strip()
    commit = git(a, "commit-tree", tree, "-m", "Snapshot")
    git(a, "update-ref", "refs/grite/snapshots/99999999999999", commit)
    git(a, "push", "-q", "origin", "refs/grite/snapshots/99999999999999")
    b = make_repo(tmp_path / "b")
    git(b, "remote", "add", "origin", str(remote))
    assert brat("sync", cwd=b).returncode == 0
    assert brat("sync", cwd=b).returncode == 0
    assert brat_json("sessions", "list", cwd=b)["total"] == 1


def test_a_reused_group_leader_pid_is_not_signalled():
    canary = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        ticks = procs.start_ticks(canary.pid)
        stale = ProcessProof("s-1", canary.pid, ticks - 1, procs.boot_id(), True)  # another process's
        assert stale.live_members() == [] and stale.send(15) is False
        assert canary.poll() is None
    finally:
        canary.kill()
        canary.wait()


def test_an_inherited_session_id_from_another_repository_is_not_a_parent(repo, task):
    out = brat(
        "sessions",
        "start",
        "--task",
        task.task_id,
        "--json",
        cwd=repo,
        env={"BRAT_SESSION_ID": "s-20990101-dead"},
    )
    assert out.returncode == 0 and "not a session of this repository" in out.stderr
    assert json.loads(out.stdout)["data"]["session"]["parent_session_id"] is None
    assert (
        brat("sessions", "start", "--task", task.task_id, "--parent", "s-20990101-dead", cwd=repo).returncode
        == 3
    )


def test_a_hex_prefix_is_not_matched_against_the_date(repo, task):
    t = Tracker(repo)
    ids = [t.start(task.task_id).session_id for _ in range(2)]
    date = ids[0].split("-")[1]
    hexes = {i.rsplit("-", 1)[1][:1] for i in ids}
    out = brat("sessions", "show", date[:2], cwd=repo)
    assert out.returncode in (2, 3) or (out.returncode == 0 and date[:2][:1] in hexes)
    for sid in ids:
        assert brat_json("sessions", "show", sid.rsplit("-", 1)[1], cwd=repo)["session"]["session_id"] == sid


def test_what_the_system_refuses_is_one_line_and_a_documented_exit_code(repo, task, tmp_path):
    import errno

    from brat_sessions.cli.root import _system_problem

    s = brat_json("sessions", "start", "--task", task.task_id, cwd=repo)["session"]["session_id"]
    (repo / ".grite" / "logs" / f"{s}.log").mkdir(parents=True)  # a folder where its log goes
    out = brat("sessions", "log", s, cwd=repo)
    assert out.returncode == 1 and out.stderr.strip().endswith("is not a file; brat reads only files there")
    (repo / ".brat").mkdir(exist_ok=True)
    (repo / ".brat" / "sessions.yaml").mkdir()
    out = brat("sessions", "list", cwd=repo)
    assert out.returncode == 2 and "a directory, not a settings file" in out.stderr
    gone = tmp_path / "gone"
    gone.mkdir()
    out = subprocess.run(
        f"cd {gone} && rmdir {gone} && {sys.executable} -m brat_sessions sessions list",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert (out.returncode, out.stderr) == (5, "brat: the current directory no longer exists\n")
    full = OSError(errno.ENOSPC, "No space left on device", str(repo / "x"))
    assert _system_problem(full)[1:] == (f"the system refused: No space left on device: '{repo / 'x'}'", 5)
    locked = OSError("failed to lock file '/r/.git/refs/x.lock' for writing: ")  # (as libgit2 says it)
    assert _system_problem(locked)[0] == "conflict" and _system_problem(locked)[2] == 4
    denied = OSError("failed to create locked file '/r/.git/refs/x.lock': Operation not permitted")
    assert _system_problem(denied)[0] == "environment" and _system_problem(denied)[2] == 5
    assert "internal" not in out.stderr


def test_phase_shows_its_name_as_every_command_shows_text(repo, task):
    s = brat_json("sessions", "start", "--task", task.task_id, cwd=repo)["session"]["session_id"]
    out = brat("sessions", "phase", s, "ph\x1b[33mY", "--of", "2", cwd=repo)
    assert out.returncode == 0 and out.stdout == f"{s} ph\\x1b[33mY ?/2\n"


def test_refs_the_system_will_not_let_us_write_are_exit_5_at_once_not_a_lost_race(repo, task, tmp_path):
    # (libgit2 names the .lock file when the folder is read-only: retried for a second and
    # then called a conflict, exit 4, which a worker reads as "ended elsewhere")
    s = brat_json("sessions", "start", "--task", task.task_id, cwd=repo)["session"]["session_id"]
    out_file = tmp_path / "out.log"
    out_file.write_text("done\n")
    refs = repo / ".git" / "refs" / "brat" / "sessions"
    (refs / "outputs").mkdir(parents=True, exist_ok=True)
    for folder, args in (
        (refs / "leases", ["sessions", "heartbeat", s]),
        (refs / "outputs", ["sessions", "exit", s, "--code", "0", "--output", str(out_file)]),
    ):
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr is not available here")
        try:
            out = brat(*args, cwd=repo)
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        assert out.returncode == 5 and "Operation not permitted" in out.stderr, out.stderr
