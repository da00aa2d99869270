import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

from .helpers import (
    WORKTREE_ENV,
    append_raw,
    block_text,
    brat,
    brat_json,
    clones_of_one_remote,
    git,
    make_repo,
)


@pytest.fixture
def remote(tmp_path):
    origin = make_repo(tmp_path / "seed")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    return bare


def clone(remote, path):
    git(path.parent, "clone", "-q", str(remote), str(path))
    return path


def all_event_ids(repo):
    return [e.event_id for e in Wal(open_repo(repo)).events()]


def sessions_of(repo):
    data = brat_json("sessions", "list", "--all", cwd=repo)["sessions"]
    for s in data:
        s.pop("heartbeat_age_ms")
    return data


def test_sync_shares_tasks_sessions_and_outputs(remote, tmp_path):
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    task = brat_json("task", "create", "Shared", cwd=a)["task_id"]
    run = brat("sessions", "run", "--task", task, "--", "sh", "-c", "echo made-on-a", cwd=a)
    assert run.returncode == 0
    report = brat_json("sync", cwd=a)
    assert report["remote"] == "origin" and report["outputs_pushed"] == 1
    report = brat_json("sync", cwd=b)
    assert report["fetched_commits"] >= 1 and report["outputs_fetched"] == 1
    assert sessions_of(a) == sessions_of(b)
    sid = sessions_of(b)[0]["session_id"]
    assert brat("sessions", "log", sid, cwd=b).stdout == "made-on-a\n"


def test_diverged_clones_reappend_and_agree(remote, tmp_path):
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    task = brat_json("task", "create", "Shared", cwd=a)["task_id"]
    brat_json("sync", cwd=a)
    brat_json("sync", cwd=b)
    base = git(remote, "rev-parse", "refs/grite/wal")
    sa = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    sb = brat_json("sessions", "start", "--task", task, "--type", "crew", cwd=b)["session_id"]
    brat_json("sessions", "transition", sb, "ready", cwd=b)
    brat_json("sync", cwd=a)
    report = brat_json("sync", cwd=b)  # b has local commits and the remote moved: re-append
    assert report["reappended_commits"] == 2
    brat_json("sync", cwd=a)
    head = git(remote, "rev-parse", "refs/grite/wal")
    assert git(remote, "merge-base", "--is-ancestor", base, head) == ""  # never rewritten
    assert git(remote, "rev-list", "--merges", "--count", head) == "0"  # linear
    ids_a, ids_b = all_event_ids(a), all_event_ids(b)
    assert Counter(ids_a) == Counter(set(ids_a)) and sorted(ids_a) == sorted(ids_b)
    assert {s["session_id"] for s in sessions_of(a)} == {sa, sb}
    assert sessions_of(a) == sessions_of(b)


WORKER = """
import sys, subprocess
cwd, task, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def brat(*a):
    out = subprocess.run([sys.executable, "-m", "brat_sessions.cli", *a], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
for i in range(n):
    sid = brat("sessions", "start", "--task", task)
    brat("sessions", "heartbeat", sid)
brat("sync")
"""


def test_parallel_syncs_lose_and_double_nothing(remote, tmp_path):
    seed = clone(remote, tmp_path / "seed-clone")
    task = brat_json("task", "create", "Busy", cwd=seed)["task_id"]
    brat_json("sync", cwd=seed)
    clones = [clone(remote, tmp_path / f"c{n}") for n in range(4)]
    for c in clones:
        brat_json("sync", cwd=c)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(c), task, "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for c in clones
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    for c in clones + [seed]:
        brat_json("sync", cwd=c)
    views = [sessions_of(c) for c in clones + [seed]]
    assert len(views[0]) == 12
    assert all(v == views[0] for v in views)
    ids = all_event_ids(seed)
    assert len(ids) == len(set(ids))
    for c in clones:
        assert sorted(all_event_ids(c)) == sorted(ids)


