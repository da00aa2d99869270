"""Usage and outcome reports (brat_sessions/report.py): pure functions of session dicts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from brat_sessions.report import aggregate, duration, outcome, report_table, rollup

T0 = int(datetime(2025, 1, 14, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
NOW = T0 + 600 * MIN


def sess(sid: str, **kw) -> dict:
    """A session dict as `Session.to_json()` gives it, with the new keys; exited when a
    `reason` is given (then `end` is its exit time)."""
    reason = kw.pop("reason", None)
    start = kw.pop("start", T0)
    end = kw.pop("end", None)
    base = {
        "session_id": sid,
        "task_id": "T-1",
        "grite_issue_id": "ab" * 16,
        "role": "worker",
        "session_type": "polecat",
        "engine": "codex",
        "status": "exit" if reason else "running",
        "started_ts": start,
        "updated_ts": end if end is not None else start,
        "last_heartbeat_ts": None,
        "exit_code": 0 if reason == "completed" else None,
        "exit_reason": reason,
        "convoy_id": None,
        "parent_session_id": None,
        "root_session_id": None,
        "spawn_depth": 0,
        "phase": None,
        "iteration": None,
        "iterations": None,
        "last_activity_ts": None,
        "usage": None,
        "ledger": None,
        "stop_cause": None,
    }
    base.update(kw)
    return base


def usage(i=0, o=0, c=0, cost=0.0, calls=0) -> dict:
    return {"input_tokens": i, "output_tokens": o, "cache_read_tokens": c, "cost_usd": cost, "calls": calls}


def entry(model, i=0, o=0, cost=0.0, calls=1, source="engine") -> dict:
    return {
        "source": source,
        "model": model,
        "calls": calls,
        "input_tokens": i,
        "output_tokens": o,
        "cache_read_tokens": 0,
        "cost_usd": cost,
    }


def by_key(rows):
    return {r["key"]: r for r in rows}


def test_outcome_rules():
    assert outcome(sess("a", reason="completed", exit_code=0)) == "ok"
    assert outcome(sess("a", reason="completed", exit_code=3)) == "failed"
    assert outcome(sess("a", reason="completed", exit_code=False)) == "failed"  # a bool is no code
    assert outcome(sess("a", reason="signal", exit_code=137)) == "failed"
    assert outcome(sess("a", reason="user-stop")) == "stopped"
    assert outcome(sess("a", reason="timeout")) == "timeout"
    assert outcome(sess("a", reason="crash")) == "crash"
    assert outcome(sess("a", status="exit", exit_reason=None)) == "failed"  # exited, reason unknown
    assert outcome(sess("a", status="exit", exit_reason="weird")) == "failed"
    for status in ("spawned", "ready", "running", "handoff", None, "???"):
        assert outcome(sess("a", status=status, exit_reason="completed", exit_code=0)) == "live"
    assert outcome({}) == "live"


def test_aggregate_by_task_counts_wall_time_outcomes_and_usage():
    sessions = [
        sess("a", reason="completed", end=T0 + 10 * MIN, usage=usage(100, 10, 5, 0.01, 2)),
        sess(
            "b",
            reason="completed",
            exit_code=1,
            start=T0 + MIN,
            end=T0 + 3 * MIN,
            usage=usage(1, 2, 3, 0.5, 1),
        ),
        sess("c", start=T0 + 20 * MIN),  # live: counted to now
        sess("d", task_id="T-0", reason="user-stop", end=T0 - MIN),  # ends before it starts: 0
        sess("e", task_id=None, reason="crash", end=T0 + MIN),
        sess("f", task_id="T-0", reason="timeout", start=None),  # no start: no wall time
    ]
    rows = aggregate(sessions, "task", NOW)
    assert [r["key"] for r in rows] == ["-", "T-0", "T-1"]
    t1 = by_key(rows)["T-1"]
    assert t1["sessions"] == 3
    assert t1["wall_ms"] == 10 * MIN + 2 * MIN + (NOW - T0 - 20 * MIN)
    assert t1["outcomes"] == {"ok": 1, "failed": 1, "stopped": 0, "timeout": 0, "crash": 0, "live": 1}
    assert (t1["input_tokens"], t1["output_tokens"], t1["cache_read_tokens"], t1["calls"]) == (101, 12, 8, 3)
    assert t1["cost_usd"] == pytest.approx(0.51)
    t0 = by_key(rows)["T-0"]
    assert t0["wall_ms"] == 0 and t0["outcomes"]["stopped"] == 1 and t0["outcomes"]["timeout"] == 1
    assert by_key(rows)["-"]["outcomes"]["crash"] == 1 and by_key(rows)["-"]["wall_ms"] == MIN


def test_aggregate_by_convoy_and_engine_with_missing_keys():
    sessions = [
        sess("a", convoy_id="cv-2", engine="claude"),
        sess("b", convoy_id="cv-1", engine="codex"),
        sess("c", convoy_id="cv-2", engine=None),
        sess("d", engine=""),
    ]
    assert [(r["key"], r["sessions"]) for r in aggregate(sessions, "convoy", NOW)] == [
        ("-", 1),
        ("cv-1", 1),
        ("cv-2", 2),
    ]
    assert [(r["key"], r["sessions"]) for r in aggregate(sessions, "engine", NOW)] == [
        ("-", 2),
        ("claude", 1),
        ("codex", 1),
    ]


def test_aggregate_by_day_uses_the_utc_date_of_the_start():
    late = int(datetime(2025, 1, 14, 23, 59, tzinfo=UTC).timestamp() * 1000)
    sessions = [
        sess("a", start=late, reason="completed", end=late + 5 * MIN),  # runs past midnight
        sess("b", start=late + 2 * MIN, reason="completed", end=late + 3 * MIN),
        sess("c", start=None),
        sess("d", start=10**30),  # not a time
    ]
    rows = by_key(aggregate(sessions, "day", late + 10 * MIN))
    assert set(rows) == {"-", "2025-01-14", "2025-01-15"}
    assert rows["2025-01-14"]["wall_ms"] == 5 * MIN
    assert rows["2025-01-15"]["sessions"] == 1
    assert rows["-"]["sessions"] == 2


def test_aggregate_since_leaves_out_earlier_sessions_and_unknown_starts():
    sessions = [
        sess("a", start=T0 - 1),
        sess("b", start=T0),
        sess("c", start=T0 + MIN),
        sess("d", start=None),
    ]
    rows = aggregate(sessions, "task", NOW, since_ms=T0)
    assert [(r["key"], r["sessions"]) for r in rows] == [("T-1", 2)]
    assert (
        len(aggregate(sessions, "engine", NOW)) == 1
        and aggregate(sessions, "engine", NOW)[0]["sessions"] == 4
    )
    assert aggregate(sessions, "task", NOW, since_ms=NOW + 1) == []


def test_aggregate_by_model_counts_a_session_once_per_model_it_used():
    two_models = sess(
        "a",
        reason="completed",
        end=T0 + 10 * MIN,
        usage=usage(999, 999, 0, 9.0, 9),  # by model, the ledger counts, not the usage
        ledger=[
            entry("gpt-5", i=100, o=10, cost=0.10),
            entry("claude-4", i=7, o=1, cost=0.02, source="judge"),
            entry("gpt-5", i=50, o=5, cost=0.05),
        ],
    )
    one_model = sess("b", reason="crash", end=T0 + 2 * MIN, ledger=[entry("gpt-5", i=1, o=1, cost=0.001)])
    no_ledger = sess("c", reason="completed", end=T0 + MIN, usage=usage(5, 6, 7, 0.3, 4))
    empty_ledger = sess("d", reason="completed", end=T0 + MIN, ledger=[], usage=None)
    unnamed = sess("e", reason="timeout", end=T0 + MIN, ledger=[entry(None, i=3)])
    rows = by_key(aggregate([two_models, one_model, no_ledger, empty_ledger, unnamed], "model", NOW))
    assert list(rows) == ["-", "claude-4", "gpt-5"]
    gpt = rows["gpt-5"]
    assert gpt["sessions"] == 2  # "a" once, though it has two gpt-5 entries
    assert gpt["wall_ms"] == 12 * MIN  # each session's whole wall time
    assert (gpt["input_tokens"], gpt["output_tokens"], gpt["calls"]) == (151, 16, 3)
    assert gpt["cost_usd"] == pytest.approx(0.151)
    assert gpt["outcomes"]["ok"] == 1 and gpt["outcomes"]["crash"] == 1
    claude = rows["claude-4"]
    assert claude["sessions"] == 1 and claude["wall_ms"] == 10 * MIN and claude["input_tokens"] == 7
    dash = rows["-"]
    assert dash["sessions"] == 3  # no ledger, an empty ledger, an entry with no model
    assert dash["input_tokens"] == 5 + 3 and dash["calls"] == 4 + 1
    assert dash["outcomes"]["ok"] == 2 and dash["outcomes"]["timeout"] == 1


def test_usage_falls_back_to_the_ledger_and_bad_numbers_count_as_zero():
    rows = aggregate(
        [
            sess("a", ledger=[entry("m", i=10, o=2, cost=0.5), "not a dict", entry("n", i=1)]),
            sess(
                "b",
                usage={
                    "input_tokens": True,
                    "output_tokens": -5,
                    "cache_read_tokens": "9",
                    "cost_usd": float("nan"),
                },
            ),
            sess("c", usage={"input_tokens": 2**70, "cost_usd": float("inf"), "calls": 1.5}),
            sess("d", usage="garbage", ledger={"model": "x"}, started_ts="yesterday"),
        ],
        "task",
        NOW,
    )
    (row,) = rows
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["calls"]) == (
        11,
        2,
        0,
        2,
    )
    assert row["cost_usd"] == pytest.approx(0.5)
    assert row["sessions"] == 4


def test_aggregate_refuses_an_unknown_grouping():
    with pytest.raises(ValueError, match="cannot group by"):
        aggregate([sess("a")], "colour", NOW)


def test_duration():
    assert [
        duration(ms) for ms in (None, -5, 0, 59_999, 60_000, 3_599_000, 3_600_000, 86_399_000, 86_400_000)
    ] == [
        "-",
        "0s",
        "0s",
        "59s",
        "1m00s",
        "59m59s",
        "1h00m",
        "23h59m",
        "1d00h",
    ]
    assert duration(3 * 86_400_000 + 5 * 3_600_000 + 7) == "3d05h"


def test_report_table_has_the_columns_a_total_and_formats():
    rows = aggregate(
        [
            sess("a", reason="completed", end=T0 + 90 * MIN, usage=usage(1234, 56, 0, 0.0123, 2)),
            sess(
                "b",
                task_id="T-2",
                reason="signal",
                exit_code=137,
                end=T0 + 30_000,
                usage=usage(10, 1, 0, 1.5, 1),
            ),
            sess("c", task_id="T-2", start=NOW - 125 * MIN),
        ],
        "task",
        NOW,
    )
    text = report_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "KEY",
        "SESSIONS",
        "WALL",
        "OK",
        "FAILED",
        "STOPPED",
        "TIMEOUT",
        "CRASH",
        "LIVE",
        "TOKENS",
        "IN",
        "TOKENS",
        "OUT",
        "COST",
    ]
    assert lines[1].split() == ["T-1", "1", "1h30m", "1", "0", "0", "0", "0", "0", "1,234", "56", "$0.0123"]
    assert lines[2].split() == ["T-2", "2", "2h05m", "0", "1", "0", "0", "0", "1", "10", "1", "$1.5000"]
    assert lines[3].split() == ["TOTAL", "3", "3h35m", "1", "1", "0", "0", "0", "1", "1,244", "57", "$1.5123"]
    assert len(lines) == 4
    assert report_table([]) == "no sessions"


def test_report_table_cuts_keys_to_the_width_and_shows_controls():
    hostile = "\x1b[2J\x1b[31mred\nsecond line\u202e" + "k" * 10_000
    rows = aggregate([sess("a", task_id=hostile), sess("b", task_id="T-1")], "task", NOW)
    for width in (80, 100, 120):
        text = report_table(rows, width=width)
        assert "\x1b" not in text and "\u202e" not in text
        assert len(text.splitlines()) == 4  # header, two rows, total: no line was added
        assert all(len(line) <= width for line in text.splitlines())
    assert "\\x1b[2J\\x1b[31mred\\nsecond" in text
    assert "T-1" in text
    assert report_table(rows, width=80).splitlines()[0].split()[:3] == [
        "KEY",
        "SESS",
        "WALL",
    ]  # short headers


def tree():
    """root -> a -> a1, root -> b; a leaf elsewhere; a parent that is not there."""
    return [
        sess("root", usage=usage(1, 10, 100, 1.0, 1)),
        sess("a", parent_session_id="root", usage=usage(2, 20, 200, 2.0, 1)),
        sess("b", parent_session_id="root", ledger=[entry("m", i=4, o=40, cost=4.0)]),
        sess("a1", parent_session_id="a", usage=usage(8, 80, 800, 8.0, 1)),
        sess("lone", parent_session_id="missing", usage=usage(16)),
        sess("bare"),
    ]


def test_rollup_sums_each_session_and_its_descendants():
    totals = rollup(tree())
    assert set(totals) == {"root", "a", "b", "a1", "lone", "bare"}
    assert totals["root"] == {
        "sessions": 4,
        "input_tokens": 15,
        "output_tokens": 150,
        "cache_read_tokens": 1100,
        "calls": 4,
        "cost_usd": pytest.approx(15.0),
    }
    assert (totals["a"]["sessions"], totals["a"]["input_tokens"]) == (2, 10)
    assert (totals["a1"]["sessions"], totals["a1"]["input_tokens"]) == (1, 8)
    assert (totals["b"]["sessions"], totals["b"]["input_tokens"], totals["b"]["calls"]) == (1, 4, 1)
    assert (totals["lone"]["sessions"], totals["lone"]["input_tokens"]) == (1, 16)
    assert totals["bare"]["sessions"] == 1 and totals["bare"]["cost_usd"] == 0


def test_rollup_of_hostile_parent_cycles_ends_and_counts_each_session_once():
    sessions = [
        sess("x", parent_session_id="z", usage=usage(1)),
        sess("y", parent_session_id="x", usage=usage(2)),
        sess("z", parent_session_id="y", usage=usage(4)),  # x -> y -> z -> x
        sess("tail", parent_session_id="y", usage=usage(8)),  # hangs below the cycle
        sess("tail2", parent_session_id="tail", usage=usage(16)),
        sess("self", parent_session_id="self", usage=usage(32)),  # its own parent
        sess("p", parent_session_id="q", usage=usage(64)),
        sess("q", parent_session_id="p", usage=usage(128)),
    ]
    totals = rollup(sessions)
    for member in ("x", "y", "z"):
        assert (totals[member]["sessions"], totals[member]["input_tokens"]) == (5, 31)
    assert (totals["tail"]["sessions"], totals["tail"]["input_tokens"]) == (2, 24)
    assert totals["self"]["input_tokens"] == 32 and totals["self"]["sessions"] == 1
    assert totals["p"]["input_tokens"] == totals["q"]["input_tokens"] == 192


def test_rollup_of_a_long_chain_is_linear():
    n = 20_000
    chain = [sess(f"s{i}", parent_session_id=f"s{i - 1}" if i else None, usage=usage(1)) for i in range(n)]
    chain.append(sess("s0", parent_session_id=f"s{n - 1}", usage=usage(1)))  # the last s0 wins: a cycle
    totals = rollup(chain)
    assert totals["s0"]["sessions"] == n and totals[f"s{n // 2}"]["input_tokens"] == n
