import json
import os
import subprocess
import time

import pytest

from brat_sessions.errors import BadInput
from brat_sessions.worker.api import Tracker

from .helpers import brat, brat_json


def test_outside_a_repository_is_exit_5_one_line(tmp_path):
    out = brat("sessions", "list", cwd=tmp_path)
    assert out.returncode == 5
    assert out.stderr.strip() == f"brat: not a git repository: {tmp_path}"
    out = brat("sessions", "list", "--json", cwd=tmp_path)
    assert out.returncode == 5 and out.stdout == ""
    err = json.loads(out.stderr)
    assert err == {
        "schema_version": 1,
        "ok": False,
        "error": {"code": "environment", "message": f"not a git repository: {tmp_path}"},
    }


def test_missing_directory_given_with_C(tmp_path):
    out = brat("-C", str(tmp_path / "nope"), "sessions", "list")
    assert out.returncode == 5 and "no such directory" in out.stderr


def test_unknown_session_is_exit_3(repo):
    out = brat("sessions", "show", "s-20250101-dead", "--json", cwd=repo)
    assert out.returncode == 3
    assert json.loads(out.stderr)["error"] == {"code": "not_found", "message": "no session s-20250101-dead"}
    assert brat("sessions", "heartbeat", "s-20250101-dead", cwd=repo).returncode == 3


def test_bad_arguments_are_exit_2(repo):
    out = brat("sessions", "list", "--type", "robot", cwd=repo)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    out = brat("sessions", "exit", "s-1", "--code", "x", "--json", cwd=repo)
    assert out.returncode == 2 and json.loads(out.stderr)["error"]["code"] == "bad_arguments"
    assert brat("nonsense", cwd=repo).returncode == 2


def test_dash_C_json_on_every_level_and_the_session_alias(repo, tmp_path, task):
    a = brat_json("-C", str(repo), "sessions", "list", cwd=tmp_path)
    b = brat_json("session", "list", "-C", str(repo), cwd=tmp_path)
    c = json.loads(brat("--json", "-C", str(repo), "session", "list", cwd=tmp_path).stdout)["data"]
    assert a == b == c == {"sessions": [], "total": 0}
    assert brat("sessions", "list", cwd=repo).stdout.strip() == "no sessions"
    # on the groups too, and each -C relative to the one before, as git's
    (repo / "sub").mkdir()
    d = brat_json("sessions", "-C", repo.name, "-C", "sub", "list", cwd=tmp_path)
    e = json.loads(brat("-C", str(repo), "task", "--json", "list", cwd=tmp_path).stdout)["data"]
    f = json.loads(brat("snapshot", "--json", "-C", str(repo), "list", cwd=tmp_path).stdout)["data"]
    assert d == a and e["total"] == 1 and f == {"snapshots": [], "total": 0}