def test_heartbeat_leases_travel_and_are_dropped_after_exit(remote, tmp_path):
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    task = brat_json("task", "create", "Leases", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    ts = brat_json("sessions", "heartbeat", sid, cwd=a)["last_heartbeat_ts"]
    assert brat_json("sync", cwd=a)["leases_pushed"] == 1
    brat_json("sync", cwd=b)
    assert brat_json("sessions", "show", sid, cwd=b)["session"]["last_heartbeat_ts"] == ts
    # a reaper on b sees a's heartbeat: alive under the normal timeout
    assert brat_json("sessions", "reap", cwd=b)["reaped"] == []
    brat_json("sessions", "exit", sid, "--code", "0", cwd=b)
    brat_json("sync", cwd=b)
    report = brat_json("sync", cwd=a)
    assert report["leases_dropped"] == 1
    assert git(remote, "for-each-ref", "refs/brat/sessions/leases") == ""
    out = brat("sessions", "heartbeat", sid, cwd=a)
    assert out.returncode == 4  # the worker on a learns it is over


def test_heartbeats_pushed_as_they_are_made_keep_a_remote_reaper_off(remote, tmp_path):
    """A worker that never syncs after its start, with BRAT_HEARTBEAT_REMOTE: its heartbeat
    pushes its lease, and a reaper in a fresh clone sees it alive (the other is reaped)."""
    from freezegun import freeze_time

    from brat_sessions.sync import sync
    from brat_sessions.worker.api import Tracker

    dev = clone(remote, tmp_path / "dev")
    task = brat_json("task", "create", "Far", cwd=dev)["task_id"]
    with freeze_time("2026-01-01 12:00:00"):  # started long ago, and synced then
        t = Tracker(dev)
        pushed, silent = (t.start(task, state="running").session_id for _ in range(2))
        sync(t.ws)
    out = brat("sessions", "heartbeat", pushed, cwd=dev, env={"BRAT_HEARTBEAT_REMOTE": "origin"})
    assert out.returncode == 0 and out.stderr == ""
    ci = clone(remote, tmp_path / "ci")
    data = brat_json(
        "sessions", "reap", "--timeout", "60", "--spawn-timeout", "60", "--remote", "origin", cwd=ci
    )
    assert [r["session_id"] for r in data["reaped"]] == [silent]
    out = brat("sessions", "heartbeat", pushed, cwd=dev, env={"BRAT_HEARTBEAT_REMOTE": "nowhere"})
    assert out.returncode == 0 and out.stderr.count("not pushed to nowhere") == 1


def test_a_heartbeat_push_to_a_remote_that_hangs_gives_up_and_leaves_nothing_running(
    remote, tmp_path, monkeypatch
):
    from brat_sessions import sync as sync_module
    from brat_sessions.workspace import Workspace

    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Hang", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    pidfile = tmp_path / "ssh.pid"
    monkeypatch.setenv("GIT_SSH_COMMAND", f"sh -c 'echo $$ > {pidfile}; exec sleep 60' --")
    monkeypatch.setattr(sync_module, "LEASE_PUSH_TIMEOUT_S", 2)
    assert sync_module.push_lease(Workspace(a), "ssh://nowhere.invalid/r.git", sid) == "no answer within 2 s"
    ssh = int(pidfile.read_text())  # (the stand-in for ssh that this test started, through git)
    for _ in range(100):
        if not Path(f"/proc/{ssh}").exists() or "Z" in Path(f"/proc/{ssh}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the hung ssh outlived the heartbeat's push")
    for bad in ("--mirror", "origin\udcff"):  # (an option; bytes that are not UTF-8)
        assert sync_module.push_lease(Workspace(a), bad, sid).startswith("not a remote name or URL")


def test_a_slow_remote_never_holds_up_a_workers_heartbeats_nor_outlives_it(remote, tmp_path, monkeypatch):
    """session_scope with BRAT_HEARTBEAT_REMOTE on a remote that never answers: the lease
    is still renewed at every beat (the push runs beside it), and the scope's end stops
    the push under way."""
    from brat_sessions.sessions.lease import read_lease
    from brat_sessions.worker.api import Tracker

    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Slow", cwd=a)["task_id"]
    pids = tmp_path / "ssh.pids"
    monkeypatch.setenv("GIT_SSH_COMMAND", f"sh -c 'echo $$ >> {pids}; exec sleep 60' --")
    monkeypatch.setenv("BRAT_HEARTBEAT_REMOTE", "ssh://nowhere.invalid/r.git")
    t = Tracker(a)
    beats = set()
    with t.session_scope(task, heartbeat_interval=0.2) as s:
        for _ in range(40):  # (real processes: the beats come from the scope's thread)
            beats.add(read_lease(t.ws.repo, s.session_id).ts)
            if len(beats) >= 4:
                break
            time.sleep(0.1)
    assert len(beats) >= 4  # renewed on time although the first push never ended
    started = [int(p) for p in pids.read_text().split()]  # (this test's own stand-ins for ssh)
    assert len(started) == 1  # never two pushes at once
    for _ in range(100):
        if (
            not Path(f"/proc/{started[0]}").exists()
            or "Z" in Path(f"/proc/{started[0]}/stat").read_text().split()[2]
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the push outlived the worker's scope")


def test_reap_with_remote_fetches_and_pushes(remote, tmp_path):
    a = clone(remote, tmp_path / "a")
    ci = clone(remote, tmp_path / "ci")
    task = brat_json("task", "create", "Stale", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    brat_json("sync", cwd=a)
    (ci / ".brat").mkdir()
    (ci / ".brat" / "sessions.yaml").write_text("clock_skew: 0\n")
    data = brat_json("sessions", "reap", "--spawn-timeout", "0", "--remote", "origin", cwd=ci)
    assert [r["session_id"] for r in data["reaped"]] == [sid]
    brat_json("sync", cwd=a)
    assert brat_json("sessions", "show", sid, cwd=a)["session"]["exit_reason"] == "timeout"


def test_reapers_racing_through_a_remote_give_each_session_one_exit(remote, tmp_path):
    """Two CI clones reap the same stale sessions before either pushes: the second sync
    drops its reaper's exits (and their label changes) since the remote holds the first's."""
    from brat_sessions.config import Config
    from brat_sessions.reaper import reap
    from brat_sessions.sync import sync
    from brat_sessions.workspace import Workspace

    dev = clone(remote, tmp_path / "dev")
    task = brat_json("task", "create", "Stale", cwd=dev)["task_id"]
    sids = sorted(brat_json("sessions", "start", "--task", task, cwd=dev)["session_id"] for _ in range(2))
    brat_json("sync", cwd=dev)
    reports = []
    for name in ("ci1", "ci2"):
        ci = clone(remote, tmp_path / name)
        brat_json("sync", cwd=ci)
        reports.append(reap(Workspace(ci), Config(spawn_timeout=0, clock_skew=0)))
        assert sorted(v.session_id for v in reports[-1].reaped) == sids  # each judged both, alone
    assert brat_json("sync", cwd=tmp_path / "ci1")["exits_dropped"] == []
    second = sync(Workspace(tmp_path / "ci2"))
    assert second.exits_dropped == sids and second.reappended_commits == 0
    reports[1].drop_raced(second.exits_dropped)
    assert (reports[1].reaped, reports[1].raced) == ([], sids)  # what `reap --remote` prints
    assert brat_json("sync", cwd=tmp_path / "ci2")["exits_dropped"] == []  # settled: not again
    brat_json("sync", cwd=dev)
    for sid in sids:
        for clone_dir in (dev, tmp_path / "ci2"):  # ci2's own index forgot what it dropped
            history = brat_json("sessions", "show", sid, cwd=clone_dir)["history"]
            assert [b["block"]["state"] for b in history].count("exit") == 1
    assert brat_json("sessions", "doctor", cwd=tmp_path / "ci2")["problems"] == []
    ids = all_event_ids(dev)
    assert len(ids) == len(set(ids))


def test_a_shallow_clone_of_a_repository_with_no_log_yet_syncs_and_reaps(tmp_path):
    """Day one of the CI recipe: `git clone --depth 1` of a remote with no grite refs."""
    origin = make_repo(tmp_path / "seed")
    git(origin, "commit", "-q", "--allow-empty", "-m", "second")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{bare}", str(tmp_path / "ci"))
    assert (tmp_path / "ci" / ".git" / "shallow").exists()
    out = brat("sessions", "reap", "--remote", "origin", "--json", cwd=tmp_path / "ci")
    assert out.returncode == 0, out.stderr
    assert brat_json("sync", cwd=tmp_path / "ci")["head"] is None


def test_sync_errors_are_one_line_with_exit_codes(tmp_path):
    lonely = make_repo(tmp_path / "lonely")
    out = brat("sync", cwd=lonely)
    assert out.returncode == 5 and "no git remote" in out.stderr
    out = brat("sync", "--remote", str(tmp_path / "missing.git"), cwd=lonely)
    assert out.returncode == 5 and "git fetch" in out.stderr and "Traceback" not in out.stderr


def test_a_remote_that_declines_the_push_is_exit_5(remote, tmp_path):
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no writes today' >&2\nexit 1\n")
    hook.chmod(0o755)
    a = clone(remote, tmp_path / "a")
    brat_json("task", "create", "Declined", cwd=a)
    out = brat("sync", cwd=a)
    assert out.returncode == 5 and "pre-receive hook declined" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_sync_with_another_remote_keeps_the_record_for_the_one_reapers_share(remote, tmp_path):
    from brat_sessions.config import Config
    from brat_sessions.reaper import reap
    from brat_sessions.workspace import Workspace

    dev = clone(remote, tmp_path / "dev")
    task = brat_json("task", "create", "Stale", cwd=dev)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=dev)["session_id"]
    brat_json("sync", cwd=dev)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(remote), str(mirror))
    ci1, ci2 = clone(remote, tmp_path / "ci1"), clone(remote, tmp_path / "ci2")
    for ci in (ci1, ci2):
        brat_json("sync", cwd=ci)
        assert [v.session_id for v in reap(Workspace(ci), Config(spawn_timeout=0, clock_skew=0)).reaped] == [
            sid
        ]
    brat_json("sync", cwd=ci1)
    git(ci2, "remote", "add", "mirror", str(mirror))
    brat_json("sync", "--remote", "mirror", cwd=ci2)  # (ci2's exit reaches the mirror only)
    assert brat_json("sync", cwd=ci2)["exits_dropped"] == [sid]
    brat_json("sync", cwd=dev)
    history = brat_json("sessions", "show", sid, cwd=dev)["history"]
    assert [b["block"]["state"] for b in history].count("exit") == 1


def test_an_exit_the_index_refuses_does_not_pass_for_another_reapers(remote, tmp_path):
    """A remote's exit block in a bad event (ts past 2^63) ends nothing: our reaper's exit
    for the session stays."""
    from brat_sessions.config import Config
    from brat_sessions.reaper import reap
    from brat_sessions.storage.events import COMMENT_ADDED, make_event
    from brat_sessions.workspace import Workspace

    dev = clone(remote, tmp_path / "dev")
    task = brat_json("task", "create", "Stale", cwd=dev)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=dev)["session_id"]
    issue = brat_json("sessions", "show", sid, cwd=dev)["session"]["grite_issue_id"]
    brat_json("sync", cwd=dev)
    ci = clone(remote, tmp_path / "ci")
    brat_json("sync", cwd=ci)
    assert [v.session_id for v in reap(Workspace(ci), Config(spawn_timeout=0, clock_skew=0)).reaped] == [sid]
    evil = clone(remote, tmp_path / "evil")
    brat_json("sync", cwd=evil)
    text = block_text(
        session_id=sid, state="exit", exit_code=0, exit_reason="completed", engine="shell", role="witness"
    )
    append_raw(evil, [make_event(bytes.fromhex(issue), b"\xee" * 16, 2**63 + 5, COMMENT_ADDED, [text])])
    brat_json("sync", cwd=evil)
    assert brat_json("sync", cwd=ci)["exits_dropped"] == []
    brat_json("sync", cwd=dev)
    assert brat_json("sessions", "show", sid, cwd=dev)["session"]["exit_reason"] == "timeout"


