import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brat_sessions.config import Config
from brat_sessions.reaper import reap
from brat_sessions.worker.api import Tracker

from ..helpers import brat, brat_json, wait_for


def session_of(tracker, task):
    return tracker.ws.fresh_index().sessions(True, task.issue_id)


def test_run_records_completion_tees_output_and_exits_with_the_status(repo, tracker, task):
    out = brat(
        "sessions",
        "run",
        "--task",
        task.task_id,
        "--engine",
        "codex",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
        cwd=repo,
    )
    assert out.returncode == 3
    assert "to-out" in out.stdout and "to-err" in out.stderr
    (s,) = session_of(tracker, task)
    assert (s.status, s.exit_code, s.exit_reason, s.engine, s.host) == (
        "exit",
        3,
        "completed",
        "codex",
        tracker.host,
    )
    log = (repo / ".grite" / "logs" / f"{s.session_id}.log").read_bytes()
    assert sorted(log.splitlines()) == [b"to-err", b"to-out"]
    assert s.last_output_ref == "sha256:" + hashlib.sha256(log).hexdigest()
    assert [b.fields["state"] for b in tracker.history(s.session_id)] == ["spawned", "running", "exit"]
    assert isinstance(s.pid, int)


def test_death_by_signal_is_128_plus_n(repo, tracker, task):
    out = brat("sessions", "run", "--task", task.task_id, "--", "sh", "-c", "kill -KILL $$", cwd=repo)
    assert out.returncode == 128 + 9
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("signal", 137)


def test_command_not_found(repo, tracker, task):
    out = brat("sessions", "run", "--task", task.task_id, "--", "no-such-command-xyz", cwd=repo)
    assert out.returncode == 127 and "cannot run no-such-command-xyz" in out.stderr
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("completed", 127)


