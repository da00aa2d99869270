import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from brat_sessions.errors import BadInput, Conflict, Fenced, NotFound
from brat_sessions.sessions.lease import read_lease
from brat_sessions.worker.api import Tracker

from ..helpers import brat, brat_json, git, wait_for, wal_commit_count


def labels(tracker, task):
    return tracker.ws.fresh_index().issue(task.issue_id).labels


def test_lifecycle_writes_blocks_and_brats_labels(tracker, task):
    s = tracker.start(task.task_id, engine="codex", pid=os.getpid())
    assert (s.role, s.session_type, s.status, s.host) == ("witness", "polecat", "spawned", tracker.host)
    assert {"session:spawned", "session:polecat", "engine:codex"} <= set(labels(tracker, task))
    tracker.transition(s.session_id, "ready")
    tracker.transition(s.session_id, "running")
    current = set(labels(tracker, task))
    assert (
        "session:running" in current and "session:spawned" not in current and "session:ready" not in current
    )
    done = tracker.exit(s.session_id, 0, "completed")
    assert (done.status, done.exit_code, done.exit_reason) == ("exit", 0, "completed")
    assert "session:exit" in labels(tracker, task)
    blocks = tracker.history(s.session_id)
    assert [b.fields["state"] for b in blocks] == ["spawned", "ready", "running", "exit"]
    assert all(b.fields["host"] == tracker.host for b in blocks)


def test_crew_defaults_to_user_role(tracker, task):
    s = tracker.start(task.task_id, session_type="crew")
    assert (s.role, s.session_type) == ("user", "crew")


def test_refused_transition_names_targets_and_writes_nothing(repo, tracker, task):
    s = tracker.start(task.task_id)
    before = wal_commit_count(repo)
    out = brat("sessions", "transition", s.session_id, "handoff", cwd=repo)
    assert out.returncode == 4
    assert "allowed: ready or an exit" in out.stderr
    bad = brat("sessions", "transition", s.session_id, "exit", cwd=repo)  # exits have their own command
    assert bad.returncode == 2 and "'STATE'" in bad.stderr, bad.stderr
    assert wal_commit_count(repo) == before
    assert brat("sessions", "transition", s.session_id, "handoff", "--force", cwd=repo).returncode == 0
    with pytest.raises(Conflict):
        tracker.transition(s.session_id, "ready")


def test_heartbeat_renews_the_lease_without_a_wal_commit(repo, tracker, task):
    s = tracker.start(task.task_id)
    before = wal_commit_count(repo)
    refs_before = git(repo, "for-each-ref", "refs/grite")
    for _ in range(5):
        ts = tracker.heartbeat(s.session_id)
    assert wal_commit_count(repo) == before and git(repo, "for-each-ref", "refs/grite") == refs_before
    assert read_lease(tracker.ws.repo, s.session_id).ts == ts
    assert brat_json("sessions", "list", cwd=repo)["sessions"][0]["last_heartbeat_ts"] == ts
    done = tracker.exit(s.session_id, 0)
    assert done.last_heartbeat_ts == ts  # the exit block carries the last heartbeat
    assert tracker.history(s.session_id)[-1].fields["last_heartbeat_ts"] == ts
    assert read_lease(tracker.ws.repo, s.session_id) is None


def test_exited_session_fences_heartbeat_and_transition(repo, tracker, task):
    s = tracker.start(task.task_id)
    Tracker(repo).exit(s.session_id, -1, "timeout")  # e.g. a reaper, through another handle
    out = brat("sessions", "heartbeat", s.session_id, "--json", cwd=repo)
    assert out.returncode == 4 and '"ok": false' in out.stderr and "already exited" in out.stderr
    assert brat("sessions", "transition", s.session_id, "ready", cwd=repo).returncode == 4
    assert brat("sessions", "exit", s.session_id, "--code", "0", cwd=repo).returncode == 4
    with pytest.raises(Fenced):
        tracker.heartbeat(s.session_id)


def _ended_keeping_a_lease(repo, tracker, task) -> tuple[str, str, str]:
    """A session whose exit is written but whose lease was not dropped (whatever wrote the
    exit stopped first: killed, a full disk): (its id, its lease ref, the lease's blob)."""
    s = tracker.start(task.task_id)
    tracker.heartbeat(s.session_id)
    ref = f"refs/brat/sessions/leases/{s.session_id}"
    lease = git(repo, "rev-parse", ref)
    Tracker(repo).exit(s.session_id, -1, "timeout")
    git(repo, "update-ref", ref, lease)
    return s.session_id, ref, lease


