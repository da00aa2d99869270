"""Lineage, progress, usage, budgets and resume: written with the API and the CLI, read back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brat_sessions import Conflict, Tracker
from brat_sessions.config import Config
from brat_sessions.issues.tasks import create_task
from brat_sessions.reaper import reap
from brat_sessions.sessions.outputs import read_output
from brat_sessions.workspace import Workspace

from ..helpers import brat, brat_json, git, make_repo


def test_nested_runs_link_to_their_parent_by_themselves(repo, task):
    inner = f"{sys.executable} -m brat_sessions.cli sessions run -- sh -c 'echo $BRAT_SESSION_ID'"
    out = brat("sessions", "run", "--task", task.task_id, "--", "sh", "-c", inner, cwd=repo)
    assert out.returncode == 0, out.stderr
    sessions = {s["session_id"]: s for s in brat_json("sessions", "list", "--all", cwd=repo)["sessions"]}
    (outer,) = [s for s in sessions.values() if s["parent_session_id"] is None]
    (child,) = [s for s in sessions.values() if s["parent_session_id"] is not None]
    assert child["parent_session_id"] == outer["session_id"] == child["root_session_id"]
    assert child["spawn_depth"] == 1 and child["task_id"] == task.task_id
    assert out.stdout.strip() == child["session_id"]  # the command sees its own session
    tree = brat("sessions", "tree", outer["session_id"], cwd=repo).stdout.splitlines()
    assert tree[0].split()[:2] == ["SESSION", "STATE"]
    assert tree[1].startswith(outer["session_id"]) and tree[2].startswith("└─ " + child["session_id"])
    listed = brat_json("sessions", "list", "--all", "--parent", outer["session_id"], cwd=repo)
    assert [s["session_id"] for s in listed["sessions"]] == [child["session_id"]]
    assert brat_json("sessions", "list", "--all", "--root", outer["session_id"], cwd=repo)["total"] == 2


def test_phase_and_usage_live_in_the_lease_and_reach_the_exit_block(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    before = git(repo, "rev-parse", "refs/grite/wal")
    data = brat_json("sessions", "phase", s.session_id, "tests", "--iteration", "2", "--of", "5", cwd=repo)
    assert (data["session"]["phase"], data["session"]["iteration"], data["session"]["iterations"]) == (
        "tests",
        2,
        5,
    )
    t.usage(s.session_id, model="m1", input_tokens=100, output_tokens=20, cost_usd=0.5)
    t.usage(s.session_id, model="m1", input_tokens=10, output_tokens=2, cost_usd=0.25)
    total = brat_json(
        "sessions",
        "usage",
        s.session_id,
        "--model",
        "m2",
        "--input",
        "7",
        "--output",
        "3",
        "--source",
        "subagent",
        cwd=repo,
    )["usage"]
    assert total == {
        "calls": 3,
        "input_tokens": 117,
        "output_tokens": 25,
        "cache_read_tokens": 0,
        "cost_usd": 0.75,
    }
    assert git(repo, "rev-parse", "refs/grite/wal") == before  # no WAL commit for any of it
    shown = brat("sessions", "show", s.session_id, cwd=repo).stdout
    assert "tests 2/5" in shown and "142 tok $0.7500 in 3 calls" in shown
    assert "PHASE" in brat("sessions", "list", cwd=repo).stdout
    done = t.exit(s.session_id, 0)
    assert (done.phase, done.iteration, done.usage["input_tokens"]) == ("tests", 2, 117)
    ledger = json.loads(read_output(t.ws.repo, done.usage_ref))["ledger"]
    assert {(e["source"], e["model"], e["calls"]) for e in ledger} == {
        ("main", "m1", 2),
        ("subagent", "m2", 1),
    }
    block = t.history(s.session_id)[-1].fields
    assert (block["input_tokens"], block["cost_usd_micros"], block["phase"]) == (117, 750000, "tests")


def test_the_reaper_keeps_the_ledger_of_a_crashed_worker(repo, task):
    worker = subprocess.Popen(["sleep", "60"])
    t = Tracker(repo)
    s = t.start(task.task_id, pid=worker.pid, state="running")
    t.usage(s.session_id, model="m", input_tokens=5, output_tokens=5, cost_usd=0.01)
    worker.kill()
    worker.wait()
    (v,) = reap(t.ws, Config()).reaped
    done = t.session(s.session_id)
    assert v.exit_reason == "crash" and done.usage["calls"] == 1 and done.usage_ref


def test_usage_totals_past_2_53_are_capped_so_the_exit_and_the_reaper_still_write(repo, task):
    big = 2**53
    t = Tracker(repo)
    s = t.start(task.task_id)
    t.usage(s.session_id, model="a", input_tokens=big, output_tokens=0, cost_usd=1e9)
    totals = t.usage(s.session_id, model="b", input_tokens=1, output_tokens=0, cost_usd=1e9)
    assert totals["input_tokens"] == big  # (each line holds at most 2^53, and so does the sum)
    t.exit(s.session_id, code=0)
    assert t.session(s.session_id).usage["input_tokens"] == big
    other = t.start(task.task_id, pid=None)
    for model in ("a", "b"):
        t.usage(other.session_id, model=model, input_tokens=big, output_tokens=0)
    (v,) = reap(t.ws, Config(timeout=0, spawn_timeout=0), now=s.started_ts + 3_600_000).reaped
    assert v.session_id == other.session_id and t.session(other.session_id).exited


def test_usage_rolls_up_and_stop_recursive_stops_the_tree(repo, task):
    t = Tracker(repo)
    root = t.start(task.task_id, state="running")
    child = t.start(task.task_id, parent=root.session_id, state="running")
    grandchild = t.start(task.task_id, parent=child.session_id, state="running")
    t.usage(grandchild.session_id, model="m", input_tokens=1000, output_tokens=0)
    t.usage(root.session_id, model="m", input_tokens=1, output_tokens=0)
    trees = brat_json("sessions", "tree", root.session_id, cwd=repo)["trees"]
    assert trees[0]["usage_total"]["input_tokens"] == 1001
    # shaped as list's and show's `usage` (the cost in USD)
    assert trees[0]["usage_total"].keys() == trees[0]["session"]["usage"].keys()
    assert trees[0]["children"][0]["children"][0]["session"]["spawn_depth"] == 2
    out = brat_json("sessions", "stop", root.session_id, "--recursive", cwd=repo)
    assert [r["session_id"] for r in out["stopped"]] == [
        grandchild.session_id,
        child.session_id,
        root.session_id,
    ]
    assert all(t.session(x.session_id).exit_reason == "user-stop" for x in (root, child, grandchild))


def test_stop_recursive_on_an_exited_parent_stops_its_live_children_and_says_so(repo, task):
    t = Tracker(repo)
    root = t.start(task.task_id, state="running")
    child = t.start(task.task_id, parent=root.session_id, state="running")
    t.exit(root.session_id, 0)
    out = brat_json("sessions", "stop", root.session_id, "--recursive", cwd=repo)
    assert out["stopped"] == [{"session_id": child.session_id, "signalled": False}]
    assert out["session"]["exit_reason"] == "completed"  # the parent's exit is left as it was
    assert t.session(child.session_id).exit_reason == "user-stop"
    text = brat("sessions", "stop", root.session_id, "--recursive", cwd=repo)
    assert text.returncode == 4 and "already exited" in text.stderr  # nothing was live: a conflict


def _budgeted_run(repo, task, budget: int, script: str) -> subprocess.CompletedProcess[str]:
    """`brat sessions run` of a shell script under a token budget, beating every 0.3 s."""
    options = ["--budget-tokens", str(budget), "--heartbeat-interval", "0.3", "--grace", "1"]
    return brat(
        "sessions", "run", "--task", task.task_id, *options, "--", "sh", "-c", script, cwd=repo, timeout=90
    )


def test_run_stops_its_command_past_the_token_budget(repo, task):
    script = (
        f"{sys.executable} -m brat_sessions.cli sessions usage $BRAT_SESSION_ID --model m "
        f"--input 600 --output 0; sleep 30"
    )
    out = _budgeted_run(repo, task, 500, script)
    assert out.returncode == 143, out.stderr
    assert "budget" in out.stderr
    (s,) = brat_json("sessions", "list", "--all", cwd=repo)["sessions"]
    assert (s["exit_reason"], s["stop_cause"], s["budget_tokens"]) == ("user-stop", "budget", 500)


def test_resume_links_refuses_a_live_original_and_warns_of_a_moved_head(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, engine="codex", state="running")
    assert s.git_head == git(repo, "rev-parse", "HEAD")
    refused = brat("sessions", "resume", s.session_id, cwd=repo)
    assert refused.returncode == 4 and "still live" in refused.stderr
    with pytest.raises(Conflict):
        t.resume(s.session_id)
    t.exit(s.session_id, 1)
    git(repo, "checkout", "-q", "--orphan", "elsewhere")
    git(repo, "commit", "-q", "--allow-empty", "-m", "unrelated")
    out = brat("sessions", "resume", "--json", s.session_id, cwd=repo)
    data = json.loads(out.stdout)["data"]
    assert data["session"]["resumed_from"] == s.session_id and data["session"]["engine"] == "codex"
    assert "not the recorded" in data["warning"] and "warning" in out.stderr
    ran = brat("sessions", "resume", data["session_id"], "--", "true", cwd=repo)
    assert ran.returncode == 4  # the new one is live: refused
    t.exit(data["session_id"], 0)
    # as documented: brat's options before SESSION, then `-- CMD`; whatever follows SESSION
    # is the command's, its own options included
    ran = brat("sessions", "resume", "--json", data["session_id"], "--", "sh", "-c", "exit 7", cwd=repo)
    assert ran.returncode == 7, ran.stderr
    resumed = json.loads(ran.stdout)["data"]["session"]
    assert resumed["resumed_from"] == data["session_id"]
    ran = brat(
        "sessions",
        "resume",
        resumed["session_id"],
        "sh",
        "-c",
        'echo "$@"',
        "x",
        "--json",
        "-C",
        "/",
        cwd=repo,
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "--json -C /", ran.stderr
    before = len(t.sessions(include_exited=True))
    misplaced = brat("sessions", "resume", resumed["session_id"], "--json", "--", "true", cwd=repo)
    assert misplaced.returncode == 2 and "before SESSION" in misplaced.stderr  # no command `--json`
    assert len(t.sessions(include_exited=True)) == before
    # run's --grace and --tty go with a resumed command too
    last = max(t.sessions(include_exited=True), key=lambda x: x.started_ts).session_id
    ran = brat("sessions", "resume", "--grace", "1", "--no-tty", last, "--", "true", cwd=repo)
    assert ran.returncode == 0, ran.stderr


def test_a_log_written_only_by_brat_reads_as_before(repo, task):
    s = Tracker(repo).start(task.task_id)
    data = brat_json("sessions", "show", s.session_id, cwd=repo)["session"]
    assert (data["parent_session_id"], data["usage"], data["phase"], data["spawn_depth"]) == (
        None,
        None,
        None,
        0,
    )


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20).filter(lambda x: "\x00" not in x and x.strip()),
            st.integers(0, 10**6),
            st.integers(0, 10**6),
            st.floats(0, 100, allow_nan=False),
        ),
        min_size=1,
        max_size=5,
    ),
    st.text(min_size=1, max_size=20).filter(lambda x: "\x00" not in x and x.strip()),
)
def test_usage_and_phase_round_trip(tmp_path_factory, calls, phase):
    repo = make_repo(tmp_path_factory.mktemp("rt"))
    task = create_task(Workspace(repo), "T")
    t = Tracker(repo)
    s = t.start(task.task_id)
    for model, i, o, cost in calls:
        t.usage(s.session_id, model=model, input_tokens=i, output_tokens=o, cost_usd=cost)
    t.phase(s.session_id, phase, iteration=1, of=2)
    done = Tracker(repo).exit(s.session_id, 0)
    assert done.usage["input_tokens"] == sum(c[1] for c in calls)
    assert done.usage["cost_usd_micros"] == sum(round(c[3] * 1e6) for c in calls)
    assert (done.phase, done.iteration, done.iterations) == (phase, 1, 2)
    assert brat_json("sessions", "doctor", cwd=repo)["problems"] == []


def test_lineage_travels_with_sync(tmp_path):
    a = make_repo(tmp_path / "a")
    task = create_task(Workspace(a), "T")
    t = Tracker(a)
    root = t.start(task.task_id, state="running")
    child = t.start(task.task_id, parent=root.session_id)
    t.usage(child.session_id, model="m", input_tokens=3, output_tokens=4)
    remote = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(a, "remote", "add", "origin", str(remote))
    brat_json("sync", cwd=a)
    b = make_repo(tmp_path / "b")
    git(b, "remote", "add", "origin", str(remote))
    brat_json("sync", cwd=b)
    shown = brat_json("sessions", "show", child.session_id, cwd=b)["session"]
    assert shown["parent_session_id"] == root.session_id and shown["usage"]["output_tokens"] == 4


def test_a_chain_of_sessions_deeper_than_python_recursion_is_shown_whole(repo, task):
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from ..helpers import T0, append_raw, block_text

    ids = [f"s-20250114-{n:04x}" for n in range(1200)]  # deeper than Python's recursion limit
    events = [
        make_event(
            bytes.fromhex(task.issue_id),
            bytes(16),
            T0 + n,
            COMMENT_ADDED,
            [
                block_text(
                    session_id=sid, started_ts=T0 + n, **({"parent_session_id": ids[n - 1]} if n else {})
                )
            ],
        )
        for n, sid in enumerate(ids)
    ]
    append_raw(repo, events)
    trees = brat_json("sessions", "tree", ids[0], cwd=repo)["trees"]
    chain = []
    for top in trees:  # 100 levels a tree, each continuing where the last one stops
        node = top
        chain.append(node["session"]["session_id"])
        while node["children"]:
            (node,) = node["children"]
            chain.append(node["session"]["session_id"])
    assert chain == ids and len(trees) == 12
    text = brat("sessions", "tree", ids[0], cwd=repo)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == len(ids) + 1, text.stderr
    assert max(len(line) for line in text.stdout.splitlines()) < 400  # no indent 3,600 wide


def test_a_nested_start_finds_its_task_by_issue_id_when_the_task_id_names_two(repo, task):
    from ..grite_writer import GriteWriter, task_labels

    GriteWriter(repo).create_issue("another clone's task, same id", "", task_labels(task.task_id))
    inner = f"{sys.executable} -m brat_sessions.cli sessions start --json"
    out = brat("sessions", "run", "--task", task.issue_id, "--json", "--", "sh", "-c", inner, cwd=repo)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stderr.strip().splitlines()[-1])["data"]["session"]  # (run tees to stderr)
    assert child["grite_issue_id"] == task.issue_id and child["parent_session_id"]


def test_a_task_id_the_command_sets_itself_wins_over_runs_issue_id(repo, task):
    other = create_task(Workspace(repo), "Another task")
    inner = f"BRAT_TASK_ID={other.task_id} {sys.executable} -m brat_sessions.cli sessions start --json"
    out = brat("sessions", "run", "--task", task.task_id, "--json", "--", "sh", "-c", inner, cwd=repo)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stderr.strip().splitlines()[-1])["data"]["session"]
    assert child["grite_issue_id"] == other.issue_id


def test_a_scope_inside_a_scope_is_its_child_in_the_same_thread_only(repo, task):
    import threading

    t = Tracker(repo)
    seen = {}
    with t.session_scope(task.task_id, heartbeat_interval=60) as outer:
        with t.session_scope(task.task_id, heartbeat_interval=60) as inner:
            seen["inner"] = t.session(inner.session_id)

        def elsewhere():
            with t.session_scope(task.task_id, heartbeat_interval=60) as other:
                seen["thread"] = t.session(other.session_id)

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        with t.session_scope(task.task_id, heartbeat_interval=60) as after:
            seen["after"] = t.session(after.session_id)
    with t.session_scope(task.task_id, heartbeat_interval=60) as alone:
        seen["alone"] = t.session(alone.session_id)
    assert (seen["inner"].parent_session_id, seen["inner"].spawn_depth) == (outer.session_id, 1)
    assert seen["after"].parent_session_id == outer.session_id  # (the inner one had ended)
    assert seen["thread"].parent_session_id is None and seen["alone"].parent_session_id is None


def _forge_child(repo, remote, task, sid: str, parent: str, **fields) -> None:
    """Another clone pushes a block claiming `sid` is a child of `parent`; this one syncs."""
    from ..grite_writer import GriteWriter, raw_block

    attacker = repo.parent / "attacker"
    if not attacker.exists():
        git(repo.parent, "clone", "-q", str(remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    GriteWriter(attacker).comment(
        task.issue_id,
        raw_block(
            state="running",
            session_id=sid,
            worktree="",
            started_ts=Tracker(repo).session(parent).started_ts,
            parent_session_id=parent,
            root_session_id=parent,
            spawn_depth=1,
            **fields,
        ),
    )
    git(attacker, "push", "-q", "origin", "refs/grite/wal:refs/grite/wal")
    assert brat("sync", cwd=repo).returncode == 0


def _remote_of(repo):
    remote = repo.parent / "remote.git"
    git(repo.parent, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    assert brat("sync", cwd=repo).returncode == 0
    return remote


def test_a_forged_parent_link_never_makes_stop_recursive_signal_an_unrelated_process(repo, task):
    t = Tracker(repo)
    remote = _remote_of(repo)
    canaries = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    try:
        a = t.start(task.task_id, state="running", pid=canaries[0].pid)
        b = t.start(task.task_id, state="running", pid=canaries[1].pid)  # unrelated to a
        assert brat("sync", cwd=repo).returncode == 0
        _forge_child(repo, remote, task, b.session_id, a.session_id)  # "b is a's child"
        assert t.session(b.session_id).parent_session_id == a.session_id  # (shown as the log says)
        out = brat_json("sessions", "stop", a.session_id, "--recursive", "--grace", "1", cwd=repo)
        assert out["stopped"] == [{"session_id": a.session_id, "signalled": True}]
        assert canaries[0].wait(timeout=30) is not None
        assert canaries[1].poll() is None  # never signalled: its link came from the log alone
        assert not t.session(b.session_id).exited  # nor ended (its own run would then stop it)
    finally:
        for c in canaries:
            c.kill()
            c.wait()


def test_a_forged_child_with_huge_usage_never_stops_a_budgeted_run(repo, task):
    remote = _remote_of(repo)
    run = subprocess.Popen(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "run", "--task", task.task_id]
        + ["--budget-tokens", "1000", "--heartbeat-interval", "0.2", "--", "sleep", "3"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t = Tracker(repo)
        from ..helpers import wait_for

        wait_for(lambda: any(not s.exited for s in t.sessions()))
        (live,) = t.sessions()
        _forge_child(repo, remote, task, "s-20990101-beef", live.session_id, input_tokens=10**9)
        _out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert "budget" not in err
    assert t.session(live.session_id).exit_reason == "completed"


def test_a_child_started_here_stays_in_its_tree_whatever_the_log_later_says(repo, task):
    t = Tracker(repo)
    remote = _remote_of(repo)
    root = t.start(task.task_id, state="running")
    child = t.start(task.task_id, parent=root.session_id, state="running")
    other = t.start(task.task_id, state="running")
    assert brat("sync", cwd=repo).returncode == 0
    _forge_child(repo, remote, task, child.session_id, other.session_id)  # "re-parented" by a block
    out = brat_json("sessions", "stop", root.session_id, "--recursive", cwd=repo)
    assert [r["session_id"] for r in out["stopped"]] == [child.session_id, root.session_id]
    assert not t.session(other.session_id).exited


def test_the_budget_counts_children_that_already_exited_and_reap_forgets_ended_trees(repo, task):
    brat_cli = f"{sys.executable} -m brat_sessions.cli"
    child = f"{brat_cli} sessions usage $BRAT_SESSION_ID --model m --input 400 --output 0"
    script = f"for i in 1 2 3; do {brat_cli} sessions run -- sh -c '{child}'; done; sleep 30"
    out = _budgeted_run(repo, task, 1000, script)
    assert out.returncode == 143, out.stderr  # 3 x 400 tokens, each child gone before the check
    assert "budget" in out.stderr
    children = repo / ".git" / "brat_sessions" / "procs" / "children"
    assert any(children.iterdir())
    for live in brat_json("sessions", "list", cwd=repo)["sessions"]:  # (a child the group's stop
        brat("sessions", "exit", live["session_id"], "--code", "143", cwd=repo)  # caught mid-exit)
    assert brat("sessions", "reap", cwd=repo).returncode == 0
    assert not any(children.iterdir())  # every session of the tree has exited: its links go
