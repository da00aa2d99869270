"""The library as worker authors use it: the documented example, types, validation, config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brat_sessions import BadInput, BratError, Conflict, Fenced, NotFound, Tracker
from brat_sessions.issues.tasks import create_task
from brat_sessions.sessions.lease import read_lease
from brat_sessions.workspace import Workspace

from ..helpers import ROOT, WORKTREE_ENV, brat_json, make_repo, wait_for

EXAMPLE = ROOT / "docs" / "examples" / "worker.py"


def test_the_documented_worker_runs_as_written(repo):
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sid, reason, code, ref = out.stdout.split()
    assert (reason, code) == ("completed", "0") and ref.startswith("sha256:")
    assert brat_json("sessions", "log", sid, cwd=repo)["text"] == "0 Python files\n"
    assert (ROOT / "docs" / "api.md").read_text().count(EXAMPLE.read_text().strip()) == 1


def test_the_documented_worker_type_checks_strictly():
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


def test_scope_follows_the_repositorys_heartbeat_interval(repo, task):
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("heartbeat_interval: 1\ntimeout: 10\n")
    tracker = Tracker(repo)
    with tracker.session_scope(task.task_id) as s:
        first = wait_for(lambda: read_lease(tracker.ws.repo, s.session_id).ts)
        wait_for(lambda: (read_lease(tracker.ws.repo, s.session_id).ts or 0) > first, timeout=10)


def test_scope_raises_fenced_and_never_hides_its_own_end(repo, task):
    tracker = Tracker(repo)
    with pytest.raises(Fenced) as raised, tracker.session_scope(task.task_id, heartbeat_interval=30) as s:
        Tracker(repo).exit(s.session_id, -1, "timeout")  # the reaper got there first
    assert "not recorded" in raised.value.message and raised.value.exit_code == 4
    assert tracker.session(s.session_id).exit_reason == "timeout"


def test_a_fenced_about_another_session_is_this_blocks_failure(repo, task):
    tracker = Tracker(repo)
    other = tracker.start(task.task_id)
    tracker.exit(other.session_id, 0)
    with pytest.raises(Fenced), tracker.session_scope(task.task_id, heartbeat_interval=30) as s:
        tracker.exit(other.session_id, 0)  # about `other`, not this block's session
    done = tracker.session(s.session_id)
    assert (done.exit_reason, done.exit_code) == ("completed", 1)  # recorded, not left running


@pytest.mark.parametrize("code", [True, False, None, 2**40, 256, -1, 2**64, "bye", 3])
def test_sys_exit_in_a_scope_records_the_status_python_gives(repo, task, code):
    status = subprocess.run([sys.executable, "-c", f"import sys; sys.exit({code!r})"], capture_output=True)
    tracker = Tracker(repo)
    with pytest.raises(SystemExit), tracker.session_scope(task.task_id, heartbeat_interval=30) as s:
        raise SystemExit(code)
    done = tracker.session(s.session_id)
    assert (done.exit_reason, done.exit_code) == ("completed", status.returncode)


def _scope_script(body: str, setup: str = "") -> list[str]:
    """A worker process of ours (a canary: whatever is signalled is this process)."""
    code = f"""
import signal, sys, time
from brat_sessions import Fenced, Tracker
{setup}
t = Tracker(".")
try:
    with t.session_scope(sys.argv[1], heartbeat_interval=0.1) as s:
{body}
except Fenced as exc:
    print("fenced", s.session_id)
"""
    return [sys.executable, "-c", code]


def test_stopping_its_own_session_never_signals_the_process_itself(repo, task):
    body = """
        print(t.stop_report(s.session_id, grace_s=1).note, flush=True)
        time.sleep(0.5)
"""
    out = subprocess.run(
        [*_scope_script(body), task.task_id], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr  # alive: not killed by its own stop
    assert "the session's process is this one" in out.stdout
    assert "fenced" not in out.stdout  # the block ended its own session: nothing more to say
    sid = Tracker(repo).sessions(include_exited=True)[-1].session_id
    assert Tracker(repo).session(sid).exit_reason == "user-stop"


@pytest.mark.parametrize("handler", ["signal.SIG_DFL", "signal.SIG_IGN", "lambda *a: print('mine')"])
def test_fencing_never_sends_sigint_to_a_program_that_set_up_its_own(repo, task, handler):
    body = """
        Tracker(".").exit(s.session_id, -1, "timeout")  # as a reaper elsewhere
        for _ in range(600):
            time.sleep(0.05)
            s.raise_if_fenced()
"""
    setup = f"signal.signal(signal.SIGINT, {handler})"
    out = subprocess.run(
        [*_scope_script(body, setup), task.task_id], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr  # SIG_DFL: a SIGINT would have killed it
    assert "fenced" in out.stdout and "mine" not in out.stdout


def test_a_stop_that_the_workers_sigterm_handler_ends_is_recorded_as_user_stop(repo, task):
    setup = "signal.signal(signal.SIGTERM, lambda n, f: sys.exit(128 + n))"
    body = """
        print(s.session_id, flush=True)
        time.sleep(30)
