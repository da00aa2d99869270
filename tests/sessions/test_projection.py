from hypothesis import given, settings
from hypothesis import strategies as st

from brat_sessions.index import Index
from brat_sessions.storage import events as ev
from brat_sessions.storage.events import make_event
from brat_sessions.storage.repo import open_repo

from ..helpers import T0, append_raw, block_text, brat, brat_json, make_repo

A = bytes.fromhex("aa" * 16)
B = bytes.fromhex("bb" * 16)
ISSUE = bytes.fromhex("01" * 16)
OTHER = bytes.fromhex("02" * 16)


def created(issue=ISSUE, task="t-20250114-0001", ts=1):
    return make_event(issue, A, ts, ev.ISSUE_CREATED, ["T", "", ["type:task", f"task:{task}"]])


def comment(text, ts, issue=ISSUE, actor=A):
    return make_event(issue, actor, ts, ev.COMMENT_ADDED, [text])


def index_of(repo):
    return Index(open_repo(repo)).refresh()


def test_latest_block_wins_heartbeat_is_max_and_first_exit_is_final(repo):
    append_raw(repo, [created()])
    append_raw(repo, [comment(block_text(state="spawned"), 10)])
    append_raw(repo, [comment(block_text(state="running", pid=7, last_heartbeat_ts=T0 + 500), 20)])
    append_raw(repo, [comment(block_text(state="running", pid=7, last_heartbeat_ts=T0 + 300), 30)])
    s = index_of(repo).session("s-20250114-0001")
    assert (s.status, s.pid, s.last_heartbeat_ts, s.task_id) == ("running", 7, T0 + 500, "t-20250114-0001")
    append_raw(
        repo,
        [
            comment(
                block_text(
                    state="exit", exit_code=3, exit_reason="completed", last_output_ref="sha256:" + "a" * 64
                ),
                40,
            )
        ],
    )
    append_raw(repo, [comment(block_text(state="exit", exit_code=-1, exit_reason="timeout"), 50)])
    append_raw(repo, [comment(block_text(state="running", last_heartbeat_ts=T0 + 900), 60)])
    index = index_of(repo)
    s = index.session("s-20250114-0001")
    assert (s.status, s.exit_code, s.exit_reason) == ("exit", 3, "completed")
    assert s.last_output_ref == "sha256:" + "a" * 64
    assert s.last_heartbeat_ts == T0 + 900  # the largest ever seen
    assert [b.fields["state"] for b in index.history("s-20250114-0001")] == [
        "spawned",
        "running",
        "running",
        "exit",
        "exit",
        "running",
    ]
    (problem,) = index.problems()  # doctor names the ignored exit
    assert problem["kind"] == "extra_exit" and "2 exit blocks; the first (completed 3" in problem["message"]


def test_block_on_another_issue_is_a_reported_conflict(repo):
    append_raw(repo, [created(), created(OTHER, "t-20250114-0002")])
    append_raw(repo, [comment(block_text(state="running"), 10)])
    append_raw(repo, [comment(block_text(state="exit", exit_code=0, exit_reason="completed"), 20, OTHER)])
    index = index_of(repo)
    s = index.session("s-20250114-0001")
    assert s.status == "running" and s.grite_issue_id == ISSUE.hex() and s.conflicts == 1
    kinds = [p["kind"] for p in index.problems()]
    assert kinds == ["conflict"]


def test_malformed_blocks_are_counted_and_shown_by_doctor(repo):
    append_raw(repo, [created()])
    append_raw(repo, [comment('[session]\nstate = "running"\n[/session]\n' + block_text(), 10)])
    data = brat_json("sessions", "doctor", cwd=repo)
    assert data["total"] == 1
    assert "missing required field session_id" in data["problems"][0]["message"]
    listed = brat_json("sessions", "list", cwd=repo)
    assert [s["session_id"] for s in listed["sessions"]] == ["s-20250114-0001"]


def test_several_sessions_per_task_and_unknown_kinds_are_kept(repo):
    append_raw(repo, [created()])
    append_raw(repo, [make_event(ISSUE, A, 5, 14, ["k", "v"]), make_event(ISSUE, A, 6, 99, ["?"])])
    append_raw(repo, [comment(block_text(session_id="s-1"), 10), comment(block_text(session_id="s-2"), 11)])
    sessions = index_of(repo).sessions()
    assert [s.session_id for s in sessions] == ["s-1", "s-2"]


def test_orphan_events_are_reported_not_fatal(repo):
    append_raw(repo, [comment(block_text(), 10, issue=OTHER)])
    index = index_of(repo)
    assert [p["kind"] for p in index.problems()] == ["orphan_events"]
    assert index.session("s-20250114-0001").task_id is None


