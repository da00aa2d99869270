import json
import subprocess
import sys

import pytest
from freezegun import freeze_time

from brat_sessions.clock import now_ms
from brat_sessions.config import Config, load_config
from brat_sessions.errors import BadInput, Fenced
from brat_sessions.reaper import reap
from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import this_host

from .helpers import append_raw, block_text, brat, brat_json, wal_commit_count

T0 = "2026-01-01 12:00:00"


def other_host(repo):
    return Tracker(repo, host="far-away")


def test_timeout_after_heartbeats_stop(repo, task):
    config = Config(heartbeat_interval=30, clock_skew=5)  # timeout 3*30+30 = 120 s
    with freeze_time(T0) as clock:
        t = other_host(repo)
        s = t.start(task.task_id, state="running")
        t.heartbeat(s.session_id)
        clock.tick(120)
        assert reap(t.ws, config).reaped == []  # within timeout + skew
        t.heartbeat(s.session_id)  # the lease renews it
        clock.tick(125)
        assert reap(t.ws, config).reaped == []
        clock.tick(1)
        (v,) = reap(t.ws, config).reaped
    assert (v.session_id, v.exit_reason, v.exit_code) == (s.session_id, "timeout", -1)
    done = t.session(s.session_id)
    assert (done.status, done.exit_reason, done.exit_code) == ("exit", "timeout", -1)
    assert done.last_heartbeat_ts is not None
    with pytest.raises(Fenced):  # the stuck worker learns it at its next heartbeat
        t.heartbeat(s.session_id)


def test_a_session_that_heartbeats_while_the_pass_runs_is_not_reaped(repo, task, monkeypatch):
    from brat_sessions import reaper as reaper_module

    stored_log = reaper_module._stored_log
    with freeze_time(T0) as clock:
        t = other_host(repo)
        s = t.start(task.task_id, state="running")
        t.heartbeat(s.session_id)
        clock.tick(200)  # stale: the pass judges it a timeout

        def slow_pass_meanwhile_a_beat(ws, files):
            clock.tick(10)  # the pass takes 10 s (more than the 5 s of clock skew)
            t.heartbeat(s.session_id)  # and the worker beats in that time
            return stored_log(ws, files)

        monkeypatch.setattr(reaper_module, "_stored_log", slow_pass_meanwhile_a_beat)
        assert reap(t.ws, Config(heartbeat_interval=30, clock_skew=5, spawn_timeout=60)).reaped == []
    assert not t.session(s.session_id).exited


def test_spawn_timeout_for_sessions_that_never_heartbeat(repo, task):
    config = Config(spawn_timeout=300, clock_skew=0)
    with freeze_time(T0) as clock:
        t = other_host(repo)
        s = t.start(task.task_id)
        clock.tick(299)
        assert reap(t.ws, config).reaped == []
        clock.tick(2)
        assert [v.session_id for v in reap(t.ws, config).reaped] == [s.session_id]


def test_crash_needs_local_proof_that_brat_started_the_process(repo, task):
    victim = subprocess.Popen(["sleep", "30"])
    alive = subprocess.Popen(["sleep", "30"])
    try:
        dead = Tracker(repo).start(task.task_id, pid=victim.pid, state="running")
        living = Tracker(repo).start(task.task_id, pid=alive.pid, state="running")
        # a block written elsewhere naming this host and a pid that is dead here: the log
        # alone proves nothing
        now = now_ms()
        forged = block_text(
            session_id="s-20260101-ffff",
            pid=victim.pid,
            host=this_host(),
            started_ts=now,
            last_heartbeat_ts=now,
        )
        append_raw(
            repo, [make_event(bytes.fromhex(task.issue_id), b"\x01" * 16, now, COMMENT_ADDED, [forged])]
        )
        victim.kill()
        victim.wait()
        report = reap(Tracker(repo).ws, Config())
        assert [(v.session_id, v.exit_reason, v.exit_code) for v in report.reaped] == [
            (dead.session_id, "crash", -1)
        ]
        assert report.alive == 2 and report.checked == 3
        assert not Tracker(repo).session(living.session_id).exited
    finally:
        alive.kill()
        alive.wait()


def test_crash_when_the_pid_was_reused_by_a_newer_process(repo, task):
    newer = subprocess.Popen(["sleep", "30"])
    try:
        t = Tracker(repo)
        s = t.start(task.task_id, pid=newer.pid, state="running")
        # the proof recorded an older process under this pid: what lives there now is not it
        path = repo / ".git" / "brat_sessions" / "procs" / f"{s.session_id}.json"
        proof = json.loads(path.read_text())
        proof["start_ticks"] -= 100
        path.write_text(json.dumps(proof))
        (v,) = reap(Tracker(repo).ws, Config(timeout=10**9, spawn_timeout=10**9)).reaped
        assert (v.session_id, v.exit_reason) == (s.session_id, "crash")
        assert newer.poll() is None  # judged, never signalled
    finally:
        newer.kill()
        newer.wait()


def test_one_commit_per_pass_and_idempotent(repo, task):
    with freeze_time(T0) as clock:
        t = other_host(repo)
        ids = {t.start(task.task_id).session_id for _ in range(12)}
        clock.tick(3600)
        before = wal_commit_count(repo)
        dry = reap(t.ws, Config(), dry_run=True)
        assert {v.session_id for v in dry.reaped} == ids and wal_commit_count(repo) == before
        report = reap(t.ws, Config())
        assert {v.session_id for v in report.reaped} == ids
        assert wal_commit_count(repo) == before + 1
        assert reap(t.ws, Config()).reaped == []
        assert wal_commit_count(repo) == before + 1
    assert all(t.session(sid).exit_reason == "timeout" for sid in ids)