def test_a_lease_left_behind_by_an_exit_does_not_keep_the_session_alive(repo, tracker, task):
    sid, ref, lease = _ended_keeping_a_lease(repo, tracker, task)
    s = tracker.session(sid)
    for args in (["phase", s.session_id, "coding"], ["heartbeat", s.session_id]):
        git(repo, "update-ref", ref, lease)
        out = brat("sessions", *args, cwd=repo)
        assert out.returncode == 4 and "already exited" in out.stderr, out.stderr
        assert read_lease(tracker.ws.repo, s.session_id) is None  # (dropped on the way)


def test_output_is_stored_in_git_and_readable_by_ref(repo, tracker, task, tmp_path):
    s = tracker.start(task.task_id)
    out_file = tmp_path / "out.log"
    out_file.write_bytes(b"line 1\nline 2\n\xff binary ok\n")
    done = tracker.exit(s.session_id, 0, output=out_file)
    digest = hashlib.sha256(out_file.read_bytes()).hexdigest()
    assert done.last_output_ref == f"sha256:{digest}"
    out_file.unlink()
    git(repo, "gc", "-q", "--prune=now")
    shown = subprocess.run(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "log", s.session_id],
        cwd=repo,
        capture_output=True,
    )
    assert shown.returncode == 0 and shown.stdout == b"line 1\nline 2\n\xff binary ok\n"
    tail = brat("sessions", "log", s.session_id, "--tail", "1", cwd=repo)
    assert tail.stdout.startswith("\ufffd binary ok") or "binary ok" in tail.stdout


def test_session_ids_are_unique(tracker, task):
    ids = {tracker.start(task.task_id).session_id for _ in range(30)}
    assert len(ids) == 30


def test_worker_in_a_linked_worktree(repo, task, tmp_path):
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt))
    out = brat(
        "sessions", "run", "--task", task.task_id, "--json", "--", "sh", "-c", "echo from-wt", cwd=wt
    )  # --json before `--`: what follows belongs to the command
    data = json.loads(out.stdout)["data"]
    session = data["session"]
    assert session["worktree"] == str(wt)  # outside the main checkout: absolute
    assert (repo / ".grite" / "logs" / f"{data['session_id']}.log").read_text() == "from-wt\n"
    assert brat("sessions", "log", data["session_id"], cwd=repo).stdout == "from-wt\n"
    inside = repo / "wts" / "a"
    git(repo, "worktree", "add", "-q", str(inside))
    sid = brat_json("sessions", "start", "--task", task.task_id, cwd=inside)["session_id"]
    assert brat_json("sessions", "show", sid, cwd=repo)["session"]["worktree"] == "wts/a"


def test_context_manager_records_completion_and_failure(repo, tracker, task):
    with tracker.session_scope(task.task_id, heartbeat_interval=0.05) as s:
        s.log("working\n")
        wait_for(lambda: read_lease(tracker.ws.repo, s.session_id).ts)
    ok = tracker.session(s.session_id)
    assert (ok.status, ok.exit_code, ok.exit_reason, ok.engine) == ("exit", 0, "completed", "python")
    with pytest.raises(ZeroDivisionError), tracker.session_scope(task.task_id) as s2:
        1 / 0  # noqa: B018
    failed = tracker.session(s2.session_id)
    assert (failed.exit_code, failed.exit_reason) == (1, "completed")
    assert "ZeroDivisionError" in brat("sessions", "log", s2.session_id, cwd=repo).stdout


def test_context_manager_is_interrupted_when_ended_elsewhere(repo, tracker, task):
    with pytest.raises(Fenced), tracker.session_scope(task.task_id, heartbeat_interval=0.05) as s:
        Tracker(repo).exit(s.session_id, -1, "timeout")
        time.sleep(30)  # the heartbeat thread interrupts this
    assert tracker.session(s.session_id).exit_reason == "timeout"


def test_stop_signals_a_local_process_and_records_user_stop(repo, tracker, task):
    worker = subprocess.Popen(["sleep", "60"])
    s = tracker.start(task.task_id, pid=worker.pid, state="running")
    out = brat_json("sessions", "stop", s.session_id, "--grace", "5", cwd=repo)
    assert worker.wait(timeout=10) == -signal.SIGTERM
    assert (out["session"]["exit_reason"], out["session"]["exit_code"]) == ("user-stop", -1)