def test_dash_C_moves_into_the_directory_as_git_does(repo, tmp_path, task):
    """The command `run` starts, relative paths and files written all start from PATH."""
    out = brat("-C", str(repo), "sessions", "run", "--task", task.task_id, "--", "pwd", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == str(repo)
    (repo / "build.log").write_text("built\n")
    sid = brat("-C", repo.name, "sessions", "start", "--task", task.task_id, cwd=tmp_path).stdout.strip()
    done = brat(
        "-C", repo.name, "sessions", "exit", sid, "--code", "0", "--output", "build.log", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert brat("-C", repo.name, "sessions", "log", sid, cwd=tmp_path).stdout == "built\n"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    refused = brat("-C", str(a_file), "sessions", "list", "--json", cwd=tmp_path)
    assert refused.returncode == 5
    assert json.loads(refused.stderr)["error"]["message"] == f"not a directory: {a_file}"


def test_empty_repository_lists_nothing(tmp_path):
    from .helpers import git

    git(tmp_path, "init", "-q", "empty")
    assert brat_json("sessions", "list", cwd=tmp_path / "empty") == {"sessions": [], "total": 0}


def test_start_json_and_help(repo, task):
    data = brat_json(
        "sessions", "start", "--task", task.task_id, "--type", "crew", "--pid", str(os.getpid()), cwd=repo
    )
    assert data["session_id"].startswith("s-") and data["session"]["role"] == "user"
    assert brat("--help").returncode == 0
    assert "run" in brat("sessions", "--help").stdout


def test_start_says_when_a_pid_is_recorded_but_not_adopted(repo, task):
    # nothing is signalled here: only recorded (pid 1 and a pid beyond any this machine uses)
    for pid in (1, 4_194_304):
        out = brat("sessions", "start", "--task", task.task_id, "--pid", str(pid), cwd=repo)
        assert out.returncode == 0 and out.stdout.strip().startswith("s-")
        why = "pid 1 (init) is never adopted" if pid == 1 else f"no process {pid} runs on this machine"
        assert out.stderr.count("\n") == 1 and why in out.stderr
    out = brat("sessions", "start", "--task", task.task_id, "--pid", str(os.getpid()), cwd=repo)
    assert out.returncode == 0 and out.stderr == ""  # this test's own process: adopted


def test_demo_runs_on_a_builtin_default(tmp_path):
    data = brat_json("demo", "--dir", str(tmp_path / "demo"))
    reasons = sorted((s["exit_reason"] or s["status"]) for s in data["sessions"])
    assert reasons == ["completed", "crash", "ready", "running"]
    assert brat_json("sessions", "list", cwd=tmp_path / "demo")["total"] == 2


def test_arguments_variables_and_paths_that_are_not_utf8(repo, tmp_path):
    """Bytes that are not UTF-8 in text to record (an engine, a title, BRAT_HOST) are bad
    input (exit 2, one line); a worktree at such a path works, its path recorded with them
    escaped, and so does a command of `run` whose arguments are such bytes."""
    import os
    import subprocess
    import sys

    from .helpers import WORKTREE_ENV, git

    task = brat_json("task", "create", "T", cwd=repo)["task_id"]
    command = [sys.executable, "-P", "-m", "brat_sessions.cli"]
    env = {**os.environ, **WORKTREE_ENV}
    for extra, more_env in (
        ([b"sessions", b"start", b"--task", task.encode(), b"--engine", b"e\xff"], {}),
        ([b"task", b"create", b"title\xfe"], {}),
        ([b"sessions", b"start", b"--task", task.encode()], {b"BRAT_HOST": b"h\xff"}),
    ):
        out = subprocess.run(
            [c.encode() for c in command] + extra,
            cwd=repo,
            capture_output=True,
            env={**{k.encode(): v.encode() for k, v in env.items()}, **more_env},
        )
        assert out.returncode == 2 and b"UTF-8" in out.stderr and out.stderr.count(b"\n") == 1, out.stderr
    assert brat_json("sessions", "list", "--all", cwd=repo)["sessions"] == []  # nothing written
    # what is never recorded may be any bytes: run's command and its arguments, -C's path
    (repo / os.fsdecode(b"f\xe9.txt")).write_text("hello\n")
    run = [b"sessions", b"run", b"--task", task.encode(), b"--", b"cat", b"f\xe9.txt"]
    out = subprocess.run([c.encode() for c in command] + run, cwd=repo, capture_output=True, env=env)
    assert (out.returncode, out.stdout) == (0, b"hello\n"), out.stderr
    linked = os.fsdecode(os.fsencode(str(tmp_path)) + b"/wt\xff")
    git(repo, "worktree", "add", "-q", linked)
    out = brat("sessions", "run", "--task", task, "--", "echo", "hi", cwd=linked)
    assert out.returncode == 0, out.stderr
    found = brat_json("sessions", "list", "--all", cwd=linked)["sessions"]
    assert [s["worktree"][-6:] for s in found if s["worktree"]] == ["wt\\xff"], found


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "list", "--task", ""],
        ["sessions", "list", "--parent", ""],
        ["sessions", "list", "--root", ""],
        ["sessions", "tree", "--task", ""],
        ["sessions", "timeline", "--task", ""],
        ["sessions", "timeline", "--convoy", ""],
        ["sessions", "reap", "--remote", ""],
        ["sync", "--remote", ""],
        ["demo", "--dir", ""],
    ],
)
def test_an_empty_filter_or_option_is_refused_not_ignored(repo, args):
    out = brat(*args, cwd=repo)
    assert out.returncode == 2 and "must not be empty" in out.stderr


def test_filters_that_match_nothing_known_say_so(repo, task):
    s = brat_json("sessions", "start", "--task", task.task_id, cwd=repo)["session"]["session_id"]
    out = brat("sessions", "timeline", "--convoy", "c-20200101-0000", cwd=repo)
    assert out.returncode == 3 and "no task in convoy" in out.stderr
    out = brat("sessions", "tree", s, "--task", task.task_id, cwd=repo)
    assert out.returncode == 2 and "not both" in out.stderr