def test_a_remote_that_refuses_leases_still_takes_the_log_with_a_warning(remote, tmp_path):
    hook = remote / "hooks" / "update"
    hook.write_text('#!/bin/sh\ncase "$1" in refs/brat/*) echo "no leases here" >&2; exit 1;; esac\n')
    hook.chmod(0o755)
    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Hooked", cwd=a)["task_id"]
    brat_json("sessions", "start", "--task", task, cwd=a)
    out = brat("sync", cwd=a)
    assert out.returncode == 0 and "not pushed" in out.stderr and "refs/brat/sessions/leases/" in out.stderr
    assert git(remote, "rev-parse", "refs/grite/wal") == git(a, "rev-parse", "refs/grite/wal")


def test_sync_with_a_named_remote_among_several_and_no_origin(remote, tmp_path):
    git(tmp_path, "clone", "-q", "-o", "upstream", str(remote), str(tmp_path / "m"))
    git(tmp_path / "m", "remote", "add", "backup", str(remote))
    brat_json("task", "create", "Named", cwd=tmp_path / "m")
    assert brat_json("sync", "--remote", "upstream", cwd=tmp_path / "m")["pushed_commits"] == 1
    assert brat("sync", cwd=tmp_path / "m").returncode == 2  # which one: say it


def test_refused_outputs_are_not_counted_as_pushed_and_the_hook_is_quoted(remote, tmp_path):
    hook = remote / "hooks" / "update"
    hook.write_text(
        '#!/bin/sh\ncase "$1" in refs/brat/sessions/outputs/*) echo "frozen" >&2; exit 1;; esac\n'
    )
    hook.chmod(0o755)
    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Out", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    (a / "o.txt").write_text("output\n")
    brat_json("sessions", "exit", sid, "--code", "0", "--output", str(a / "o.txt"), cwd=a)
    out = brat("sync", "--json", cwd=a)
    assert out.returncode == 0 and "frozen" in out.stderr, out.stderr
    assert json.loads(out.stdout)["data"]["outputs_pushed"] == 0


