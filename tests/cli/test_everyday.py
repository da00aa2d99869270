"""The command line as people use it every day: ids, tables, colour, pager, help, config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brat_sessions.worker.api import Tracker

from ..helpers import WORKTREE_ENV, brat, brat_json, brat_on_terminal


@pytest.fixture
def busy(repo, task):
    t = Tracker(repo)
    ids = [t.start(task.task_id, engine="a-rather-long-engine-name-for-width").session_id for _ in range(3)]
    crew = t.start(task.task_id, session_type="crew", state="running").session_id
    return t, ids, crew


def test_ids_resolve_from_unique_prefixes_like_git(repo, task, busy):
    _t, ids, crew = busy
    sid = ids[0]
    hexpart = sid.rsplit("-", 1)[1]
    assert brat_json("sessions", "show", hexpart, cwd=repo)["session"]["session_id"] == sid
    assert brat_json("sessions", "show", sid[:-1], cwd=repo)["session"]["session_id"] in ids + [crew]
    assert brat_json("task", "show", task.task_id[:-1], cwd=repo)["task"]["task_id"] == task.task_id
    assert brat_json("task", "show", task.issue_id[:6], cwd=repo)["task"]["task_id"] == task.task_id
    ambiguous = brat("sessions", "show", "s-", cwd=repo)
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr and sid in ambiguous.stderr
    unknown = brat("sessions", "show", sid[:-4] + "zzzz", cwd=repo)
    assert unknown.returncode == 3 and "did you mean" in unknown.stderr
    typo = hexpart[:-1] + ("0" if hexpart[-1] != "0" else "1")  # a hex part alone, one character off
    if not any(other.endswith("-" + typo) for other in ids + [crew]):
        near = brat("sessions", "show", typo, cwd=repo)
        assert near.returncode == 3 and sid in near.stderr, near.stderr
    assert brat("sessions", "heartbeat", hexpart, cwd=repo).returncode == 0


def test_tables_fit_the_terminal_and_are_whole_when_piped(repo, task, busy):
    rc, screen = brat_on_terminal("sessions", "list", cwd=repo, columns=80, env={"NO_COLOR": "1"})
    assert rc == 0
    assert all(len(line) <= 80 for line in screen.splitlines()) and "…" in screen
    _t, ids, crew = busy
    assert all(sid in screen for sid in [*ids, crew, task.task_id])  # ids are never cut (they are copied)
    assert "PID" not in screen.splitlines()[0]  # optional columns are left out instead
    piped = brat("sessions", "list", cwd=repo).stdout
    assert "a-rather-long-engine-name-for-width" in piped and "…" not in piped
    rc, wide = brat_on_terminal("sessions", "list", "--wide", cwd=repo, columns=80, env={"NO_COLOR": "1"})
    assert "a-rather-long-engine-name-for-width" in wide


def test_colour_only_on_a_terminal_and_never_with_no_color(repo, busy):
    _, screen = brat_on_terminal("sessions", "list", cwd=repo)
    assert "\x1b[32m" in screen
    _, plain = brat_on_terminal("sessions", "list", cwd=repo, env={"NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert "\x1b[" not in brat("sessions", "list", cwd=repo).stdout
    assert "\x1b[32m" in brat("sessions", "list", "--color", "always", cwd=repo).stdout
    _rc, never = brat_on_terminal("sessions", "list", "--color", "never", cwd=repo)
    assert "\x1b[" not in never


def test_exited_sessions_read_like_docker(repo, busy):
    t, ids, crew = busy
    t.exit(ids[0], 3)
    t.exit(ids[1], 0)
    t.stop(ids[2])
    text = brat("sessions", "list", "--all", cwd=repo).stdout
    assert "exit 3 " in text and "ok " in text and "stopped " in text and " ago" in text
    assert "never" in text  # sessions that never heartbeated
    shown = brat("sessions", "show", crew, cwd=repo).stdout
    assert "heartbeat    never" in shown


def test_limit_sort_and_filters_that_validate(repo, busy):
    _t, ids, crew = busy
    data = brat_json("sessions", "list", "--limit", "2", "--sort", "id", cwd=repo)
    assert [s["session_id"] for s in data["sessions"]] == sorted(ids + [crew])[-2:]
    assert brat("sessions", "list", "--role", "bogus", cwd=repo).returncode == 2
    assert brat("task", "list", "--status", "bogus", cwd=repo).returncode == 2
    assert brat("sessions", "list", "--limit", "0", cwd=repo).returncode == 2


def test_long_output_goes_through_the_pager_only_on_a_terminal(repo, busy):
    pager = {"BRAT_PAGER": "sed s/^/PAGED:/", "LINES": "3", "NO_COLOR": "1"}
    rc, screen = brat_on_terminal("sessions", "list", cwd=repo, env=pager)
    assert rc == 0 and "PAGED:SESSION" in screen
    assert "PAGED" not in brat("sessions", "list", cwd=repo, env=pager).stdout
    rc, screen = brat_on_terminal("sessions", "list", "--no-pager", cwd=repo, env=pager)
    assert "PAGED" not in screen


def test_watch_prints_again_when_something_changes(repo, task):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brat_sessions.cli",
            "sessions",
            "list",
            "--watch",
            "--interval",
            "0.2",
            "--json",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    try:
        assert json.loads(proc.stdout.readline())["data"]["total"] == 0
        Tracker(repo).start(task.task_id)
        assert json.loads(proc.stdout.readline())["data"]["total"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_help_version_module_and_bare_brat(repo):
    assert brat().returncode == 0 and "Usage: brat" in brat().stdout
    out = brat("help", "sessions", "list")
    assert out.returncode == 0 and "Examples:" in out.stdout and "--watch" in out.stdout
    assert brat("help", "no-such").returncode == 2
    assert brat("-V").stdout.startswith("brat, version")
    out = subprocess.run(
        [sys.executable, "-m", "brat_sessions", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert out.returncode == 0 and "version" in out.stdout
    from brat_sessions.cli import cli

    for group_name, group in cli.commands.items():
        for name, command in getattr(group, "commands", {group_name: group}).items():
            assert "Examples:" in (command.epilog or ""), (group_name, name)


def test_completion_scripts_and_id_completion(repo, busy):
    _t, ids, _crew = busy
    script = brat("completion", "bash")
    assert script.returncode == 0 and "_BRAT_COMPLETE" in script.stdout
    assert brat("completion", "fish").returncode == 0
    missing = brat("completion")
    assert missing.returncode == 2 and "Choose from: bash, zsh, fish" in missing.stderr, missing.stderr
    out = subprocess.run(
        [sys.executable, "-m", "brat_sessions.cli"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **WORKTREE_ENV,
            "_BRAT_COMPLETE": "bash_complete",
            "COMP_WORDS": f"brat sessions show {ids[0][:-3]}",
            "COMP_CWORD": "3",
        },
    )
    assert ids[0] in out.stdout


def test_config_shows_values_and_where_they_come_from(repo):
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("heartbeat_interval: 5\n")
    rows = {r["name"]: r for r in brat_json("config", cwd=repo, env={"BRAT_HOST": "h1"})["settings"]}
    assert rows["heartbeat_interval"]["value"] == 5 and "file" in rows["heartbeat_interval"]["source"]
    assert rows["timeout"]["source"] == "default" and rows["effective_timeout"]["value"] == 45
    assert rows["brat_host"] == {"name": "brat_host", "value": "h1", "source": "environment BRAT_HOST"}


def test_demo_refuses_a_directory_that_is_not_empty(repo):
    out = brat("demo", "--dir", str(repo))
    assert out.returncode == 2 and "not empty" in out.stderr


def test_task_list_shows_the_newest_sessions_state_from_its_blocks(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, session_type="crew", state="running")
    assert "running/crew" in brat("task", "list", cwd=repo).stdout
    t.exit(s.session_id, 0)
    row = brat("task", "list", cwd=repo).stdout.splitlines()[1]
    assert row.split()[2] == "ok"
    (listed,) = brat_json("task", "list", cwd=repo)["tasks"]  # the same in JSON
    assert listed["newest_session"] == {
        "status": "exit",
        "exit_reason": "completed",
        "exit_code": 0,
        "session_type": "crew",
        "session_id": s.session_id,
    }
    assert "priority" in listed


def test_run_gives_the_command_a_terminal_with_tty(repo, task):
    probe = "import sys; print('tty' if sys.stdout.isatty() else 'pipe')"
    out = brat(
        "sessions", "run", "--task", task.task_id, "--tty", "--", sys.executable, "-c", probe, cwd=repo
    )
    assert out.returncode == 0 and "tty" in out.stdout
    out = brat("sessions", "run", "--task", task.task_id, "--", sys.executable, "-c", probe, cwd=repo)
    assert out.stdout.strip() == "pipe"
    logs = sorted((repo / ".grite" / "logs").glob("*.log"))
    assert sorted(p.read_bytes().strip() for p in logs) == [b"pipe", b"tty"]


def test_list_all_json_from_sqlite_equals_the_object_path(repo, busy):
    t, ids, _crew = busy
    t.usage(ids[0], model="m", input_tokens=1, output_tokens=2, cost_usd=0.25)
    t.exit(ids[0], 3)
    t.exit(ids[1], 0)
    fast = brat_json("sessions", "list", "--all", cwd=repo)  # the SQLite path
    slow = brat_json("sessions", "list", "--all", "--sort", "started", "--type", "polecat", cwd=repo)
    crew_row = brat_json("sessions", "list", "--all", "--type", "crew", cwd=repo)["sessions"]
    by_id = {s["session_id"]: s for s in slow["sessions"] + crew_row}
    assert fast["total"] == len(by_id) == 4
    for s in fast["sessions"]:
        expected = dict(by_id[s["session_id"]])
        s.pop("heartbeat_age_ms"), expected.pop("heartbeat_age_ms")  # measured a moment apart
        assert s == expected
    assert [
        s["session_id"] for s in brat_json("sessions", "list", "--all", "--limit", "1", cwd=repo)["sessions"]
    ] == [fast["sessions"][-1]["session_id"]]


def test_list_all_json_splices_the_same_text_for_odd_sessions(repo, task):
    """Quotes, backslashes and non-ASCII in stored text, a heartbeat in the future, no task."""
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from ..helpers import T0, append_raw, block_text

    issue, actor = bytes.fromhex(task.issue_id), b"\x07" * 16
    future = 4_000_000_000_000  # 2096: later than now, a time no clock has reached
    blocks = [
        block_text(
            session_id="s-odd-1", worktree='wt "quoted" \\ back \u00e9\u4e2d', state="exit", exit_code=1
        ),
        block_text(session_id="s-odd-2", last_heartbeat_ts=future, state="running"),
        block_text(session_id="s-odd-2", last_heartbeat_ts=future, state="exit", exit_code=0),
        block_text(session_id="s-odd-3", started_ts=future, state="exit", exit_code=0),
        # extension keys stored apart (`ext`), and the worktree at brat's place (stored as 1)
        block_text(
            session_id="s-odd-4",
            worktree=".grite/worktrees/s-odd-4",
            state="exit",
            exit_code=0,
            parent_session_id="s-odd-1",
            root_session_id="s-odd-1",
            spawn_depth=1,
            phase="review",
            input_tokens=12,
        ),
    ]
    append_raw(repo, [make_event(issue, actor, T0 + n, COMMENT_ADDED, [b]) for n, b in enumerate(blocks)])
    fast = brat_json("sessions", "list", "--all", cwd=repo)  # the spliced text
    slow = brat_json("sessions", "list", "--all", "--type", "polecat", cwd=repo)  # objects
    assert fast["total"] == slow["total"] == 4
    by_id = {s["session_id"]: s for s in slow["sessions"]}
    for s in fast["sessions"]:
        expected = dict(by_id[s["session_id"]])
        s.pop("heartbeat_age_ms"), expected.pop("heartbeat_age_ms")
        assert s == expected
    odd = {s["session_id"]: s for s in fast["sessions"]}
    assert odd["s-odd-1"]["worktree"] == 'wt "quoted" \\ back \u00e9\u4e2d'
    assert odd["s-odd-2"]["last_heartbeat_ts"] is None and odd["s-odd-2"]["future_ts"] == future
    assert odd["s-odd-3"]["future_ts"] == future
    assert odd["s-odd-4"]["worktree"] == ".grite/worktrees/s-odd-4"
    assert (odd["s-odd-4"]["root_session_id"], odd["s-odd-4"]["spawn_depth"]) == ("s-odd-1", 1)
    assert (odd["s-odd-4"]["phase"], odd["s-odd-4"]["usage"]["input_tokens"]) == ("review", 12)
    assert odd["s-odd-1"]["parent_session_id"] is None and odd["s-odd-1"]["spawn_depth"] == 0


def test_a_session_exiting_while_list_all_reads_is_listed_once(repo, task, monkeypatch):
    """Exited and live sessions are read in one read transaction: another process that
    records an exit between the two reads changes nothing in this listing."""
    from brat_sessions.cli.plain import all_list_json
    from brat_sessions.index import Index
    from brat_sessions.workspace import Workspace

    t = Tracker(repo)
    sid = t.start(task.task_id).session_id
    ws = Workspace(repo)
    ws.fresh_index()
    exited_rows = Index.exited_rows

    def then_another_process_exits_it(self, *args, **kwargs):
        found = exited_rows(self, *args, **kwargs)
        Tracker(repo).exit(sid, 0)  # (its own index, its own connection: a write meanwhile)
        return found

    monkeypatch.setattr(Index, "exited_rows", then_another_process_exits_it)
    data = json.loads("".join(all_list_json(ws)))["data"]
    assert [(s["session_id"], s["status"]) for s in data["sessions"]] == [(sid, "spawned")]
    monkeypatch.undo()
    data = json.loads("".join(all_list_json(Workspace(repo))))["data"]
    assert [(s["session_id"], s["status"]) for s in data["sessions"]] == [(sid, "exit")]


def test_list_all_json_sorts_rows_by_start_and_id_only(repo, task):
    """Rows of two shapes sort together by (start, id) alone: even rows a hand-edited index
    makes equal there are never compared beyond (here: ids set to NULL, one beat set)."""
    import sqlite3

    t = Tracker(repo)
    for _ in range(2):
        t.exit(t.start(task.task_id).session_id, 0)
    brat_json("sessions", "list", cwd=repo)  # the index, current
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    with db:
        db.execute("UPDATE sessions SET session_id = NULL, started_ts = 1700000000000")
        db.execute("UPDATE sessions SET top_beat = NULL")
        db.execute(
            "UPDATE sessions SET top_beat = 1700000000001 WHERE rowid = (SELECT min(rowid) FROM sessions)"
        )
    db.close()
    assert brat_json("sessions", "list", "--all", cwd=repo)["total"] == 2


def test_arguments_that_make_no_sense_are_refused_before_anything_is_written(repo, task, busy):
    from ..helpers import wal_commit_count

    t, ids, _crew = busy
    sid = ids[0]
    before = wal_commit_count(repo)
    refused = [
        ("sessions", "stop", sid, "--grace", "nan"),  # FloatRange let NaN through: no grace at all
        ("sessions", "run", "--task", task.task_id, "--heartbeat-interval", "-1", "--", "true"),
        ("sessions", "run", "--task", task.task_id, "--heartbeat-interval", "0", "--", "true"),
        ("sessions", "reap", "--timeout", "inf"),
        ("sessions", "list", "--interval", "1"),  # without --watch it did nothing
        ("sessions", "start", "--task", task.task_id, "--engine", " "),
        ("sessions", "usage", sid, "--model", "", "--input", "1", "--output", "1"),
        ("sessions", "phase", sid, "tests", "--iteration", "3", "--of", "2"),
    ]
    for args in refused:
        out = brat(*args, "--json", cwd=repo) if args[1] != "run" else brat(*args, cwd=repo)
        assert out.returncode == 2, (args, out.stderr)
    out = brat(
        "sessions", "run", "--task", task.task_id, "--heartbeat-interval", "-1", "--", "true", cwd=repo
    )
    assert "not a finite number of seconds more than 0" in out.stderr  # as for 0
    assert wal_commit_count(repo) == before and not t.session(sid).exited
    t.exit(sid, 0)
    again = brat("sessions", "exit", sid, "--code", "0", cwd=repo)
    assert again.returncode == 4 and "first exit is kept" in again.stderr


def test_counts_in_text_are_singular_for_one(repo, busy):
    _t, ids, _crew = busy
    out = brat("sessions", "usage", ids[0], "--model", "m", "--input", "1", "--output", "1", cwd=repo)
    assert " 1 call, " in out.stdout, out.stdout
    out = brat("sessions", "usage", ids[0], "--model", "m", "--input", "1", "--output", "1", cwd=repo)
    assert " 2 calls, " in out.stdout, out.stdout