def test_task_show_lists_sessions_as_list_all_does(repo, task):
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from .helpers import T0, append_raw, block_text

    s = brat_json("sessions", "start", "--task", task.task_id, cwd=repo)["session"]["session_id"]
    old = block_text(session_id="s-20250114-01d0")  # started at T0 (2023), never heartbeated: stale
    bad = block_text(session_id="s-20250114-0bad").replace('role = "witness"\n', "")  # (no role)
    issue = bytes.fromhex(task.issue_id)
    append_raw(repo, [make_event(issue, bytes(16), T0, COMMENT_ADDED, [text]) for text in (old, bad)])
    shown = brat("task", "show", task.task_id, cwd=repo).stdout
    assert f"{s}" in shown and "s-20250114-01d0" in shown and "(stale)" in shown
    assert "s-20250114-0bad" in shown and "unreadable" in shown
    data = brat_json("task", "show", task.task_id, cwd=repo)
    assert [b["session_id"] for b in data["unreadable"]] == ["s-20250114-0bad"]
    listed = brat_json("sessions", "list", "--all", cwd=repo)
    assert listed["unreadable"] == data["unreadable"]


def test_list_all_always_says_what_it_could_not_read_and_verify_refuses_what_is_no_ref(repo, task):
    brat_json("sessions", "start", "--task", task.task_id, cwd=repo)
    assert brat_json("sessions", "list", "--all", cwd=repo)["unreadable"] == []
    assert brat_json("sessions", "list", "--all", "--sort", "id", cwd=repo)["unreadable"] == []
    for ref in ("", "refs/heads/main", "\udcff"):
        out = brat("snapshot", "verify", ref, cwd=repo)
        assert out.returncode == 2 and "not a snapshot" in out.stderr, out.stderr


def test_an_argument_that_is_not_utf8_is_named(repo):
    import sys

    out = subprocess.run(
        [
            sys.executable.encode(),
            b"-P",
            b"-m",
            b"brat_sessions.cli",
            b"sessions",
            b"list",
            b"--task",
            b"t\xff",
        ],
        cwd=repo,
        capture_output=True,
    )
    assert (
        out.returncode == 2
        and out.stderr == b"brat: text that is not UTF-8 cannot be used here: argument b't\\xff'\n"
    )


def test_a_lock_left_on_the_log_is_named(repo):
    (repo / ".git" / "refs" / "grite").mkdir(parents=True, exist_ok=True)
    lock = repo / ".git" / "refs" / "grite" / "wal.lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))  # a minute old: no live writer's
    out = brat("task", "create", "x", "--json", cwd=repo)
    assert out.returncode == 5
    message = json.loads(out.stderr)["error"]["message"]
    assert str(lock) in message and "delete it if no git process is running" in message
    lock.unlink()
    assert brat("task", "create", "x", cwd=repo).returncode == 0


def test_a_worktree_given_as_a_folder_here_is_recorded_as_the_default_is(repo, task, tmp_path):
    (repo / "wts" / "inner").mkdir(parents=True)
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    given = {".": "", "wts/inner/": "wts/inner", str(sibling): str(sibling), "/not/here": "/not/here"}
    for typed, recorded in given.items():
        sid = brat("sessions", "start", "--task", task.task_id, "--worktree", typed, cwd=repo).stdout.strip()
        assert brat_json("sessions", "show", sid, cwd=repo)["session"]["worktree"] == recorded
    sid = brat(
        "sessions", "start", "--task", task.task_id, "--worktree", "../../..", cwd=repo / "wts" / "inner"
    )
    assert brat_json("sessions", "show", sid.stdout.strip(), cwd=repo)["session"]["worktree"] == str(tmp_path)


def test_messages_say_which_field_and_what_is_wrong_and_run_exits_as_a_shell(repo, task, tmp_path):
    long_title = brat("task", "create", "x" * 5000, cwd=repo)
    assert long_title.returncode == 2 and "title is 5,000 characters (at most 4,096)" in long_title.stderr
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    found = brat("sessions", "run", "--task", task.task_id, "--", str(script), cwd=repo)
    assert found.returncode == 126
    missing = brat("sessions", "run", "--task", task.task_id, "--", str(tmp_path / "nowhere"), cwd=repo)
    assert missing.returncode == 127
    with pytest.raises(BadInput, match="not blank"):
        Tracker(repo, host=" ")


def test_main_called_in_a_process_leaves_its_working_directory_as_it_was(repo, tmp_path, monkeypatch, capsys):
    from brat_sessions.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        main(["-C", str(repo), "task", "list"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "no tasks" in capsys.readouterr().out
    assert os.getcwd() == str(tmp_path)