def test_stop_of_a_session_on_another_host_fences_its_worker(repo, task):
    remote_worker = Tracker(repo, host="elsewhere")
    s = remote_worker.start(task.task_id, state="running")
    data = brat_json("sessions", "stop", s.session_id, cwd=repo)
    assert data["session"]["exit_reason"] == "user-stop"
    with pytest.raises(Fenced):
        remote_worker.heartbeat(s.session_id)


def test_concurrent_exits_record_exactly_one(repo, tracker, task):
    s = tracker.start(task.task_id, state="running")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "brat_sessions.cli", "sessions", "exit", s.session_id, "--code", str(n)],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 4, 4, 4]
    exits = [b for b in tracker.history(s.session_id) if b.fields["state"] == "exit"]
    assert len(exits) == 1


def test_one_tracker_serves_several_threads_and_a_misuse_is_not_called_damage(repo, tracker, task, capsys):
    import sqlite3
    import threading

    from brat_sessions.index import Index
    from brat_sessions.storage.repo import open_repo

    done, errors = [], []

    def work():
        try:
            with tracker.session_scope(task.task_id, heartbeat_interval=60) as h:
                h.log("hi\n")
                done.append(h.session_id)
        except Exception as exc:  # (reported below: a thread's exception is not the test's)
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(set(done)) == 3
    assert all(tracker.session(sid).exit_code == 0 for sid in done)
    # an index connection used from another thread is a programming error, not damage
    index = Index(open_repo(repo)).refresh()
    path = index.path
    inode = path.stat().st_ino
    caught = []
    th = threading.Thread(target=lambda: _call_catching(index.refresh, caught))
    th.start()
    th.join()
    assert caught and isinstance(caught[0], sqlite3.ProgrammingError)
    assert path.stat().st_ino == inode and tracker.session(done[0]).exited
    assert "damaged" not in capsys.readouterr().err


def _call_catching(call, caught):
    try:
        call()
    except Exception as exc:
        caught.append(exc)


@pytest.mark.parametrize("interval", [0, -5, float("nan"), float("inf"), "30", True])
def test_a_scope_refuses_a_heartbeat_interval_that_is_not_a_positive_number(tracker, task, interval):
    from brat_sessions.errors import BadInput

    with (
        pytest.raises(BadInput, match="heartbeat interval"),
        tracker.session_scope(task.task_id, heartbeat_interval=interval),
    ):
        pass
    assert tracker.sessions() == []  # refused before anything was written


@pytest.mark.parametrize("bad", [123, None, b"s-1", "s 1"])
def test_a_session_id_that_is_not_text_is_bad_input(tracker, bad):
    from brat_sessions.errors import BadInput

    with pytest.raises(BadInput, match="not a valid session id"):
        tracker.session(bad)


def test_another_thread_opens_the_same_repository_as_the_tracker(tmp_path):
    """A work tree whose git dir lies elsewhere (`git init --separate-git-dir`), inside
    another repository's work tree: each thread opens what the Tracker was given."""
    import threading

    from brat_sessions.issues.tasks import create_task
    from brat_sessions.workspace import Workspace

    outer = tmp_path / "outer"
    git(tmp_path, "init", "-q", str(outer))  # (the repository the git dir lies in)
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--separate-git-dir", str(outer / "store.git"), str(work))
    task = create_task(Workspace(work), "T")
    t = Tracker(work)
    seen = []
    thread = threading.Thread(target=lambda: seen.append([x.task_id for x in t.tasks()]))
    thread.start()
    thread.join()
    assert seen == [[task.task_id]]


def test_a_symbolic_lease_ref_is_named_not_an_internal_error(repo, tracker, task):
    s = tracker.start(task.task_id)
    git(repo, "symbolic-ref", f"refs/brat/sessions/leases/{s.session_id}", "refs/heads/elsewhere")
    out = brat("sessions", "heartbeat", s.session_id, cwd=repo)
    assert out.returncode == 5 and "is a symbolic ref, not a lease" in out.stderr