def test_concurrent_reapers_give_each_session_one_exit(repo, task):
    t = other_host(repo)
    ids = [t.start(task.task_id).session_id for _ in range(10)]
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("clock_skew: 0\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "brat_sessions.cli", "sessions", "reap", "--spawn-timeout", "0", "--json"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    for sid in ids:
        exits = [b for b in t.history(sid) if b.fields["state"] == "exit"]
        assert len(exits) == 1, sid


def test_a_bad_actor_is_refused_even_when_nothing_is_stale(repo, task):
    out = brat("sessions", "reap", "--json", cwd=repo, env={"BRAT_ACTOR": "ab" * 15 + "a"})
    assert out.returncode == 2 and "BRAT_ACTOR" in out.stderr
    assert brat("sessions", "reap", "--dry-run", cwd=repo, env={"BRAT_ACTOR": "xyz"}).returncode == 0


def test_reap_cli_json_and_table(repo, task):
    t = other_host(repo)
    s = t.start(task.task_id)
    data = brat_json("sessions", "reap", "--dry-run", "--spawn-timeout", "0", cwd=repo)
    assert data["dry_run"] is True and data["checked"] == 1
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("clock_skew: 0\n")
    data = brat_json("sessions", "reap", "--spawn-timeout", "0", cwd=repo)
    assert data["reaped"] == [
        {
            "session_id": s.session_id,
            "task_id": task.task_id,
            "exit_reason": "timeout",
            "exit_code": -1,
            "why": data["reaped"][0]["why"],
        }
    ]
    assert (data["alive"], data["checked"]) == (0, 1)
    out = brat("sessions", "reap", cwd=repo)
    assert out.returncode == 0 and out.stdout.startswith("reaped 0 of 0 sessions")


def test_config_file_and_flags(repo):
    (repo / ".brat").mkdir()
    path = repo / ".brat" / "sessions.yaml"
    path.write_text("heartbeat_interval: 10\nspawn_timeout: 60\n")
    config = load_config(repo)
    assert (config.effective_timeout, config.spawn_timeout) == (60, 60)
    assert config.override(timeout=5).effective_timeout == 5
    path.write_text("timeout: soon\n")
    with pytest.raises(BadInput, match="'timeout'"):
        load_config(repo)
    path.write_text("heartbeat: 10\n")
    with pytest.raises(BadInput, match="unknown key 'heartbeat'"):
        load_config(repo)
    out = brat("sessions", "reap", cwd=repo)
    assert out.returncode == 2 and "unknown key 'heartbeat'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    path.write_text("timeout: [1\n")
    out = brat("sessions", "reap", cwd=repo)
    assert out.returncode == 2 and "not valid YAML" in out.stderr


@pytest.mark.parametrize(
    "text",
    [
        "timeout: .nan",
        "spawn_timeout: .inf",
        "heartbeat_interval: -.inf",
        "snapshot_events: 1.5",
        "clock_skew: -1",
    ],
)
def test_a_setting_that_is_not_a_finite_number_is_refused(repo, text):
    # NaN compares false with everything: a NaN timeout would make no session ever stale
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text(text + "\n")
    out = brat("sessions", "reap", "--dry-run", cwd=repo)
    assert out.returncode == 2 and text.split(":")[0] in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--timeout", "--spawn-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_reap_flag_that_is_not_a_finite_number_is_refused(repo, flag, value):
    out = brat("sessions", "reap", "--dry-run", flag, value, cwd=repo)
    assert out.returncode == 2 and flag in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_record_of_unsynced_reaper_exits_stays_small(tmp_path, monkeypatch):
    from brat_sessions import reaper as reaper_module

    monkeypatch.setattr(reaper_module, "RECORD_BYTES", 4096)
    record = reaper_module.ReaperRecord(tmp_path)
    for n in range(200):  # a clone that reaps and never syncs
        record.add({n.to_bytes(32, "big"): {f"s-20250101-{n:04x}"}})
    made, text = record.read()
    assert len(text) <= 4096 + 100
    assert (199).to_bytes(32, "big") in made and (0).to_bytes(32, "big") not in made


RECORD_WRITER = """
import sys
from pathlib import Path
from brat_sessions.reaper import ReaperRecord
record = ReaperRecord(Path(sys.argv[1]))
for n in range(int(sys.argv[2])):
    record.add({n.to_bytes(32, "big"): {f"s-20250101-{n % 65536:04x}"}})
"""

RECORD_SYNCER = """
import sys
from pathlib import Path
from brat_sessions.reaper import ReaperRecord
record = ReaperRecord(Path(sys.argv[1]))
forgotten = []
for _ in range(int(sys.argv[2])):
    _, text = record.read()
    record.forget(text)
    forgotten.append(text)
Path(sys.argv[3]).write_text("".join(forgotten))
"""


def test_a_reap_pass_and_a_sync_at_once_lose_no_line_of_the_record(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", RECORD_WRITER, str(tmp_path), "1500"])
    syncer = subprocess.Popen(
        [sys.executable, "-c", RECORD_SYNCER, str(tmp_path), "600", str(tmp_path / "forgotten")]
    )
    assert writer.wait(timeout=120) == 0 and syncer.wait(timeout=120) == 0
    lines = (tmp_path / "forgotten").read_text().splitlines() + (
        tmp_path / "reaper_exits"
    ).read_text().splitlines()
    assert sorted(lines) == sorted({line for line in lines}) and len(lines) == 1500  # each once