def test_a_hostile_ref_in_the_way_of_a_lease_is_a_warning_not_a_failure(remote, tmp_path):
    """Another clone pushes refs/brat/sessions/leases/<sid>/x: our lease cannot be pushed
    (a folder/file clash), every time; the sync still does its work and exits 0."""
    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Clash", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    brat_json("sync", cwd=a)
    evil = clone(remote, tmp_path / "evil")
    head = git(evil, "rev-parse", "HEAD")
    git(
        evil,
        "push",
        "-q",
        "origin",
        f":refs/brat/sessions/leases/{sid}",
        f"{head}:refs/brat/sessions/leases/{sid}/x",
    )
    brat_json("sessions", "heartbeat", sid, cwd=a)
    for _ in range(2):
        out = brat("sync", cwd=a)
        assert out.returncode == 0 and f"leases/{sid}" in out.stderr, out.stderr


def test_a_lease_deletion_locked_by_another_push_is_no_failure(remote, tmp_path):
    """Two reapers deleting one lease at once: the loser's refused deletion is no news,
    not exit 5 (its log went first)."""
    from brat_sessions.sync import Syncer
    from brat_sessions.workspace import Workspace

    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    task = brat_json("task", "create", "Leases", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    brat_json("sessions", "heartbeat", sid, cwd=a)
    brat_json("sync", cwd=a)
    brat_json("sync", cwd=b)
    brat_json("sessions", "exit", sid, "--code", "0", cwd=b)  # b's push will delete the lease
    lock = remote / "refs" / "brat" / "sessions" / "leases" / f"{sid}.lock"
    lock.write_text("")  # another receive-pack holds it
    syncer = Syncer(Workspace(b))
    syncer.fetch()
    head = syncer.merge_log()
    syncer.push(head)  # (the other push deletes it: no news, no warning)
    assert syncer.report.warnings == []
    assert git(remote, "rev-parse", "refs/grite/wal") == head  # the log went first, alone
    lock.unlink()  # here the other push failed after all: the next sync deletes it
    assert brat_json("sync", cwd=b)["warnings"] == []
    assert git(remote, "for-each-ref", "refs/brat/sessions/leases") == ""
    assert git(remote, "for-each-ref", "refs/brat/sessions/leases") == ""


def test_losing_every_race_is_a_conflict(remote, tmp_path, monkeypatch):
    from brat_sessions import sync as sync_module
    from brat_sessions.errors import Conflict
    from brat_sessions.workspace import Workspace

    a = clone(remote, tmp_path / "a")
    brat_json("task", "create", "Busy remote", cwd=a)
    waits = []
    monkeypatch.setattr(sync_module.time, "sleep", waits.append)  # no real backoff in tests

    def always_lose(self, head):
        raise sync_module._LostRace()

    monkeypatch.setattr(sync_module.Syncer, "push", always_lose)
    with pytest.raises(Conflict, match="lost the race"):
        sync_module.sync(Workspace(a))
    assert len(waits) == sync_module.MAX_ATTEMPTS
    assert waits[-1] > waits[0]  # the backoff grows


def test_a_stale_lock_file_is_named_not_taken_for_a_race(tmp_path, monkeypatch):
    from brat_sessions import sync as sync_module
    from brat_sessions.errors import EnvironmentProblem
    from brat_sessions.workspace import Workspace

    a, b = clones_of_one_remote(tmp_path, "a", "b")
    brat_json("task", "create", "T", cwd=b)
    brat_json("sync", cwd=b)
    brat_json("sync", cwd=a)
    brat_json("task", "create", "U", cwd=b)
    brat_json("sync", cwd=b)  # the remote moved: a's next fetch updates its copy of the ref
    (a / ".git" / "refs" / "brat-remotes" / "origin" / "grite" / "wal.lock").write_text("")  # a crash left it
    monkeypatch.setattr(sync_module.time, "sleep", lambda _s: None)
    with pytest.raises(EnvironmentProblem, match=r"wal\.lock"):
        sync_module.sync(Workspace(a))


def test_two_syncs_at_once_in_one_clone_both_succeed(tmp_path):
    a, b = clones_of_one_remote(tmp_path, "a", "b")
    for n in range(3):
        brat_json("task", "create", f"T{n}", cwd=b)
        brat_json("sync", cwd=b)  # the remote moves: both syncs in `a` fetch the same refs
        both = [
            subprocess.Popen(
                [sys.executable, "-m", "brat_sessions.cli", "sync"],
                cwd=a,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **WORKTREE_ENV},
            )
            for _ in range(2)
        ]
        for proc in both:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err  # a ref lock lost to the other is a race: retried
    assert len(brat_json("task", "list", cwd=a)["tasks"]) == 3