def test_an_exit_the_heartbeat_could_not_judge_is_judged_at_the_next_one(repo, tracker, task, monkeypatch):
    sid, _, _ = _ended_keeping_a_lease(repo, tracker, task)
    s = tracker.session(sid)
    real = tracker.ws.fresh_index
    calls = []

    def busy_once():  # (another process rebuilding the index, once)
        calls.append(1)
        if len(calls) == 1:
            raise Conflict("index busy")
        return real()

    monkeypatch.setattr(tracker.ws, "fresh_index", busy_once)
    with pytest.raises(Conflict):
        tracker.heartbeat(s.session_id)
    with pytest.raises(Fenced):
        tracker.heartbeat(s.session_id)


def test_a_lease_left_behind_long_ago_is_fenced_and_dropped_by_reap(repo, tracker, task):
    sid, ref, lease = _ended_keeping_a_lease(repo, tracker, task)
    s = tracker.session(sid)
    for n in range(70):  # (far more commits than a heartbeat looks through)
        tracker.create_task(f"later {n}")
    assert brat("sessions", "heartbeat", s.session_id, cwd=repo).returncode == 4
    git(repo, "update-ref", ref, lease)
    assert brat("sessions", "reap", cwd=repo).returncode == 0
    assert read_lease(tracker.ws.repo, s.session_id) is None


def test_a_heartbeat_finds_an_exit_far_below_a_log_its_index_has_not_read(repo, tracker, task):
    # (the log moved by more than a heartbeat looks through, with no brat command to fold it
    # in: grite's own sync, say; the look recorded itself as judged and never fenced)
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from ..helpers import append_raw, block_text

    s = tracker.start(task.task_id)
    tracker.heartbeat(s.session_id)
    issue = bytes.fromhex(task.issue_id)
    ended = block_text(session_id=s.session_id, state="exit", started_ts=s.started_ts, exit_code=0)
    ended = ended.replace("exit_reason = null", 'exit_reason = "completed"')
    append_raw(repo, [make_event(issue, bytes(16), s.started_ts + 1, COMMENT_ADDED, [ended])])
    for n in range(70):
        append_raw(repo, [make_event(issue, bytes(16), s.started_ts + 2 + n, COMMENT_ADDED, ["later"])])
    with pytest.raises(Fenced):
        tracker.heartbeat(s.session_id)


def test_usage_reported_while_the_session_exits_is_recorded_or_refused(repo, task):
    """A usage call racing the exit: either it is in the stored totals, or it raised."""
    import threading

    for _ in range(3):
        tracker = Tracker(repo)
        sid = tracker.start(task.task_id, state="running").session_id
        told_recorded = []

        def report(sid=sid, told_recorded=told_recorded):
            reporter = Tracker(repo)  # (its own repository and index, as another thread's would be)
            while True:
                try:
                    reporter.usage(sid, model="m", input_tokens=1, output_tokens=1)
                except Fenced:
                    return
                told_recorded.append(1)

        thread = threading.Thread(target=report)
        thread.start()
        wait_for(lambda told_recorded=told_recorded: len(told_recorded) >= 5)
        tracker.exit(sid, 0)
        thread.join(timeout=60)
        assert tracker.session(sid).usage["calls"] == len(told_recorded)


def test_a_sealed_lease_refuses_usage_phase_and_heartbeats_until_unsealed(repo, tracker, task):
    from brat_sessions.sessions.lease import seal_lease, unseal_lease

    sid = tracker.start(task.task_id, state="running").session_id
    tracker.usage(sid, model="m", input_tokens=1, output_tokens=1)
    sealed = seal_lease(tracker.ws.repo, sid)  # as an exit does first
    with pytest.raises(Fenced, match="is exiting"):
        tracker.usage(sid, model="m", input_tokens=1, output_tokens=1)
    with pytest.raises(Fenced, match="is exiting"):
        tracker.phase(sid, "tests")
    assert brat("sessions", "heartbeat", sid, cwd=repo).returncode == 4
    unseal_lease(tracker.ws.repo, sid, sealed)
    tracker.heartbeat(sid)
    # an exit refused after sealing (the session exited elsewhere meanwhile) leaves no lease
    other = Tracker(repo)
    other.exit(sid, 0)
    with pytest.raises(Fenced):
        tracker.exit(sid, 1)
    assert read_lease(tracker.ws.repo, sid) is None
    assert tracker.session(sid).usage["calls"] == 1


