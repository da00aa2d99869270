"""`brat sessions report` and `timeline` on a real repository (the renderers have their own tests)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from brat_sessions import Tracker

from ..helpers import brat, brat_json


def _world(repo, task):
    t = Tracker(repo)
    root = t.start(task.task_id, engine="codex", state="running")
    child = t.start(task.task_id, engine="claude", parent=root.session_id, state="running")
    t.usage(root.session_id, model="m1", input_tokens=100, output_tokens=10, cost_usd=1.0)
    t.usage(child.session_id, model="m2", input_tokens=5, output_tokens=5, cost_usd=0.5)
    t.exit(child.session_id, 0)
    return root, child


def test_report_groups_sessions_outcomes_tokens_and_cost(repo, task):
    _world(repo, task)
    by_model = {r["key"]: r for r in brat_json("sessions", "report", "--by", "model", cwd=repo)["rows"]}
    assert by_model["m1"]["input_tokens"] == 100 and by_model["m2"]["cost_usd"] == 0.5  # m2: stored ledger
    by_task = brat_json("sessions", "report", "--by", "task", cwd=repo)
    (row,) = by_task["rows"]
    assert row["sessions"] == 2 and row["outcomes"]["ok"] == 1 and row["outcomes"]["live"] == 1
    assert by_task["total"] == {k: v for k, v in row.items() if k != "key"}  # the TOTAL line
    text = brat("sessions", "report", "--by", "engine", cwd=repo).stdout
    assert "codex" in text and "claude" in text and "TOTAL" in text
    assert brat("sessions", "report", "--since", "yesterday", cwd=repo).returncode == 2
    assert brat_json("sessions", "report", "--since", "1d", cwd=repo)["rows"]


def test_timeline_in_the_terminal_and_as_html(repo, task, tmp_path):
    root, child = _world(repo, task)
    lines = brat("sessions", "timeline", cwd=repo).stdout.splitlines()
    assert any(root.session_id in ln for ln in lines) and any(child.session_id in ln for ln in lines)
    out = tmp_path / "t.html"
    assert brat_json("sessions", "timeline", "--html", str(out), cwd=repo)["sessions"] == 2
    rects, links = [], []

    class Parse(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "rect" and "data-session-id" in a:
                rects.append(a)
            if "data-parent" in a:
                links.append((a["data-parent"], a["data-child"]))

    html = out.read_text()
    Parse().feed(html)
    assert sorted(r["data-session-id"] for r in rects) == sorted([root.session_id, child.session_id])
    assert links == [(root.session_id, child.session_id)]
    assert "<script" not in html and "http" not in html


def test_a_session_whose_blocks_cannot_be_read_is_a_bare_row(repo, task):
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from ..helpers import append_raw

    text = '[session]\nstate = "running"\nsession_id = "s-20260101-bad0"\nrole = "witness"\n[/session]'
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\x05" * 16, 1, COMMENT_ADDED, [text])])
    data = brat_json("sessions", "list", "--all", cwd=repo)
    (bare,) = data["unreadable"]
    assert (bare["session_id"], bare["task_id"], bare["status"]) == (
        "s-20260101-bad0",
        task.task_id,
        "unreadable",
    )
    assert "missing required field" in bare["reason"]
    row = [ln for ln in brat("sessions", "list", "--all", cwd=repo).stdout.splitlines() if "bad0" in ln]
    assert len(row) == 1 and "unreadable" in row[0]
    shown = brat_json("sessions", "show", "bad0", cwd=repo)["session"]
    assert shown["status"] == "unreadable"
    assert brat("sessions", "show", "s-20260101-bad0", cwd=repo).returncode == 0


def test_a_hostile_stored_ledger_counts_as_no_ledger(repo, task):
    """Ledgers are blobs from other clones: one nested past Python's recursion limit, or
    not a ledger at all, counts under "-" and never fails the report."""
    from brat_sessions.sessions.outputs import store_output
    from brat_sessions.storage.repo import open_repo

    t = Tracker(repo)
    r = open_repo(repo).repo
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"ledger": [{"model": 5}]}', b'"x"'):
        s = t.start(task.task_id)
        ref = store_output(r, raw)
        t.ws.append(lambda index, s=s, ref=ref: _exit_block(t, index, s.session_id, ref))
    assert all(s.usage_ref for s in t.sessions(include_exited=True))
    rows = brat_json("sessions", "report", "--by", "model", cwd=repo)["rows"]
    assert [(row["key"], row["sessions"]) for row in rows] == [("-", 3)]


def _exit_block(t, index, sid, ledger_ref):
    from brat_sessions.sessions.writer import block_events

    s = t.ws.with_lease(index.session(sid))
    fields = {**s.block_fields(), "state": "exit", "exit_code": 0, "exit_reason": "completed"}
    fields["usage_ref"] = ledger_ref
    return block_events(index, t.ws.actor, s, fields, s.updated_ts + 1)


def test_a_start_in_the_future_reads_as_future_and_stretches_no_axis(repo, task):
    """A block may hold a start up to 2200 (another clone's clock, or a forged one)."""
    import time

    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from ..helpers import append_raw, block_text

    t = Tracker(repo)
    t.start(task.task_id, state="running")
    later = int(time.time() * 1000) + 10**11  # about three years on
    text = block_text(session_id="s-future", started_ts=later, state="running")
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\xaa" * 16, later, COMMENT_ADDED, [text])])
    listing = brat("sessions", "list", "--wide", cwd=repo).stdout
    assert "future" in listing and not re.search(r" -\d", listing), listing
    year = time.gmtime(later / 1000).tm_year
    timeline = brat("sessions", "timeline", cwd=repo).stdout
    assert "s-future" in timeline and str(year) not in timeline, timeline


def test_the_total_counts_a_session_that_used_two_models_once(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    t.usage(s.session_id, model="m1", input_tokens=10, output_tokens=1, cost_usd=0.25)
    t.usage(s.session_id, model="m2", input_tokens=5, output_tokens=2, cost_usd=0.5)
    t.exit(s.session_id, 0)
    by_model = brat_json("sessions", "report", "--by", "model", cwd=repo)
    by_task = brat_json("sessions", "report", "--by", "task", cwd=repo)
    assert [r["sessions"] for r in by_model["rows"]] == [1, 1]
    assert by_model["total"] == by_task["total"]
    assert (by_model["total"]["sessions"], by_model["total"]["input_tokens"]) == (1, 15)
    assert by_model["total"]["cost_usd"] == 0.75
    text = brat("sessions", "report", "--by", "model", cwd=repo).stdout
    assert text.splitlines()[-1].split()[:2] == ["TOTAL", "1"]