def test_an_output_name_squatted_on_the_remote_is_replaced_by_the_real_output(remote, tmp_path):
    """A second clone pushes junk under the name an output will have (its sha256: an
    empty log's is well known) before the output exists: the clone that holds the real
    output replaces it, and a third clone reads the session's log."""
    import hashlib

    a = clone(remote, tmp_path / "a")
    attacker = clone(remote, tmp_path / "attacker")
    c = clone(remote, tmp_path / "c")
    name = hashlib.sha256(b"made-on-a\n").hexdigest()
    junk = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=attacker,
            input=b"junk\n",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    git(attacker, "push", "-q", "origin", f"{junk}:refs/brat/sessions/outputs/{name}")
    task = brat_json("task", "create", "Shared", cwd=a)["task_id"]
    assert brat("sessions", "run", "--task", task, "--", "sh", "-c", "echo made-on-a", cwd=a).returncode == 0
    out = brat("sync", "--json", cwd=a)
    assert out.returncode == 0 and "replaced" in out.stderr, out.stderr
    assert json.loads(out.stdout)["data"]["outputs_pushed"] == 1
    brat_json("sync", cwd=c)
    sid = sessions_of(c)[0]["session_id"]
    assert brat("sessions", "log", sid, cwd=c).stdout == "made-on-a\n"