def test_a_refused_exit_stores_no_output(repo, tracker, task):
    sid = tracker.start(task.task_id).session_id
    tracker.exit(sid, 0)
    before = git(repo, "for-each-ref", "refs/brat/sessions/outputs")
    with pytest.raises(Fenced):
        tracker.exit(sid, 1, output=b"never stored")
    with pytest.raises(NotFound):
        tracker.exit("s-20250101-dead", 1, output=b"never stored either")
    assert git(repo, "for-each-ref", "refs/brat/sessions/outputs") == before


FORKED_INSIDE_A_SCOPE = """
import os, sys
from brat_sessions import Tracker
t = Tracker(".")
with t.session_scope(sys.argv[1]) as s:
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a forked helper ending as command-line code does: through the block
    os.waitpid(pid, 0)
    print(s.session_id)
    print(t.session(s.session_id).status, flush=True)
"""


def test_a_process_forked_inside_a_scope_never_ends_its_parents_session(repo, tracker, task):
    out = subprocess.run(
        [sys.executable, "-c", FORKED_INSIDE_A_SCOPE, task.task_id], cwd=repo, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    sid, status_after_the_child = out.stdout.split()
    assert status_after_the_child == "running"
    ended = tracker.session(sid)
    assert (ended.exit_reason, ended.exit_code) == ("completed", 0)
    assert [b.fields["state"] for b in tracker.history(sid)].count("exit") == 1


@pytest.mark.parametrize("grace", [None, "x", float("inf"), float("nan"), -1, True])
def test_stop_refuses_a_grace_period_that_is_not_a_finite_number(tracker, task, grace):
    sid = tracker.start(task.task_id, state="running").session_id
    with pytest.raises(BadInput, match="grace period"):
        tracker.stop(sid, grace_s=grace)
    with pytest.raises(BadInput, match="grace period"):
        tracker.stop_tree(sid, grace_s=grace)
    assert not tracker.session(sid).exited


def test_a_stop_that_loses_the_race_to_another_exit_says_so(repo, tracker, task):
    from brat_sessions.worker.stopping import stop_report

    sid = tracker.start(task.task_id, state="running").session_id
    real_exit = tracker.exit

    def exit_after_another(session_id, *args, **kwargs):
        Tracker(repo).exit(session_id, 7)  # another process's exit lands first
        return real_exit(session_id, *args, **kwargs)

    tracker.exit = exit_after_another
    with pytest.raises(Fenced):
        stop_report(tracker, sid)
    assert tracker.session(sid).exit_code == 7


def test_a_block_that_records_its_own_end_is_not_interrupted_and_nothing_more_is_recorded(
    repo, tracker, task
):
    with tracker.session_scope(task.task_id, heartbeat_interval=0.05) as s:
        tracker.exit(s.session_id, 3, "completed", output=b"its own output")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # cleanup goes on: no interrupt comes (heartbeats do)
            time.sleep(0.05)
        with pytest.raises(Fenced, match="recorded its end"):
            s.log("after the end")
    ended = tracker.session(s.session_id)
    assert (ended.exit_code, ended.exit_reason) == (3, "completed")
    assert [b.fields["state"] for b in tracker.history(s.session_id)].count("exit") == 1


def test_a_scope_inside_one_ended_elsewhere_is_recorded_as_stopped_with_it(repo, tracker, task):
    with (
        pytest.raises(Fenced),
        tracker.session_scope(task.task_id, heartbeat_interval=0.05) as outer,
        tracker.session_scope(task.task_id, heartbeat_interval=60) as inner,
    ):
        Tracker(repo).exit(outer.session_id, -1, "timeout")  # as another process would
        time.sleep(30)  # the outer scope's heartbeat interrupts this
    assert tracker.session(outer.session_id).exit_reason == "timeout"
    stopped = tracker.session(inner.session_id)
    assert (stopped.exit_reason, stopped.exit_code, stopped.stop_cause) == ("user-stop", 130, "parent-ended")


def test_arguments_of_the_wrong_kind_are_bad_input_not_python_errors(repo, tracker, task, tmp_path):
    for task_value in (123, None, object()):
        with pytest.raises(BadInput, match="a task is"):
            tracker.start(task_value)
    sid = tracker.start(task.task_id).session_id
    with pytest.raises(BadInput, match="an output is"):
        tracker.exit(sid, 0, output=123)
    with pytest.raises(BadInput, match="not a valid session id"):
        tracker.adopted("../x")
    with tracker.session_scope(task.task_id) as s:
        with pytest.raises(BadInput, match="UTF-8"):
            s.log("\udcff")
        with pytest.raises(BadInput, match="text or bytes"):
            s.log(123)
        s.log(bytearray(b"bytes-like\n"))
    ended = tracker.exit(sid, 0, output=memoryview(b"a view"))
    assert ended.last_output_ref == "sha256:" + hashlib.sha256(b"a view").hexdigest()
    gone = tmp_path / "gone"
    gone.mkdir()
    code = "import os; os.chdir(os.environ['GONE']); os.rmdir(os.environ['GONE']); from brat_sessions import Tracker; Tracker()"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "GONE": str(gone)}, capture_output=True, text=True
    )
    assert "EnvironmentProblem: the current directory no longer exists" in out.stderr


