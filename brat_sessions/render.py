"""Plain-text rendering of sessions, tasks and reports for people."""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .issues.projection import Issue
    from .sessions.model import Session
    from .sessions.projection import BlockRecord


# C0 and C1 controls, DEL, line and paragraph separators, bidi and zero-width format
# characters: anything that could move the cursor, end a line or reorder what is shown;
# and characters that show nothing where a reader expects something: the soft hyphen,
# the combining grapheme joiner, the Arabic letter mark, the Khmer inherent vowels, the
# Mongolian vowel separator, Hangul fillers, the deprecated format characters
# (U+206A-206F), interlinear annotation marks, musical format characters and tags.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\u3164\ufeff\uffa0\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e007f]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(m: re.Match[str]) -> str:
    ch = m.group(0)
    code = ord(ch)
    return _NAMED.get(ch) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    )


def safe(value: object) -> str:
    """Text from the log as a terminal may show it: control characters made visible
    (`\\x1b`, `\\n`, ...), so no value can change the screen or add a line to a table."""
    text = "-" if value is None else str(value)
    return _UNSAFE.sub(_visible, text)


def age(ms: int | None) -> str:
    """How long ago, for people: 45s, 12m, 3h, 2d; "future" for a time still to come (a
    skewed clock, or a forged time)."""
    if ms is None:
        return "-"
    if ms < 0:
        return "future"
    s = ms // 1000
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def ago(ms: int | None) -> str:
    """`age` as a phrase: "12m ago", or "in the future"."""
    return "in the future" if ms is not None and ms < 0 else f"{age(ms)} ago"


def when(ts: int | None) -> str:
    """A time for people; any integer is shown, however far out of range."""
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return f"{ts} ms (out of range)"


ELLIPSIS = "…"
TREE_DEPTH = 100  # levels of a session tree drawn (or nested in JSON) below one root
MIN_CUT = 6  # a cut column keeps at least this many characters
_COLOURS = {"green": "32", "yellow": "33", "red": "31", "dim": "2"}


def char_columns(ch: str) -> int:
    """Terminal columns one character takes: two for a wide one (CJK, most emoji), none
    for a mark, a format character or a Hangul vowel or final consonant that joins the one
    before (as wcwidth counts them)."""
    if unicodedata.category(ch) in ("Mn", "Me", "Cf") or "\u1160" <= ch <= "\u11ff":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def columns(text: str) -> int:
    """Terminal columns `text` takes."""
    return len(text) if text.isascii() else sum(char_columns(c) for c in text)


def cut(text: str, limit: int, keep_end: bool = False) -> str:
    """`text` in at most `limit` terminal columns, `…` marking what was cut (at the start
    with `keep_end`: ids differ at their end, `…1124-0c26`)."""
    if columns(text) <= limit:
        return text
    room, used, n = max(0, limit - 1), 0, 0
    chars = text[::-1] if keep_end else text
    while n < len(chars) and used + char_columns(chars[n]) <= room:
        used += char_columns(chars[n])
        n += 1
    return ELLIPSIS + text[len(text) - n :] if keep_end else text[:n] + ELLIPSIS


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` terminal columns."""
    return text + " " * max(0, width - columns(text))


def paint(text: str, colour: str | None) -> str:
    return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m" if colour else text


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    width: int | None = None,
    flex: Sequence[int] = (),
    colour_col: int | None = None,
    colours: Sequence[str | None] = (),
    ids: Sequence[int] = (),
    optional: Sequence[int] = (),
) -> str:
    """Aligned columns. With `width`, the `flex` columns (in that order) are cut, with `…`,
    until a row fits (the `ids` columns keep their end), then the `optional` columns (in
    that order) are left out until it fits; `colours` paints column `colour_col` of each
    row (after padding)."""
    cells = [[safe(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(columns(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    if width is not None:

        def excess() -> int:
            shown = [w for i, w in enumerate(widths) if i not in dropped]
            return sum(shown) + 2 * (len(shown) - 1) - width

        dropped: set[int] = set()
        for col in flex:
            if excess() <= 0:
                break
            widths[col] = max(MIN_CUT, len(headers[col]), widths[col] - excess())
        for col in optional:
            if excess() <= 0:
                break
            dropped.add(col)
        if dropped:
            kept = [i for i in range(len(headers)) if i not in dropped]
            headers, widths = [headers[i] for i in kept], [widths[i] for i in kept]
            cells = [[r[i] for i in kept] for r in cells]
            ids = [kept.index(i) for i in ids if i in kept]
            colour_col = kept.index(colour_col) if colour_col in kept else None
    lines = ["  ".join(pad(cut(h, w), w) for h, w in zip(headers, widths)).rstrip()]
    for n, r in enumerate(cells):
        parts = [pad(cut(c, w, i in ids), w) for i, (c, w) in enumerate(zip(r, widths))]
        if colour_col is not None and n < len(colours) and colours[n]:
            parts[colour_col] = paint(parts[colour_col], colours[n])
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def state_of(s: Session, now: int, stale_after_ms: int | None = None) -> tuple[str, str | None]:
    """A compact state and its colour: live (green), stale (yellow), exited ok (dim) or not (red).

    Exited sessions read like docker's: `ok 2m ago`, `exit 3 5m ago`, `signal 9 1h ago`,
    `stopped`, `timeout`, `crash`."""
    if not s.exited:
        last = s.last_sign_of_life(now)
        if stale_after_ms is not None and (last is None or now - last > stale_after_ms):
            return f"{s.status} (stale)", "yellow"
        return s.status, "green"
    code = s.exit_code
    words = {"user-stop": "stopped", "timeout": "timeout", "crash": "crash"}
    if s.exit_reason == "completed":
        text = "ok" if code == 0 else f"exit {code}"
    elif s.exit_reason == "signal" and isinstance(code, int):
        text = f"signal {code - 128}"
    else:
        text = words.get(s.exit_reason or "", s.exit_reason or "exit")
    ok = s.exit_reason == "completed" and code == 0
    return f"{text} {ago(now - s.updated_ts)}" if s.updated_ts else text, "dim" if ok else "red"


def progress_of(s: Session) -> str:
    """`tests 2/5` from a session's phase and iteration ('' when it reported none)."""
    parts = [s.phase or ""]
    if s.iteration is not None:
        parts.append(f"{s.iteration}/{s.iterations}" if s.iterations is not None else str(s.iteration))
    return " ".join(p for p in parts if p)


def counted(n: int, word: str) -> str:
    """`1 commit`, `2 commits` (thousands separated)."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def money(cost: float) -> str:
    """A cost in USD for people: `$0.0123`."""
    return f"${cost:.4f}"


def tokens_text(usage: dict[str, int] | None) -> str:
    """`12.3k tok $0.0400` for usage totals ('' when none)."""
    if not usage:
        return ""
    n = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
    short = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)
    return f"{short} tok {money(int(usage.get('cost_usd_micros', 0)) / 1e6)}"


def sessions_table(
    sessions: list[Session],
    now: int,
    *,
    width: int | None = None,
    colour: bool = False,
    stale_after_ms: int | None = None,
    bare: Sequence[dict[str, Any]] = (),
) -> str:
    """Sessions as a table; `bare` rows are sessions whose blocks cannot be read (shown as
    `unreadable`, with the reason in the ENGINE column)."""
    if not sessions and not bare:
        return "no sessions"
    with_phase = any(s.phase or s.iteration is not None for s in sessions)
    rows, colours = [], []
    for s in sessions:
        state, hue = state_of(s, now, stale_after_ms)
        row = [
            s.session_id,
            s.task_id or s.grite_issue_id[:12],
            f"{s.role}/{s.session_type}",
            s.engine,
            state,
            s.pid,
            age(now - s.started_ts),
            age(s.heartbeat_age_ms(now)) if s.last_heartbeat_ts is not None else "never",
        ]
        if with_phase:
            row.append(progress_of(s))
        rows.append(row)
        colours.append(hue if colour else None)
    for b in bare:
        task = b["task_id"] or (b["grite_issue_id"] or "")[:12]
        rows.append([b["session_id"], task, "-", b["reason"], "unreadable", "-", "-", "-"])
        rows[-1] += [""] if with_phase else []
        colours.append("red" if colour else None)
    headers = ["SESSION", "TASK", "ROLE/TYPE", "ENGINE", "STATE", "PID", "STARTED", "HEARTBEAT"]
    flex: tuple[int, ...] = (2, 3)  # (ids are never cut: they are copied)
    if with_phase:
        headers.append("PHASE")
        flex = (8, 2, 3)
    return table(headers, rows, width=width, flex=flex, colour_col=4, colours=colours, optional=(5, 6))


def walk_trees(
    roots: list[Session], children: dict[str, list[Session]]
) -> Iterator[tuple[Session, Session | None, bool]]:
    """Each session of the trees below `roots`, parents first: (the session, its parent in
    the tree or None when it starts one, whether it is its parent's last child). A loop,
    not recursion: a chain of sessions may be as deep as the log makes it. A cycle in
    hostile data is cut (each session comes once), and a session TREE_DEPTH levels down
    starts a tree of its own, after the others (a chain of 8,000 drew 192 MB of indents)."""
    seen = {r.session_id for r in roots}
    starts = deque(roots)
    while starts:
        stack: list[tuple[Session, Session | None, bool, int]] = [(starts.popleft(), None, False, 0)]
        while stack:
            s, parent, last, depth = stack.pop()
            yield s, parent, last
            kids = children.get(s.session_id, [])
            below = []
            for n, kid in enumerate(kids):
                if kid.session_id in seen:
                    continue
                seen.add(kid.session_id)
                if depth + 1 >= TREE_DEPTH:
                    starts.append(kid)
                else:
                    below.append((kid, s, n == len(kids) - 1, depth + 1))
            stack.extend(reversed(below))


def session_tree(
    roots: list[Session],
    children: dict[str, list[Session]],
    now: int,
    rollups: dict[str, dict[str, int]],
    *,
    colour: bool = False,
    stale_after_ms: int | None = None,
    width: int | None = None,
) -> str:
    """Sessions as a tree, one row each: state, duration and the usage of each subtree."""
    rows: list[list[object]] = []
    colours: list[str | None] = []
    below: dict[str, str] = {}  # the indent of a session's children
    for s, parent, last in walk_trees(roots, children):
        prefix = "" if parent is None else below[parent.session_id]
        branch = "" if parent is None else "└─ " if last else "├─ "
        below[s.session_id] = prefix + ("" if parent is None else "   " if last else "│  ")
        state, hue = state_of(s, now, stale_after_ms)
        end = s.updated_ts if s.exited else now
        rows.append(
            [
                prefix + branch + safe(s.session_id),
                state,
                age(max(0, end - s.started_ts)),
                s.engine,
                tokens_text(rollups.get(s.session_id)),
                progress_of(s),
            ]
        )
        colours.append(hue if colour else None)
    if not rows:
        return "no sessions"
    return table(
        ["SESSION", "STATE", "TIME", "ENGINE", "USAGE (TREE)", "PHASE"],
        rows,
        width=width,
        flex=(5, 3),
        colour_col=1,
        colours=colours,
    )


def _fields(pairs: Sequence[tuple[str, object]]) -> list[str]:
    return [f"{name:<12} {safe(value)}" for name, value in pairs]


def session_detail(s: Session, history: list[BlockRecord], now: int) -> str:
    beat = (
        f"{when(s.last_heartbeat_ts)} ({ago(s.heartbeat_age_ms(now))})"
        if s.last_heartbeat_ts is not None
        else "never"
    )
    lines = _fields(
        [
            ("session", s.session_id),
            ("task", s.task_id),
            ("grite issue", s.grite_issue_id),
            ("role/type", f"{s.role}/{s.session_type}"),
            ("engine", s.engine),
            ("state", s.status),
            ("worktree", s.worktree or "(main)"),
            ("host", s.host),
            ("pid", s.pid),
            ("started", when(s.started_ts)),
            ("heartbeat", beat),
        ]
    )
    if s.future_ts is not None:
        lines.append(f"{'warning':<12} a time in the future ({when(s.future_ts)}) is ignored")
    if s.exited:
        lines += _fields(
            [
                (
                    "exit",
                    f"{s.exit_reason or 'no reason'} (code {'-' if s.exit_code is None else s.exit_code})"
                    + (f", cause {s.stop_cause}" if s.stop_cause else ""),
                ),
                ("exited", f"{when(s.updated_ts)} ({ago(now - s.updated_ts)})"),
                ("output", s.last_output_ref),
            ]
        )
    if s.parent_session_id or s.root_session_id:
        lines += _fields(
            [("parent", s.parent_session_id), ("root", s.root_session_id), ("depth", s.spawn_depth)]
        )
    if s.resumed_from:
        lines += _fields([("resumed from", s.resumed_from)])
    if s.git_head:
        lines += _fields([("git head", s.git_head)])
    if s.phase or s.iteration is not None:
        lines += _fields([("phase", progress_of(s))])
    if s.last_activity_ts:
        lines += _fields([("activity", f"{when(s.last_activity_ts)} ({ago(now - s.last_activity_ts)})")])
    if s.usage or s.budget_tokens is not None:
        lines += _fields(
            [
                (
                    "usage",
                    f"{tokens_text(s.usage) or 'none'} in {counted((s.usage or {}).get('calls', 0), 'call')}"
                    + (f" (budget {s.budget_tokens} tok)" if s.budget_tokens else ""),
                )
            ]
        )
    if s.conflicts:
        lines.append(f"conflicts    {s.conflicts} block(s) on other issues ignored (brat sessions doctor)")
    lines += ["", "history:"]
    rows = [
        [
            when(b.ts),
            b.actor[:8],
            b.fields.get("state"),
            b.fields.get("pid"),
            b.fields.get("exit_code"),
            b.fields.get("exit_reason"),
            "" if b.issue_id == s.grite_issue_id else "ignored: other issue",
        ]
        for b in history
    ]
    lines.append(table(["TIME", "ACTOR", "STATE", "PID", "CODE", "REASON", ""], rows))
    return "\n".join(lines)


def tasks_table(
    tasks: list[Issue],
    newest: dict[str, tuple[str, str | None, int | None, str, str]],
    *,
    width: int | None = None,
) -> str:
    """Tasks with the state of each one's newest session (from its blocks, never labels)."""
    if not tasks:
        return "no tasks"
    rows = []
    for t in tasks:
        latest = newest.get(t.issue_id)
        if latest is None:
            session = "-"
        elif latest[0] != "exit":
            session = f"{latest[0]}/{latest[3]}"
        else:
            session = {
                "completed": "ok" if latest[2] == 0 else f"exit {latest[2]}",
                "user-stop": "stopped",
            }.get(latest[1] or "", latest[1] or "exit")
        rows.append([t.task_id, t.label_value("status"), session, t.label_value("convoy"), t.title])
    return table(["TASK", "STATUS", "SESSION", "CONVOY", "TITLE"], rows, width=width, flex=(4, 3), ids=(3,))


def task_detail(
    t: Issue,
    sessions: list[Session],
    now: int,
    *,
    width: int | None = None,
    colour: bool = False,
    stale_after_ms: int | None = None,
    bare: Sequence[dict[str, Any]] = (),
) -> str:
    lines = _fields(
        [
            ("task", t.task_id),
            ("grite issue", t.issue_id),
            ("title", t.title),
            ("state", t.state),
            ("labels", ", ".join(t.labels)),
            ("created", when(t.created_ts)),
        ]
    )
    if t.body:
        lines += [""] + [safe(line) for line in t.body.split("\n")]
    listed = sessions_table(
        sessions, now, width=width, colour=colour, stale_after_ms=stale_after_ms, bare=bare
    )
    lines += ["", listed]
    return "\n".join(lines)
