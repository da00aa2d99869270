"""`brat sessions report` and `timeline` on a real repository (the renderers have their own tests)."""

from __future__ import annotations

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