"""
    worker = subprocess.Popen(
        [*_scope_script(body, setup), task.task_id], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    sid = worker.stdout.readline().strip()
    stopped = brat_json("sessions", "stop", sid, "--grace", "10", cwd=repo)
    assert stopped["signalled"] is True
    assert worker.wait(timeout=30) in (143, 0)  # its own exit, or Fenced if the stop recorded it first
    assert Tracker(repo).session(sid).exit_reason == "user-stop"
    assert not Tracker(repo).files(sid).stop_request.exists()


def test_a_scope_inside_brat_sessions_run_is_a_child_of_its_session(repo, task, monkeypatch):
    tracker = Tracker(repo)
    parent = tracker.start(task.task_id, state="running")
    monkeypatch.setenv("BRAT_SESSION_ID", parent.session_id)  # as `run` sets it for its command
    with tracker.session_scope(task.task_id, heartbeat_interval=30) as s:
        pass
    assert tracker.session(s.session_id).parent_session_id == parent.session_id
    monkeypatch.setenv("BRAT_SESSION_ID", "s-19990101-0000")  # another repository's run
    with tracker.session_scope(task.task_id, heartbeat_interval=30) as s:
        pass
    assert tracker.session(s.session_id).parent_session_id is None


def test_tasks_from_the_api(repo):
    tracker = Tracker(repo)
    made = tracker.create_task("Write docs", "Paths: docs/", priority="P1")
    assert [t.task_id for t in tracker.tasks()] == [made.task_id]
    assert tracker.task(made.task_id).title == "Write docs"
    assert tracker.task(made).task_id == made.task_id  # an Issue, as the docs say
    with pytest.raises(BadInput):
        tracker.task(42)  # type: ignore[arg-type]
    assert tracker.tasks(status="queued") and not tracker.tasks(status="merged")
    with pytest.raises(BadInput):
        tracker.tasks(status="bogus")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        tracker.task("t-19990101-0000")


def test_bad_arguments_are_bad_input_never_a_block(repo, task):
    tracker = Tracker(repo)
    s = tracker.start(task.task_id)
    for call in (
        lambda: tracker.transition(s.session_id, "bogus2", force=True),  # type: ignore[arg-type]
        lambda: tracker.transition(s.session_id, "bogus"),  # type: ignore[arg-type]
        lambda: tracker.exit(s.session_id, 0, "bogus"),  # type: ignore[arg-type]
        lambda: tracker.exit(s.session_id, 2**40),
        lambda: tracker.start(task.task_id, role="boss"),  # type: ignore[arg-type]
        lambda: tracker.start(task.task_id, session_type="robot"),  # type: ignore[arg-type]
        lambda: tracker.start(task.task_id, pid=0),
        lambda: tracker.start(task.task_id, engine="a\x00b"),
        lambda: tracker.heartbeat("../../etc/passwd"),
    ):
        with pytest.raises(BadInput) as raised:
            call()
        assert raised.value.exit_code == 2
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []


text = st.text(max_size=20)
SETUP = {}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "transition", "heartbeat", "exit", "stop"]),
            text,
            text,
            st.one_of(st.none(), st.integers(-5, 2**33)),
            st.sampled_from(
                [
                    "spawned",
                    "ready",
                    "running",
                    "handoff",
                    "exit",
                    "x",
                    "completed",
                    "timeout",
                    "user-stop",
                    "polecat",
                    "crew",
                    "witness",
                    "user",
                    "mayor",
                ]
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_api_calls_leave_nothing_for_doctor(tmp_path_factory, calls):
    repo = make_repo(tmp_path_factory.mktemp("api"))
    task = create_task(Workspace(repo), "T")
    tracker = Tracker(repo)
    sessions = [tracker.start(task.task_id).session_id]
    for name, a, b, number, word in calls:
        sid = sessions[-1]
        try:
            if name == "start":
                made = tracker.start(
                    task.task_id,
                    role=word if word in ("witness", "user", "mayor") else None,  # type: ignore[arg-type]
                    engine=a,
                    worktree=b,
                    state=word if word in ("spawned", "ready", "running") else "spawned",
                )  # type: ignore[arg-type]
                sessions.append(made.session_id)
            elif name == "transition":
                tracker.transition(sid, word, force=bool(number and number % 2))  # type: ignore[arg-type]
            elif name == "heartbeat":
                tracker.heartbeat(a or sid)
            elif name == "exit":
                tracker.exit(sid, number if number is not None else 0, word, output=a.encode())  # type: ignore[arg-type]
            else:
                tracker.stop(sid, word, grace_s=0)  # type: ignore[arg-type]
        except (BadInput, Conflict, NotFound, Fenced):
            pass
        except BratError as exc:  # nothing else is expected from these arguments
            pytest.fail(f"{name}: {exc.message}")
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []
