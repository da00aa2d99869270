"""Usage and outcome reports over sessions: pure functions of session dicts, no git, no I/O.

A session dict is `Session.to_json()` plus optional keys (`usage`, `ledger`, `convoy_id`,
`parent_session_id`, `phase`, ...). Any key may be missing or None, and every value comes
from the log, so it is hostile: strings are never trusted to be short or printable, and a
number of the wrong type or out of range counts as missing (tokens, calls and cost as 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .render import money, table

Sess = Mapping[str, Any]

OUTCOMES = ("ok", "failed", "stopped", "timeout", "crash", "live")
USAGE_INTS = ("input_tokens", "output_tokens", "cache_read_tokens", "calls")
GROUPINGS = ("task", "convoy", "engine", "model", "day")
MAX_TS = 2**53  # larger times are not times (and would lose precision as floats)
MAX_COUNT = 2**63
MAX_COST = 1e12


def as_ts(value: object) -> int | None:
    """A time in ms, or None for anything else (bool, text, negative, absurdly large)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TS:
        return value
    return None


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT:
        return value
    return 0


def _cost(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    cost = float(value)
    return cost if math.isfinite(cost) and 0 <= cost <= MAX_COST else 0.0


def exited(s: Sess) -> bool:
    return s.get("status") == "exit"


def outcome(s: Sess) -> str:
    """live (not exited), ok (completed with 0), failed (completed otherwise, signal, or an
    exit with no known reason), stopped (user-stop), timeout or crash."""
    if not exited(s):
        return "live"
    reason = s.get("exit_reason")
    if reason == "completed":
        return "ok" if as_ts(s.get("exit_code")) == 0 else "failed"
    return {"user-stop": "stopped", "timeout": "timeout", "crash": "crash"}.get(
        reason if isinstance(reason, str) else "", "failed"
    )


def span(s: Sess, now_ms: int) -> tuple[int, int] | None:
    """(start, end) in ms: end is `updated_ts` for an exited session, now otherwise; never
    before the start. None when the start is unknown."""
    start = as_ts(s.get("started_ts"))
    if start is None:
        return None
    end = as_ts(s.get("updated_ts")) if exited(s) else now_ms
    return start, start if end is None else max(start, end)


def wall_ms(s: Sess, now_ms: int) -> int:
    times = span(s, now_ms)
    return 0 if times is None else times[1] - times[0]


def _zero() -> dict[str, Any]:
    return {**dict.fromkeys(USAGE_INTS, 0), "cost_usd": 0.0}


def _add(total: dict[str, Any], part: Mapping[str, Any]) -> None:
    for k in USAGE_INTS:
        total[k] += _count(part.get(k))
    total["cost_usd"] += _cost(part.get("cost_usd"))


def _ledger(s: Sess) -> list[Mapping[str, Any]]:
    entries = s.get("ledger")
    return [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def usage_of(s: Sess) -> dict[str, Any]:
    """A session's own totals: its `usage`, or else the sum of its `ledger`, or else zeros."""
    total = _zero()
    usage = s.get("usage")
    if isinstance(usage, Mapping):
        _add(total, usage)
    else:
        for entry in _ledger(s):
            _add(total, entry)
    return total


def key_text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _day(s: Sess) -> str:
    start = as_ts(s.get("started_ts"))
    if start is None:
        return "-"
    try:
        return datetime.fromtimestamp(start / 1000, tz=UTC).strftime("%Y-%m-%d")
    except (ValueError, OverflowError, OSError):
        return "-"


_FIELD = {"task": "task_id", "convoy": "convoy_id", "engine": "engine"}


def _parts(s: Sess, by: str) -> list[tuple[str, dict[str, Any]]]:
    """The (key, usage) pairs a session adds to: one, except by model (one per model used)."""
    if by == "day":
        return [(_day(s), usage_of(s))]
    if by == "all":
        return [("TOTAL", usage_of(s))]
    if by != "model":
        return [(key_text(s.get(_FIELD[by])), usage_of(s))]
    per_model: dict[str, dict[str, Any]] = {}
    for entry in _ledger(s):
        _add(per_model.setdefault(key_text(entry.get("model")), _zero()), entry)
    return list(per_model.items()) or [("-", usage_of(s))]


def aggregate(
    sessions: Iterable[Sess], by: str, now_ms: int, since_ms: int | None = None
) -> list[dict[str, Any]]:
    """One row per key, sorted by key: `key`, `sessions`, `wall_ms`, `outcomes` (a count per
    outcome in OUTCOMES), and the usage totals (`input_tokens`, `output_tokens`,
    `cache_read_tokens`, `calls`, `cost_usd`).

    `by` is task, convoy, engine, model or day (the UTC date of the start); a missing key is
    "-". With `since_ms`, sessions that started before it (or at no known time) are left out.

    By model, rows come from each session's `ledger`: a session counts once in every model
    row it used, with that model's tokens and cost and its *whole* wall time (so wall times
    and session counts add up to more than the sessions' own when sessions mix models).
    Sessions with no ledger go under "-" with their `usage`. `by="all"` gives one row,
    "TOTAL", that counts each session once (`totals`).
    """
    if by not in (*GROUPINGS, "all"):
        raise ValueError(f"cannot group by {by!r}; one of: {', '.join(GROUPINGS)}")
    rows: dict[str, dict[str, Any]] = {}
    for s in sessions:
        if since_ms is not None:
            start = as_ts(s.get("started_ts"))
            if start is None or start < since_ms:
                continue
        wall, result = wall_ms(s, now_ms), outcome(s)
        for key, usage in _parts(s, by):
            row = rows.get(key)
            if row is None:
                row = rows[key] = {
                    "key": key,
                    "sessions": 0,
                    "wall_ms": 0,
                    "outcomes": dict.fromkeys(OUTCOMES, 0),
                    **_zero(),
                }
            row["sessions"] += 1
            row["wall_ms"] += wall
            row["outcomes"][result] += 1
            _add(row, usage)
    return [rows[k] for k in sorted(rows)]


def duration(ms: int | None) -> str:
    """A duration for people, a little finer than `render.age`: 45s, 12m05s, 3h07m, 2d04h."""
    if ms is None:
        return "-"
    s = max(0, ms) // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


REPORT_HEADERS = (
    "KEY",
    "SESSIONS",
    "WALL",
    "OK",
    "FAILED",
    "STOPPED",
    "TIMEOUT",
    "CRASH",
    "LIVE",
    "TOKENS IN",
    "TOKENS OUT",
    "COST",
)
SHORT_HEADERS = ("KEY", "SESS", "WALL", "OK", "FAIL", "STOP", "T/O", "CRASH", "LIVE", "IN", "OUT", "COST")


def _line(key: str, row: Mapping[str, Any]) -> list[object]:
    return [
        key,
        row["sessions"],
        duration(row["wall_ms"]),
        *(row["outcomes"][o] for o in OUTCOMES),
        f"{row['input_tokens']:,}",
        f"{row['output_tokens']:,}",
        money(row["cost_usd"]),
    ]


def totals(sessions: Iterable[Sess], now_ms: int, since_ms: int | None = None) -> dict[str, Any]:
    """The TOTAL line: every session once (by model, the rows count a session that used
    two models in both), its usage its own totals."""
    rows = aggregate(sessions, "all", now_ms, since_ms)
    total = rows[0] if rows else {"key": "TOTAL", **total_row([])}
    total.pop("key")
    return total


def total_row(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of `aggregate` rows (by model, a session that used two models counts twice:
    `totals` counts it once)."""
    total: dict[str, Any] = {
        "sessions": 0,
        "wall_ms": 0,
        "outcomes": dict.fromkeys(OUTCOMES, 0),
        **_zero(),
    }
    for row in rows:
        for k in ("sessions", "wall_ms", *USAGE_INTS, "cost_usd"):
            total[k] += row[k]
        for o in OUTCOMES:
            total["outcomes"][o] += row["outcomes"][o]
    return total


def report_table(
    rows: Sequence[Mapping[str, Any]],
    width: int | None = None,
    total: Mapping[str, Any] | None = None,
    ids: bool = False,
) -> str:
    """`aggregate` rows as a table with a last TOTAL line (`total`, from `totals`: each
    session once; without it, the sum of the rows, where by model a session that used two
    models is in two rows and so counts twice). Every key is printed
    with control characters made visible. To fit `width`, keys are cut (to no fewer than 6
    characters; keys that are ids, with `ids`, keep their end, which tells them apart),
    then shorter headers are used (SESS, FAIL, STOP, T/O, IN, OUT); numbers
    are never cut, so very large ones can still make a line wider."""
    if not rows:
        return "no sessions"
    lines = [_line(str(row["key"]), row) for row in rows] + [_line("TOTAL", total or total_row(rows))]
    keep = (0,) if ids else ()
    text = table(REPORT_HEADERS, lines, width=width, flex=(0,), ids=keep)
    if width is not None and max(len(line) for line in text.splitlines()) > width:
        text = table(SHORT_HEADERS, lines, width=width, flex=(0,), ids=keep)
    return text


def rollup(sessions: Iterable[Sess]) -> dict[str, dict[str, Any]]:
    """For each session id: the usage totals of the session and all its descendants (by
    `parent_session_id`), and `sessions`, how many sessions that sums.

    One session per id (the last one given wins). Linear time; hostile parent cycles as in
    `subtree_totals`.
    """
    by_id: dict[str, Sess] = {}
    for s in sessions:
        sid = s.get("session_id")
        if sid is not None:
            by_id[str(sid)] = s
    parents = {sid: s.get("parent_session_id") for sid, s in by_id.items()}
    own = {sid: {"sessions": 1, **usage_of(s)} for sid, s in by_id.items()}
    return subtree_totals(parents, own)


def subtree_totals(
    parents: Mapping[str, object], own: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """For each id of `own`: its numbers summed key by key with those of every id below
    it (`parents` maps an id to its parent's). Linear time. Hostile data can make a cycle
    of parents: every id on a cycle is below every other, so each of them gets the same
    totals, the whole cycle and what hangs below it, each id once."""
    parent: dict[str, str] = {}
    for sid in own:
        p = parents.get(sid)
        if p is not None and str(p) in own and str(p) != sid:
            parent[sid] = str(p)

    # Each id has at most one parent, so every cycle is simple: collapse each to one group.
    group: dict[str, str] = {}
    for start in own:
        path: list[str] = []
        on_path: dict[str, int] = {}
        node: str | None = start
        while node is not None and node not in group and node not in on_path:
            on_path[node] = len(path)
            path.append(node)
            node = parent.get(node)
        if node is not None and node in on_path:  # a new cycle: path[i:]
            head = path[on_path[node]]
            for member in path[on_path[node] :]:
                group[member] = head
        for member in path:
            group.setdefault(member, member)

    totals: dict[str, dict[str, Any]] = {}
    for sid, numbers in own.items():
        t = totals.setdefault(group[sid], {})
        for k, v in numbers.items():
            t[k] = t.get(k, 0) + v
    up: dict[str, str] = {}  # group -> parent group (a cycle's group has none)
    for child, p in parent.items():
        if group[child] != group[p]:
            up[group[child]] = group[p]
    pending = dict.fromkeys(totals, 0)
    for g in up:
        pending[up[g]] += 1
    ready = [g for g, n in pending.items() if n == 0]
    while ready:  # leaves first: each group adds its finished totals to its parent's
        g = ready.pop()
        p = up.get(g)
        if p is not None:
            for k, v in totals[g].items():
                totals[p][k] = totals[p].get(k, 0) + v
            pending[p] -= 1
            if pending[p] == 0:
                ready.append(p)
    return {sid: dict(totals[group[sid]]) for sid in own}