def test_an_exit_is_recorded_though_a_killed_heartbeat_left_the_lease_locked(repo, tracker, task):
    sid = tracker.start(task.task_id, state="running").session_id
    lock = repo / ".git" / "refs" / "brat" / "sessions" / "leases" / f"{sid}.lock"
    lock.write_text("")  # a heartbeat killed half-way through its update
    try:
        assert tracker.exit(sid, 0).exit_reason == "completed"
    finally:
        lock.unlink()
    with tracker.session_scope(task.task_id, heartbeat_interval=60) as s:
        lock = repo / ".git" / "refs" / "brat" / "sessions" / "leases" / f"{s.session_id}.lock"
        lock.write_text("")
        try:
            tracker.exit(s.session_id, 3)
        finally:
            lock.unlink()
    assert (tracker.session(s.session_id).exit_code, tracker.session(s.session_id).status) == (3, "exit")


def test_an_exit_killed_after_its_block_leaves_a_sealed_lease_that_fences_the_next_heartbeat(
    repo, tracker, task, monkeypatch
):
    from brat_sessions.worker import api

    sid = tracker.start(task.task_id, state="running").session_id
    monkeypatch.setattr(api, "drop_lease", lambda *a, **k: True)  # killed before it dropped the lease
    tracker.exit(sid, 0)
    monkeypatch.undo()
    assert read_lease(tracker.ws.repo, sid).sealed is not None
    with pytest.raises(Fenced, match="already exited"):  # not "is exiting": the exit is in the log
        Tracker(repo).heartbeat(sid)
    assert read_lease(tracker.ws.repo, sid) is None


def test_a_seal_left_by_an_exit_that_died_before_its_block_lapses(repo, tracker, task):
    from datetime import UTC, datetime, timedelta

    from freezegun import freeze_time

    from brat_sessions.sessions.lease import SEAL_ABANDONED_MS, seal_lease

    sid = tracker.start(task.task_id, state="running").session_id
    with freeze_time("2026-11-26 10:00:00"):
        seal_lease(tracker.ws.repo, sid)  # then killed: no block
        with pytest.raises(Fenced, match="is exiting"):
            tracker.heartbeat(sid)
    with freeze_time(
        datetime(2026, 11, 26, 10, 0, tzinfo=UTC) + timedelta(milliseconds=SEAL_ABANDONED_MS + 1)
    ):
        tracker.heartbeat(sid)  # the seal lapsed: the worker goes on
    assert read_lease(tracker.ws.repo, sid).sealed is None


def test_a_seal_from_a_clock_far_ahead_lapses_and_an_exit_unseals_only_its_own_seal(repo, tracker, task):
    from datetime import UTC, datetime

    from freezegun import freeze_time

    from brat_sessions.sessions.lease import seal_lease, unseal_lease

    sid = tracker.start(task.task_id, state="running").session_id
    with freeze_time(datetime(2026, 11, 26, 12, 0, tzinfo=UTC)):
        ours = seal_lease(tracker.ws.repo, sid)
    with freeze_time(datetime(2026, 11, 26, 11, 0, tzinfo=UTC)):  # the clock stepped back an hour
        tracker.heartbeat(sid)  # not silenced for an hour and a minute
    with freeze_time(datetime(2026, 11, 26, 11, 0, 1, tzinfo=UTC)):
        seal_lease(tracker.ws.repo, sid)  # another exit seals it anew
        unseal_lease(tracker.ws.repo, sid, ours)  # the first exit, failing, undoes only its own
        assert read_lease(tracker.ws.repo, sid).sealed is not None
