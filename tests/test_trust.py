"""The trust boundary: what the log says is checked, and never enough to act on this machine."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brat_sessions.clock import now_ms
from brat_sessions.config import Config
from brat_sessions.errors import BadInput
from brat_sessions.reaper import reap
from brat_sessions.render import safe, session_detail, sessions_table
from brat_sessions.sessions.block import format_block
from brat_sessions.sessions.model import Session
from brat_sessions.sessions.outputs import read_output
from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import this_host

from .helpers import append_raw, block_text, brat, brat_json, brat_on_terminal, git, make_repo

YEAR_2058 = int(datetime(2058, 1, 1, tzinfo=UTC).timestamp() * 1000)


def forge(repo, task, **fields) -> str:
    """A block written as someone else would (no lease, no local proof here)."""
    now = now_ms()
    fields = {"session_id": "s-20260101-f0f0", "started_ts": now, **fields}
    append_raw(
        repo,
        [make_event(bytes.fromhex(task.issue_id), b"\x07" * 16, now, COMMENT_ADDED, [block_text(**fields)])],
    )
    return fields["session_id"]


def test_stop_without_local_proof_records_the_exit_and_signals_nothing(repo, task):
    canary = subprocess.Popen(["sleep", "60"])
    try:
        sid = forge(repo, task, pid=canary.pid, host=this_host())
        out = brat("sessions", "stop", sid, "--grace", "0.2", cwd=repo)
        assert out.returncode == 0, out.stderr
        assert "no signal sent" in out.stderr
        assert canary.poll() is None  # our own canary, alive
        data = brat_json("sessions", "show", sid, cwd=repo)["session"]
        assert (data["exit_reason"], data["exit_code"]) == ("user-stop", -1)
    finally:
        canary.kill()
        canary.wait()


def test_a_later_block_cannot_redirect_stop_to_another_process(repo, task):
    worker = subprocess.Popen(["sleep", "60"])
    canary = subprocess.Popen(["sleep", "60"])
    try:
        s = Tracker(repo).start(task.task_id, pid=worker.pid, state="running")
        forge(
            repo,
            task,
            session_id=s.session_id,
            state="running",
            pid=canary.pid,
            host=this_host(),
            started_ts=s.started_ts,
        )
        assert Tracker(repo).session(s.session_id).pid == canary.pid  # the log says so ...
        report = Tracker(repo).stop_report(s.session_id, grace_s=5)
        assert report.signalled and worker.wait(timeout=10) == -15  # ... the proof decides
        assert canary.poll() is None
    finally:
        for p in (worker, canary):
            p.kill()
            p.wait()


def test_a_future_heartbeat_is_no_sign_of_life(repo, task):
    sid = forge(repo, task, started_ts=now_ms() - 3_600_000, last_heartbeat_ts=YEAR_2058)
    problems = brat_json("sessions", "doctor", cwd=repo)["problems"]
    assert [p["kind"] for p in problems] == ["future_time"]
    assert brat("sessions", "doctor", "--exit-code", cwd=repo).returncode == 1
    shown = brat_json("sessions", "show", sid, cwd=repo)["session"]
    assert shown["last_heartbeat_ts"] is None and shown["future_ts"] == YEAR_2058
    (v,) = reap(Tracker(repo).ws, Config()).reaped
    assert (v.session_id, v.exit_reason) == (sid, "timeout")


def test_a_heartbeat_on_a_session_written_by_brat_creates_its_lease(repo, task):
    sid = forge(repo, task, state="running")  # brat's own blocks: no lease anywhere
    ts = brat_json("sessions", "heartbeat", sid, cwd=repo)["last_heartbeat_ts"]
    assert brat_json("sessions", "show", sid, cwd=repo)["session"]["last_heartbeat_ts"] == ts
    assert brat_json("sessions", "transition", sid, "handoff", cwd=repo)["session"]["status"] == "handoff"
    assert brat("sessions", "exit", sid, "--code", "0", cwd=repo).returncode == 0
    fenced = brat("sessions", "heartbeat", sid, cwd=repo)
    assert fenced.returncode == 4 and "already exited" in fenced.stderr


@pytest.mark.parametrize("snapshot", [False, True], ids=["log only", "with a snapshot below the cut"])
def test_a_shallow_log_is_detected_and_repaired_by_sync(tmp_path, snapshot):
    origin = make_repo(tmp_path / "origin")
    t = Tracker(origin)
    from brat_sessions.issues.tasks import create_task

    task = create_task(t.ws, "T")
    ids = [t.start(task.task_id).session_id]
    if snapshot:  # the repaired log is then read from it: it must count as whole
        assert brat("snapshot", "create", cwd=origin).returncode == 0
    ids += [t.start(task.task_id).session_id for _ in range(2)]
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(remote))
    git(origin, "push", "-q", str(remote), "refs/grite/*:refs/grite/*")
    ci = make_repo(tmp_path / "ci")
    git(ci, "remote", "add", "origin", str(remote))
    git(ci, "fetch", "-q", "--depth", "1", "origin", "+refs/grite/*:refs/grite/*")
    out = brat("sessions", "list", "--json", cwd=ci)
    assert out.returncode == 0 and "refs/grite/wal is incomplete" in out.stderr
    assert out.stderr.count("incomplete") == 1
    assert brat_json("sessions", "doctor", cwd=ci)["problems"][0]["kind"] == "incomplete_log"
    refused = brat("sessions", "reap", cwd=ci)
    assert refused.returncode == 5 and "git fetch --unshallow" in refused.stderr
    if snapshot:  # nor can a snapshot be judged against a cut log (CI would delete a good one)
        (ref,) = git(ci, "for-each-ref", "--format=%(refname)", "refs/grite/snapshots/").split()
        unjudged = brat("snapshot", "verify", ref, cwd=ci)
        assert unjudged.returncode == 5 and "incomplete" in unjudged.stderr
        newest = brat("snapshot", "verify", cwd=ci)  # (none is on a cut chain: not "there is none")
        assert newest.returncode == 5 and "incomplete" in newest.stderr
        kept = brat("snapshot", "gc", "--keep", "0", cwd=ci)  # (over the count: deleted anyway)
        assert kept.returncode == 0
        git(ci, "update-ref", ref, git(remote, "rev-parse", ref).strip())
        refused_gc = brat("snapshot", "gc", "--keep", "5", cwd=ci)
        assert refused_gc.returncode == 5 and "none deleted" in refused_gc.stderr
        assert git(ci, "for-each-ref", "--format=%(refname)", "refs/grite/snapshots/").split() == [ref]
    assert brat("sessions", "reap", "--dry-run", cwd=ci).returncode == 0
    assert brat("sync", cwd=ci).returncode == 0
    out = brat("sessions", "list", "--json", cwd=ci)
    assert "incomplete" not in out.stderr
    assert sorted(s["session_id"] for s in json.loads(out.stdout)["data"]["sessions"]) == sorted(ids)
    assert brat_json("task", "list", cwd=ci)["total"] == 1
    assert brat("sessions", "reap", cwd=ci).returncode == 0
    assert brat_json("sessions", "doctor", cwd=ci)["problems"] == []
    if snapshot:
        assert brat_json("snapshot", "verify", cwd=ci)["verdict"]["ok"] is True


def test_sync_ignores_outputs_and_leases_that_lie(tmp_path, repo):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    lie = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=remote, input=b"not it", capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    git(remote, "update-ref", "refs/brat/sessions/outputs/" + "0" * 64, lie)
    git(remote, "update-ref", "refs/brat/sessions/leases/a.b", lie)
    git(repo, "remote", "add", "origin", str(remote))
    out = brat("sync", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert "ignored" in out.stderr
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/brat/sessions/")
    assert refs == ""


CONTROL = "".join(chr(c) for c in (*range(0, 32), 127, *range(0x80, 0xA0), 0x2028, 0x202E))


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(CONTROL + "ab["), max_size=30),
    st.sampled_from(["engine", "role", "worktree", "host", "task_id"]),
)
def test_no_value_reaches_the_terminal_raw(text, field):
    s = Session(
        session_id="s-20260101-0001",
        task_id="t-1",
        grite_issue_id="0" * 32,
        role="witness",
        session_type="polecat",
        engine="codex",
        worktree="",
        pid=None,
        status="running",
        started_ts=1_700_000_000_000,
        last_heartbeat_ts=None,
        exit_code=None,
        exit_reason=None,
        last_output_ref=None,
        host="h",
    )
    setattr(s, field, text)
    for rendered in (sessions_table([s], 1_700_000_000_000), session_detail(s, [], 0)):
        assert not any(ch in rendered for ch in CONTROL if ch != "\n")
    assert len(sessions_table([s], 0).split("\n")) == 2
    assert "\n" not in safe(text)


@given(st.integers())
def test_show_never_fails_on_any_integer(n):
    s = Session(
        session_id="s-1",
        task_id=None,
        grite_issue_id="0" * 32,
        role="user",
        session_type="crew",
        engine="e",
        worktree="",
        pid=n,
        status="exit",
        started_ts=n,
        last_heartbeat_ts=n,
        exit_code=n,
        exit_reason="crash",
        last_output_ref=None,
    )
    s.future_ts = n
    assert session_detail(s, [], 0)


def test_escapes_in_the_log_are_visible_on_a_terminal_and_exact_in_json(repo, task):
    engine = "codex\x1b]0;pwned\x07\ns-20990101-fake  t-fake  mayor/crew  x  running  1  0s"
    sid = forge(repo, task, engine=engine)
    assert brat_json("sessions", "show", sid, cwd=repo)["session"]["engine"] == engine
    for args in (("sessions", "list"), ("sessions", "show", sid), ("task", "show", task.task_id)):
        rc, screen = brat_on_terminal(*args, cwd=repo, env={"NO_COLOR": "1"}, columns=400)
        assert rc == 0 and "\x1b" not in screen and "\x07" not in screen, screen
        assert "\\x1b]0;pwned\\x07\\ns-20990101-fake" in screen
    listing = brat("sessions", "list", cwd=repo).stdout.splitlines()
    assert len(listing) == 2  # the header and one row: no forged row


def test_a_committed_symlink_in_the_logs_folder_is_never_followed(repo, task, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CANARY")
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    logs = repo / ".grite" / "logs"
    logs.mkdir(parents=True)
    (logs / f"{s.session_id}.log").symlink_to(secret)
    out = brat("sessions", "log", s.session_id, cwd=repo)
    assert out.returncode == 1 and "symbolic link" in out.stderr and "TOP-SECRET" not in out.stdout
    reaped = reap(Tracker(repo).ws, Config(), now=now_ms() + 10**9).reaped
    assert [v.session_id for v in reaped] == [s.session_id]
    assert Tracker(repo).session(s.session_id).last_output_ref is None
    blobs = git(repo, "for-each-ref", "--format=%(objectname)", "refs/brat/sessions/outputs/")
    assert all("TOP-SECRET" not in git(repo, "cat-file", "-p", b) for b in blobs.split())
    assert secret.read_text() == "TOP-SECRET-CANARY"


def test_a_worktree_too_long_once_escaped_is_refused_before_anything_is_written(repo, task):
    tracker = Tracker(repo)
    commits = git(repo, "rev-list", "--count", "refs/grite/wal")
    with pytest.raises(BadInput, match="too long once escaped"):
        tracker.start(task.task_id, worktree="\\" * 4096)  # 4,096 characters: 8,192 escaped
    assert git(repo, "rev-list", "--count", "refs/grite/wal") == commits
    assert git(repo, "for-each-ref", "refs/brat").strip() == ""  # no lease left behind
    cli = brat("sessions", "start", "--task", task.task_id, "--worktree", "[" * 2000, cwd=repo)
    assert cli.returncode == 2 and "too long once escaped" in cli.stderr
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []


def test_a_session_whose_worktree_no_block_can_hold_fails_clearly_and_alone(repo, task):
    raw = "[session]\n" + "\n".join(  # brat writes a value as it is: 4,096 brackets on one line
        f"{k} = {v}"
        for k, v in {
            "state": '"running"',
            "session_id": '"s-20260101-b1b1"',
            "role": '"witness"',
            "session_type": '"polecat"',
            "engine": '"codex"',
            "worktree": '"' + "[" * 4096 + '"',
            "started_ts": str(now_ms()),
        }.items()
    )
    now = now_ms()
    event = make_event(bytes.fromhex(task.issue_id), b"\x07" * 16, now, COMMENT_ADDED, [raw + "\n[/session]"])
    append_raw(repo, [event])
    other = forge(repo, task, state="running", session_id="s-20260101-c2c2")
    failed = brat("sessions", "exit", "s-20260101-b1b1", "--code", "0", cwd=repo)
    assert failed.returncode == 1 and "cannot write the [session] block" in failed.stderr
    assert "Traceback" not in failed.stderr and "internal" not in failed.stderr
    assert brat("sessions", "exit", other, "--code", "0", cwd=repo).returncode == 0
    with pytest.raises(ValueError, match="at most 8192"):
        format_block({**Tracker(repo).session("s-20260101-b1b1").block_fields(), "state": "exit"})
    from brat_sessions import UnwritableBlock

    with pytest.raises(UnwritableBlock, match="at most 8192"):  # (a BratError, as api.md promises)
        Tracker(repo).exit("s-20260101-b1b1", 0)


def _pull_logs_committed_by_another_clone(repo, tmp_path, files: dict[str, str]) -> None:
    """Another clone commits these files under `.grite/logs/` and pushes; `repo` pulls."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "push", "-q", str(remote), "HEAD:refs/heads/main")
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", "-b", "main", str(remote), str(attacker))
    logs = attacker / ".grite" / "logs"
    logs.mkdir(parents=True)
    for name, text in files.items():
        (logs / name).write_text(text)
    git(attacker, "add", "-f", ".grite/logs")
    git(attacker, "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "logs")
    git(attacker, "push", "-q", "origin", "HEAD:refs/heads/main")
    git(repo, "pull", "-q", "--no-rebase", str(remote), "main")


def test_a_committed_file_under_grite_logs_is_never_a_new_sessions_own(repo, task, monkeypatch, tmp_path):
    """An attacker commits `.grite/logs/<id>.log` and `.stop` for ids a session may draw:
    pulled, they must not become its output nor its stop request."""
    from datetime import UTC, datetime

    from brat_sessions.issues import ids

    day = datetime.now(tz=UTC).strftime("%Y%m%d")
    logs = {f"s-{day}-0001.log": "\x1b]0;INJECTED\x07 fake output\n", f"s-{day}-0001.stop": ""}
    _pull_logs_committed_by_another_clone(repo, tmp_path, logs)
    drawn = iter([b"\x00\x01", b"\x00\x02"])
    monkeypatch.setattr(ids.os, "urandom", lambda n: next(drawn))
    tracker = Tracker(repo)
    s = tracker.start(task.task_id, state="running")
    assert s.session_id == f"s-{day}-0002"  # the id with planted files is passed over
    monkeypatch.undo()
    tracker.files(s.session_id).append_log(b"mine\n")
    ended = tracker.exit(s.session_id, 0)
    assert ended.exit_reason == "completed"
    assert read_output(tracker.ws.repo, ended.last_output_ref) == b"mine\n"


def test_a_file_committed_over_a_live_sessions_own_is_never_taken_for_it(repo, task, tmp_path):
    """Session ids are public: someone commits `.grite/logs/<live id>.log` and `.stop`, and
    the pull writes them over the session's own (git overwrites files it ignores)."""
    tracker = Tracker(repo)
    s = tracker.start(task.task_id, state="running")
    tracker.files(s.session_id).append_log(b"real output\n")
    logs = {f"{s.session_id}.log": "ATTACKER OUTPUT\n", f"{s.session_id}.stop": "user-stop"}
    _pull_logs_committed_by_another_clone(repo, tmp_path, logs)
    assert (repo / ".grite" / "logs" / f"{s.session_id}.log").read_text() == "ATTACKER OUTPUT\n"
    files = tracker.files(s.session_id)
    assert files.reason_for("completed") == "completed"  # the committed stop request is no request
    out = brat("sessions", "exit", s.session_id, "--code", "0", cwd=repo)
    assert out.returncode == 0 and "committed to git" in out.stderr
    ended = tracker.session(s.session_id)
    assert (ended.exit_reason, ended.last_output_ref) == ("completed", None)