def _history():
    return [
        created(),
        comment(block_text(state="spawned"), 10, actor=A),
        comment(block_text(state="running", pid=9, last_heartbeat_ts=T0 + 15), 20, actor=B),
        comment(block_text(state="exit", pid=9, exit_code=-1, exit_reason="timeout"), 30, actor=A),
        comment(block_text(state="exit", pid=9, exit_code=0, exit_reason="completed"), 30, actor=B),
        make_event(ISSUE, A, 25, ev.LABEL_ADDED, ["session:running"]),
        make_event(ISSUE, B, 26, ev.LABEL_REMOVED, ["session:running"]),
        make_event(ISSUE, A, 27, ev.ISSUE_UPDATED, ["New title", None]),
        make_event(ISSUE, B, 24, ev.ISSUE_UPDATED, ["Old title", None]),
    ]


@settings(max_examples=8, deadline=None)
@given(st.randoms(use_true_random=False))
def test_same_events_in_any_order_give_the_same_sessions(tmp_path_factory, rnd):
    events = _history()
    order = events[:]
    rnd.shuffle(order)
    repo = make_repo(tmp_path_factory.mktemp("perm"))
    for e in order:
        append_raw(repo, [e])
    index = index_of(repo)
    s = index.session("s-20250114-0001")
    # (ts 30, actor aa..) sorts before (ts 30, actor bb..): actor A's timeout exit is the first exit
    assert (s.status, s.exit_reason, s.exit_code, s.pid, s.last_heartbeat_ts) == (
        "exit",
        "timeout",
        -1,
        9,
        T0 + 15,
    )
    issue = index.issue(ISSUE.hex())
    assert issue.title == "New title" and "session:running" not in issue.labels


def test_list_and_show_cli(repo):
    append_raw(repo, [created()])
    append_raw(repo, [comment(block_text(session_id="s-1", state="running", pid=4), 10)])
    append_raw(repo, [comment(block_text(session_id="s-2", session_type="crew", role="user"), 11)])
    append_raw(
        repo, [comment(block_text(session_id="s-3", state="exit", exit_code=0, exit_reason="completed"), 12)]
    )
    assert [s["session_id"] for s in brat_json("sessions", "list", cwd=repo)["sessions"]] == ["s-1", "s-2"]
    assert brat_json("sessions", "list", "--all", cwd=repo)["total"] == 3
    assert [
        s["session_id"] for s in brat_json("sessions", "list", "--type", "crew", cwd=repo)["sessions"]
    ] == ["s-2"]
    assert brat_json("sessions", "list", "--role", "user", cwd=repo)["total"] == 1
    assert brat_json("sessions", "list", "--status", "exit", cwd=repo)["total"] == 1
    assert brat_json("sessions", "list", "--task", "t-20250114-0001", cwd=repo)["total"] == 2
    shown = brat_json("sessions", "show", "s-3", cwd=repo)
    keys = {
        "session_id",
        "task_id",
        "grite_issue_id",
        "role",
        "session_type",
        "engine",
        "worktree",
        "pid",
        "status",
        "started_ts",
        "last_heartbeat_ts",
        "exit_code",
        "exit_reason",
        "last_output_ref",
    }
    assert keys <= set(shown["session"])
    assert shown["history"][0]["actor"] == A.hex() and shown["history"][0]["ts"] == 12
    text = brat("sessions", "list", cwd=repo).stdout
    assert text.splitlines()[0].split() == [
        "SESSION",
        "TASK",
        "ROLE/TYPE",
        "ENGINE",
        "STATE",
        "PID",
        "STARTED",
        "HEARTBEAT",
    ]


def test_each_extension_key_comes_from_the_latest_block_that_has_it():
    from brat_sessions.sessions.projection import BlockRecord, derive

    def block(ts, state, **extra):
        fields = dict.fromkeys(("exit_code", "exit_reason", "last_output_ref", "pid", "last_heartbeat_ts"))
        fields.update(state=state, session_id="s-1", role="polecat", session_type="polecat")
        fields.update(engine="shell", worktree="w", started_ts=1, **extra)
        return BlockRecord("s-1", "01" * 16, ts, "aa" * 16, f"{ts:064x}", 0, fields)

    session, _ = derive(
        [
            block(1, "spawned", phase="plan", llm_calls=1, output_tokens=5, git_head="a" * 40),
            block(2, "running", phase="build", input_tokens=7, cost_usd_micros=None),
            block(3, "running", phase=None, llm_calls=3),
        ]
    )
    assert (session.phase, session.git_head) == ("build", "a" * 40)
    # usage keys in the model's order whatever the blocks' order
    assert list(session.usage.items()) == [("calls", 3), ("input_tokens", 7), ("output_tokens", 5)]