def test_syncs_taking_the_same_leases_at_once_all_succeed(remote, tmp_path):
    # (each holds a lease ref's lock for a moment: libgit2 raised OSError to the others)
    from brat_sessions import Tracker

    src = clone(remote, tmp_path / "src")
    t = Tracker(src)
    task = t.create_task("Busy").task_id
    for _ in range(60):
        t.start(task=task)
    brat_json("sync", cwd=src)
    dst = clone(remote, tmp_path / "dst")
    for _ in range(3):
        leases = git(dst, "for-each-ref", "--format=delete %(refname)", "refs/brat/sessions/leases")
        if leases:
            subprocess.run(
                ["git", "update-ref", "--stdin"], cwd=dst, input=leases.encode() + b"\n", check=True
            )
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "brat_sessions", "sync", "--json"],
                cwd=dst,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        for p in procs:
            err = p.communicate(timeout=120)[1].decode()
            assert p.returncode in (0, 4) and "internal error" not in err, err
    assert len(git(dst, "for-each-ref", "refs/brat/sessions/leases").splitlines()) == 60


def test_a_session_started_here_during_a_sync_has_its_lease_pushed_with_its_start(remote, tmp_path):
    # (its lease reached other clones before its start, each of which warned about it)
    from brat_sessions.sync import Syncer
    from brat_sessions.workspace import Workspace

    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Busy", cwd=a)["task_id"]
    syncer = Syncer(Workspace(a))
    syncer.fetch()
    head = syncer.merge_log()
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]  # meanwhile
    syncer.ws.fresh_index()
    syncer.push(head)
    assert git(remote, "for-each-ref", f"refs/brat/sessions/leases/{sid}") == ""
    assert brat_json("sync", cwd=a)["leases_pushed"] == 1  # (with its start, at the next sync)
    assert git(remote, "for-each-ref", f"refs/brat/sessions/leases/{sid}") != ""


def test_a_session_ended_here_during_a_sync_keeps_its_remote_lease_until_its_exit_is_pushed(remote, tmp_path):
    # (the remote lease went while the remote log still had the session live: a reaper
    # elsewhere could then record a timeout for a session that completed)
    from brat_sessions.sync import Syncer
    from brat_sessions.workspace import Workspace

    a = clone(remote, tmp_path / "a")
    task = brat_json("task", "create", "Busy", cwd=a)["task_id"]
    sid = brat_json("sessions", "start", "--task", task, cwd=a)["session_id"]
    brat_json("sessions", "heartbeat", sid, cwd=a)
    brat_json("sync", cwd=a)
    syncer = Syncer(Workspace(a))
    syncer.fetch()
    head = syncer.merge_log()
    brat_json("sessions", "exit", sid, "--code", "0", cwd=a)  # meanwhile
    syncer.ws.fresh_index()
    syncer.push(head)
    assert git(remote, "for-each-ref", f"refs/brat/sessions/leases/{sid}") != ""
    brat_json("sync", cwd=a)  # with the exit
    assert git(remote, "for-each-ref", f"refs/brat/sessions/leases/{sid}") == ""