def _start_run(repo, task, *command, interval="30", new_session=False):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brat_sessions.cli",
            "sessions",
            "run",
            "--task",
            task.task_id,
            "--heartbeat-interval",
            interval,
            "--",
            *command,
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def _running(tracker, task):
    found = [s for s in session_of(tracker, task) if s.status == "running"]
    return found[0] if found else None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_to_run_are_forwarded_to_the_command(repo, tracker, task, signum):
    proc = _start_run(repo, task, "sleep", "60")
    s = wait_for(lambda: _running(tracker, task))
    proc.send_signal(signum)  # not from a terminal: run forwards it
    assert proc.wait(timeout=30) == 128 + signum
    done = tracker.session(s.session_id)
    assert (done.exit_reason, done.exit_code) == ("signal", 128 + signum)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_supervisor_is_a_crash_and_its_command_is_stopped(repo, tracker, task):
    from brat_sessions.worker import procs

    proc = _start_run(repo, task, "sleep", "60")
    s = wait_for(lambda: _running(tracker, task))
    (shim,) = _children(proc.pid)  # the shim between `run` and the command (all ours)
    os.kill(shim, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    done = tracker.session(s.session_id)
    assert (done.exit_reason, done.exit_code) == ("crash", -1)  # not "completed -9"
    assert wait_for(lambda: not procs.alive(s.pid), timeout=30)  # not left running unsupervised


def test_a_reader_that_stops_reading_ends_the_command_as_without_run(repo, tracker, task):
    proc = _start_run(repo, task, "yes")  # `brat sessions run -- yes | head -1`
    assert proc.stdout is not None
    assert proc.stdout.readline() == "y\n"
    proc.stdout.close()  # the reader goes away
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE  # yes got SIGPIPE, as it would
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("signal", 128 + signal.SIGPIPE)


def test_log_follow_prints_until_the_session_exits(repo, tracker, task, tmp_path):
    gate = tmp_path / "gate"
    proc = _start_run(
        repo, task, "sh", "-c", f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"
    )
    s = wait_for(lambda: _running(tracker, task))
    log = repo / ".grite" / "logs" / f"{s.session_id}.log"
    wait_for(lambda: log.exists() and log.read_text() == "first\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "log", s.session_id, "--follow"],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    gate.touch()
    assert proc.wait(timeout=30) == 0
    out, _ = follower.communicate(timeout=30)
    assert out == "first\nsecond\n"


def test_log_follow_waits_for_a_log_not_written_yet_and_ends_quietly_on_ctrl_c(repo, tracker, task):
    follow = [sys.executable, "-m", "brat_sessions.cli", "sessions", "log"]
    s = tracker.start(task.task_id, state="running")
    assert brat("sessions", "log", s.session_id, cwd=repo).returncode == 3  # nothing yet
    refused = brat("sessions", "log", s.session_id, "-f", "--json", cwd=repo)
    assert refused.returncode == 2 and "--json" in refused.stderr
    follower = subprocess.Popen([*follow, s.session_id, "-f"], cwd=repo, stdout=subprocess.PIPE, text=True)
    log = tracker.files(s.session_id).log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("late\n")
    tracker.exit(s.session_id, 0)
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0 and out == "late\n"
    other = tracker.start(task.task_id, state="running")
    waiting = subprocess.Popen([*follow, other.session_id, "-f"], cwd=repo, stderr=subprocess.PIPE, text=True)
    index = str(repo / ".git" / "brat_sessions" / "index.sqlite")
    fds = Path(f"/proc/{waiting.pid}/fd")
    wait_for(lambda: any(os.path.realpath(fd) == index for fd in fds.iterdir()))  # in the command
    waiting.send_signal(signal.SIGINT)  # our own follower, waiting for the log
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and "Traceback" not in err, err


def test_run_heartbeats_and_stops_its_command_when_reaped(repo, tracker, task):
    proc = _start_run(repo, task, "sleep", "60", interval="0.1")
    s = wait_for(lambda: _running(tracker, task))
    wait_for(lambda: tracker.session(s.session_id).last_heartbeat_ts)
    Tracker(repo).exit(s.session_id, -1, "timeout")  # as a reaper elsewhere would
    assert proc.wait(timeout=30) == 4
    assert "already exited" in proc.stderr.read()
    wait_for(
        lambda: (
            not os.path.exists(f"/proc/{s.pid}")
            or Path(f"/proc/{s.pid}/stat").read_text().split(") ")[1][0] == "Z"
        )
    )
    assert tracker.session(s.session_id).exit_reason == "timeout"


def test_stop_of_a_run_session_records_user_stop_with_the_status(repo, tracker, task):
    proc = _start_run(repo, task, "sleep", "60")
    s = wait_for(lambda: _running(tracker, task))
    out = brat_json("sessions", "stop", s.session_id, cwd=repo)
    assert proc.wait(timeout=30) == 143
    assert (out["session"]["exit_reason"], out["session"]["exit_code"]) == ("user-stop", 143)
    assert len([b for b in tracker.history(s.session_id) if b.fields["state"] == "exit"]) == 1


@pytest.mark.parametrize("redirect", ["", "exec >/dev/null 2>&1; "])
def test_a_dead_supervisor_stops_its_command_and_the_reaper_learns_the_real_end(
    repo, tracker, task, redirect
):
    """`brat sessions run` itself killed: nothing heartbeats the session any more, so its
    shim stops the command's group (SIGTERM) instead of leaving it to run unsupervised,
    and keeps how it ended for the next reap on this machine. Also when the command sent
    its output elsewhere (nothing left for the shim to read)."""
    command = redirect + "trap 'exit 7' TERM; while true; do sleep 0.05; done"
    proc = _start_run(repo, task, "sh", "-c", command)
    s = wait_for(lambda: _running(tracker, task))
    proc.send_signal(signal.SIGKILL)  # the supervisor dies
    proc.wait()
    status = repo / ".grite" / "logs" / f"{s.session_id}.status.json"
    wait_for(status.exists)
    report = reap(tracker.ws, Config())
    assert [(v.session_id, v.exit_reason, v.exit_code) for v in report.reaped] == [
        (s.session_id, "completed", 7)
    ]
    assert tracker.session(s.session_id).last_output_ref.startswith("sha256:")


def test_modules_in_the_working_directory_are_not_imported_by_run(repo, tracker, task):
    """A repository whose root holds json.py, selectors.py or signal.py (run's supervisor
    imports them): run neither runs them nor fails."""
    for name in ("json", "selectors", "signal"):
        (repo / f"{name}.py").write_text("print('HIJACKED'); raise SystemExit(7)\n")
    out = brat("sessions", "run", "--task", task.task_id, "--", "sh", "-c", "echo fine", cwd=repo)
    assert (out.returncode, out.stdout, out.stderr) == (0, "fine\n", "")
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("completed", 0)


def test_children_run_the_copy_of_brat_sessions_that_started_them(tmp_path):
    """A copy put on sys.path at run time (vendored): run's supervisor and the cold build's
    planner are that copy, not whichever one the interpreter finds first."""
    import shutil

    vendored = tmp_path / "vendored"
    shutil.copytree(Path(__file__).resolve().parents[2] / "brat_sessions", vendored / "brat_sessions")
    (vendored / "brat_sessions" / "_probe.py").write_text("print(__file__)\n")
    code = (
        f"import sys, subprocess; sys.path.insert(0, {str(vendored)!r}); import brat_sessions; "
        "print(subprocess.run(brat_sessions.python_command('brat_sessions._probe'), "
        "capture_output=True, text=True).stdout, end='')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.strip() == str(vendored / "brat_sessions" / "_probe.py"), out.stderr


def test_json_after_the_double_dash_belongs_to_the_command(repo, task):
    out = brat("sessions", "run", "--task", task.task_id, "--", "sh", "-c", "echo plain", "--json", cwd=repo)
    assert out.returncode == 0 and out.stdout == "plain\n"  # no envelope: --json was sh's argument


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_stop_ends_the_whole_process_group(repo, tracker, task, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    proc = _start_run(
        repo, task, "sh", "-c", f"echo working; sleep 45 & echo $! > {pidfile}; wait; echo never"
    )
    s = wait_for(lambda: _running(tracker, task))
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()))
    out = brat("sessions", "stop", s.session_id, "--grace", "2", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert proc.wait(timeout=30) == 143  # run ends with its command, not 45 s later
    assert wait_for(lambda: _gone(grandchild), timeout=10)
    assert tracker.session(s.session_id).exit_reason == "user-stop"


def test_run_ends_when_its_command_ends_not_when_the_pipe_closes(repo, tracker, task, tmp_path):
    out = brat(
        "sessions",
        "run",
        "--task",
        task.task_id,
        "--",
        "sh",
        "-c",
        "(sleep 20; echo late) & echo done; exit 5",
        cwd=repo,
        timeout=15,
    )
    assert out.returncode == 5 and "done" in out.stdout
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("completed", 5)
    log = (repo / ".grite" / "logs" / f"{s.session_id}.log").read_bytes()
    assert log == b"done\n"
    try:
        os.killpg(s.pid, signal.SIGKILL)  # the background job this test's command left behind
    except ProcessLookupError:
        pass


def test_forwarded_signals_reach_the_commands_grandchildren(repo, tracker, task, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    proc = _start_run(repo, task, "sh", "-c", f"sleep 45 & echo $! > {pidfile}; wait")
    wait_for(lambda: _running(tracker, task))
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert wait_for(lambda: _gone(grandchild), timeout=10)


def test_log_json_gives_the_exact_bytes_of_an_output_that_is_not_utf8(repo, tracker, task):
    import base64

    raw = b"caf\xe9 \xff\n"
    out = brat("sessions", "run", "--task", task.task_id, "--", "printf", "caf\\351 \\377\\n", cwd=repo)
    assert out.returncode == 0
    (s,) = session_of(tracker, task)
    data = brat_json("sessions", "log", s.session_id, cwd=repo)
    assert base64.b64decode(data["base64"]) == raw and data["text"] == raw.decode("utf-8", "replace")
    out = brat("sessions", "run", "--task", task.task_id, "--", "echo", "plain", cwd=repo)
    sid = next(x for x in tracker.sessions(include_exited=True) if x.session_id != s.session_id).session_id
    plain = brat_json("sessions", "log", sid, cwd=repo)
    assert (plain["text"], plain["base64"]) == ("plain\n", None)


def test_the_reaper_here_stops_a_command_whose_run_and_shim_were_both_killed(repo, tracker, task):
    """`kill -9` of run's whole process group (a shell's `kill -9 %1`): the command has a
    group of its own and runs on, with nothing to heartbeat or stop it. The reaper on this
    machine, which holds the proof that run started it, stops it when it records the exit."""
    from brat_sessions.worker import procs

    proc = _start_run(repo, task, "sleep", "60", new_session=True)
    s = wait_for(lambda: _running(tracker, task))
    os.killpg(proc.pid, signal.SIGKILL)  # run and its shim (the command is in its own group)
    proc.wait()
    assert procs.alive(s.pid)
    report = reap(tracker.ws, Config(), now=s.started_ts + 3_600_000)
    assert [(v.session_id, v.exit_reason) for v in report.reaped] == [(s.session_id, "timeout")]
    assert report.stopped == [s.session_id]
    assert wait_for(lambda: not procs.alive(s.pid), timeout=30)


def test_the_reaper_leaves_a_live_run_to_stop_its_command_with_its_own_grace(repo, tracker, task):
    proc = _start_run(repo, task, "sleep", "60", interval="1")
    s = wait_for(lambda: _running(tracker, task))
    report = reap(tracker.ws, Config(), now=s.started_ts + 3_600_000)
    assert [v.session_id for v in report.reaped] == [s.session_id] and report.stopped == []
    assert proc.wait(timeout=60) == 4  # run learnt it at its next heartbeat, and stopped it


def test_the_reaper_never_signals_a_group_whose_recorded_leader_is_gone(repo, tracker, task):
    """A proof's group whose leader has ended may be another program's by now (the pid
    reused, a daemon's double fork leaving a child in a group of that id): no signal."""
    import json

    from brat_sessions.worker import procs

    leader = subprocess.Popen(
        ["sh", "-c", "sleep 1000 >/dev/null & echo $!"], stdout=subprocess.PIPE, start_new_session=True
    )
    canary = int(leader.stdout.readline())  # in the leader's group, which the leader has left
    leader.wait()
    try:
        s = tracker.start(task.task_id, state="running")
        proof = {
            "session_id": s.session_id,
            "pid": leader.pid,
            "start_ticks": procs.start_ticks(canary) - 1,  # (a process before the canary)
            "boot_id": procs.boot_id(),
            "group": True,
            "supervisor": leader.pid,
            "supervisor_ticks": 1,
            "grace_s": 1,
        }
        path = tracker.ws.ctx.data_dir / "procs" / f"{s.session_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(proof))
        report = reap(tracker.ws, Config(), now=s.started_ts + 3_600_000)
        assert [v.session_id for v in report.reaped] == [s.session_id] and report.stopped == []
        assert procs.alive(canary)
    finally:
        os.kill(canary, signal.SIGKILL)


def test_a_reap_interrupted_while_it_waited_for_an_orphan_leaves_it_to_the_next(repo, tracker, task):
    """The reap that recorded the exit is killed (a CI time limit) during the grace it gives
    an orphaned command that ignores SIGTERM: the next pass stops what is left."""
    from brat_sessions.worker import procs

    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("clock_skew: 0\n")
    command = ["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "run", "--task", task.task_id]
        + ["--grace", "3", "--heartbeat-interval", "30", "--", *command],
        cwd=repo,
        start_new_session=True,
    )
    s = wait_for(lambda: _running(tracker, task))
    os.killpg(proc.pid, signal.SIGKILL)  # run and its shim
    proc.wait()
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brat_sessions.cli",
            "sessions",
            "reap",
            "--timeout",
            "0",
            "--spawn-timeout",
            "0",
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: tracker.session(s.session_id).exited)
    finally:
        first.kill()  # (while it waits out the grace)
        first.wait()
    reap(tracker.ws, Config(timeout=0, spawn_timeout=0, clock_skew=0))
    assert wait_for(lambda: not procs.alive(s.pid), timeout=30)


def test_a_command_that_cannot_start_under_a_name_that_is_not_utf8_is_127(repo, tracker, task):
    name = os.fsdecode(b"nope\xff")
    out = brat("sessions", "run", "--task", task.task_id, "--", name, cwd=repo)
    assert out.returncode == 127 and "Traceback" not in out.stderr, out.stderr
    (s,) = session_of(tracker, task)
    assert (s.exit_reason, s.exit_code) == ("completed", 127)


def test_a_proof_keeps_any_grace_run_takes(tmp_path):
    from brat_sessions.worker import proof as proofs

    canary = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        made = proofs.record(tmp_path, "s-1", canary.pid, group=True, supervisor=os.getpid(), grace_s=7200.0)
        assert made is not None and proofs.load(tmp_path, "s-1") == made
    finally:
        canary.kill()
        canary.wait()
