"""Sessions on a time axis: a text timeline for terminals and a self-contained HTML page.

Pure functions of session dicts (see `report`), no git, no I/O. Every value from the log
is hostile: in text it is shown with control characters made visible (`render.safe`) and
cut to its column; in HTML it is also escaped with `html.escape(..., quote=True)`. The
page has no script and refers to nothing outside itself (no URL, no font, no import).

Sessions with no known start time cannot be placed on the axis: they are left out, and a
note says how many.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .render import counted, cut, money, pad, paint, safe, when
from .report import Sess, as_ts, duration, exited, key_text, outcome, span, usage_of


@dataclass
class _Bar:
    """One session's bar in the timeline."""

    index: int  # position in the input: the last tie-breaker, for a deterministic order
    s: Sess
    sid: str
    task: str
    start: int
    end: int
    outcome: str
    depth: int = 0


def _bars(sessions: Iterable[Sess], now_ms: int) -> tuple[list[_Bar], int]:
    """The placeable sessions in tree order (by task, then start; children under their
    parent when it is in the same task) and how many could not be placed."""
    bars: list[_Bar] = []
    missing = 0
    for n, s in enumerate(sessions):
        times = span(s, now_ms)
        if times is None:
            missing += 1
            continue
        sid, task = key_text(s.get("session_id")), key_text(s.get("task_id"))
        bars.append(_Bar(n, s, sid, task, times[0], times[1], outcome(s)))
    bars.sort(key=lambda b: (b.task == "-", b.task, b.start, b.sid, b.index))
    ordered: list[_Bar] = []
    i = 0
    while i < len(bars):
        j = i
        while j < len(bars) and bars[j].task == bars[i].task:
            j += 1
        ordered += _tree(bars[i:j])
        i = j
    return ordered, missing


def _tree(lane: list[_Bar]) -> list[_Bar]:
    """One task's bars, each child right after its parent (depth-first), in start order.
    A visited set keeps hostile parent cycles from looping; a cycle's members become roots."""
    first: dict[str, _Bar] = {}
    for b in lane:
        first.setdefault(b.sid, b)
    children: dict[int, list[_Bar]] = {}
    roots: list[_Bar] = []
    for b in lane:
        p = first.get(key_text(b.s.get("parent_session_id")))
        if p is None or p is b:
            roots.append(b)
        else:
            children.setdefault(p.index, []).append(b)
    out: list[_Bar] = []
    seen: set[int] = set()

    def walk(root: _Bar) -> None:
        stack = [(root, 0)]
        while stack:
            b, depth = stack.pop()
            if b.index in seen:
                continue
            seen.add(b.index)
            b.depth = depth
            out.append(b)
            stack += [(c, depth + 1) for c in reversed(children.get(b.index, []))]

    for b in roots:
        walk(b)
    for b in lane:  # only members of parent cycles (and what hangs below them) are left
        walk(b)
    return out


def _axis(bars: Sequence[_Bar], now_ms: int) -> tuple[int, int]:
    """From the earliest start to now: a time after now (a skewed clock, or a forged time,
    which blocks may hold until 2200) stretches nothing; its bar is drawn at the end."""
    t0 = min(now_ms, *(b.start for b in bars))
    return t0, max(now_ms, t0 + 1)


# ----------------------------------------------------------------------------- text

MIN_BAR = 10  # columns a bar keeps before labels are cut
_TEXT_COLOUR = {"live": "green", "ok": "dim", "failed": "red", "timeout": "red", "crash": "red"}
_TEXT_COLOUR["stopped"] = "yellow"


def _fit(text: str, limit: int) -> str:
    """`text` cut to `limit` terminal columns and padded with spaces to exactly that."""
    return pad(cut(text, limit), limit) if limit > 0 else ""


def _short(ts: int, fmt: str = "%m-%d %H:%M") -> str:
    try:
        return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime(fmt)
    except (ValueError, OverflowError, OSError):
        return str(ts)


def timeline_text(sessions: Iterable[Sess], now_ms: int, width: int = 100, colour: bool = False) -> str:
    """One line per session: a label (indented session id and task) and a bar (`━`) on an
    axis shared by all, from the earliest start to max(now, latest end), then the outcome.
    A header line gives the axis's start and end. No line is wider than `width` columns
    (colour codes, with `colour`, take none)."""
    width = max(1, width)
    bars, missing = _bars(sessions, now_ms)
    if not bars:
        text = "no sessions" if not missing else f"no sessions with a start time ({missing})"
        return _fit(text, width).rstrip()
    t0, t1 = _axis(bars, now_ms)
    state_w = 7 if width >= 40 else 0
    room = width - (state_w + 1 if state_w else 0)  # for the label and the bar
    # ids are not cut: the labels get their room first (a bar keeps MIN_BAR columns),
    # without the task when even that is too little
    sid_w = max(len("SESSION"), *(len(safe(b.sid)) + 2 * min(b.depth, 8) for b in bars))
    with_task = sid_w + 2 + max(len("TASK"), *(len(safe(b.task)) for b in bars))
    free = room - 1 - MIN_BAR
    show_task = with_task <= free or sid_w > free  # (too narrow for whole ids: cut, as before)
    label_w = with_task if with_task <= free else sid_w if sid_w <= free else max(1, min(40, room // 3))
    bar_w = room - label_w - 1
    if bar_w < 4:  # too narrow for a bar: labels and outcomes only
        bar_w, label_w = 0, max(1, room)

    def line(label: str, middle: str, state: str, hue: str | None = None) -> str:
        parts = [_fit(label, label_w)]
        if bar_w:
            parts.append(paint(middle, hue) if hue else middle)
        if state_w:
            parts.append(paint(_fit(state, state_w), hue) if hue else _fit(state, state_w))
        return " ".join(parts).rstrip()

    header = "SESSION".ljust(sid_w) + "  TASK" if show_task else "SESSION"
    lines = []
    if bar_w:
        for fmt in (when, _short):
            first, last = fmt(t0), fmt(t1)
            if len(first) + len(last) + 3 <= bar_w:
                break
        fits = len(first) + len(last) + 3 <= bar_w
        axis = first + last.rjust(bar_w - len(first)) if fits else _fit(first, bar_w)
        lines.append(line(header, axis, "STATE"))
    else:
        lines.append(line(header, "", "STATE"))
    scale = bar_w / (t1 - t0)
    for b in bars:
        label = "  " * min(b.depth, 8) + safe(b.sid)
        label = f"{label.ljust(sid_w)}  {safe(b.task)}" if show_task else label
        middle = ""
        if bar_w:
            c0 = min(bar_w - 1, int((b.start - t0) * scale))
            c1 = max(c0 + 1, min(bar_w, math.ceil((b.end - t0) * scale)))
            middle = " " * c0 + "━" * (c1 - c0) + " " * (bar_w - c1)
        hue = _TEXT_COLOUR[b.outcome] if colour else None
        lines.append(line(label, middle, b.outcome, hue))
    if missing:
        lines.append(_fit(f"({missing} session(s) with no start time not shown)", width).rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HTML

WIDTH = 1200
LABEL_X = 10
PLOT_X0 = 300.0
PLOT_X1 = 1170.0
TOP = 84
ROW_H = 20
BAR_H = 12
LANE_GAP = 10
TICKS = 6
ATTR_LIMIT = 512  # columns of a value kept in an attribute (a wide character takes two)
TITLE_LIMIT = 300  # ... in a tooltip line
LABEL_CHARS = 44  # ... in a label (the label column is 290 px of 11 px monospace)

COLOURS = {
    "live": "#2f7fd8",
    "ok": "#3a9d5d",
    "failed": "#d64545",
    "stopped": "#8a8f98",
    "timeout": "#e09a2b",
    "crash": "#9b45c9",
}

_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: object, limit: int) -> str:
    """A value as escaped HTML text: controls made visible, lone surrogates replaced, cut
    to `limit` columns (a wide character takes two), then `html.escape(..., quote=True)` (safe in text and in
    double- or single-quoted attributes)."""
    text = cut(_SURROGATE.sub("\ufffd", safe(value)), limit)
    return html.escape(text, quote=True)


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _state(s: Sess, result: str) -> str:
    if not exited(s):
        return f"{safe(s.get('status'))} ({result})"
    code = s.get("exit_code")
    return f"exit: {safe(s.get('exit_reason'))}, code {safe(code)} ({result})"


def _tooltip(b: _Bar, now_ms: int) -> str:
    s = b.s
    use = usage_of(s)
    ended = f"{when(b.end)} ({duration(b.end - b.start)})" if exited(s) else None
    phase, it, its = s.get("phase"), as_ts(s.get("iteration")), as_ts(s.get("iterations"))
    lines = [
        ("session", safe(b.sid)),
        ("task", safe(b.task)),
        ("engine", safe(s.get("engine"))),
        ("role/type", f"{safe(s.get('role'))}/{safe(s.get('session_type'))}"),
        ("state", _state(s, b.outcome)),
        ("start", when(b.start)),
        ("end", ended or f"running, {duration(now_ms - b.start)} so far"),
    ]
    if phase is not None or it is not None:
        step = "-" if it is None else (f"{it}/{its}" if its is not None else str(it))
        lines.append(("phase", f"{safe(phase)}, iteration {step}"))
    lines += [
        (
            "tokens",
            f"{use['input_tokens']:,} in, {use['output_tokens']:,} out, "
            f"{use['cache_read_tokens']:,} cache read",
        ),
        ("cost", f"{money(use['cost_usd'])} ({counted(use['calls'], 'call')})"),
    ]
    for label, key in (("parent", "parent_session_id"), ("convoy", "convoy_id"), ("stop", "stop_cause")):
        if s.get(key) is not None:
            lines.append((label, safe(s.get(key))))
    return "\n".join(f"{label}: {_text(value, TITLE_LIMIT)}" for label, value in lines)


_STYLE = """
body { margin: 0; padding: 12px 16px; background: #fff; color: #222;
       font: 13px system-ui, sans-serif; }
h1 { font-size: 16px; margin: 0 0 4px 0; }
p.meta { margin: 0 0 8px 0; color: #555; }
svg { display: block; width: 100%; max-width: 1200px; height: auto; }
svg text { font: 11px ui-monospace, monospace; fill: #333; }
svg text.task { font-weight: bold; fill: #111; }
svg text.tick { fill: #666; }
svg text.legend { font: 12px system-ui, sans-serif; }
.lane { fill: #f4f5f7; }
.grid { stroke: #dde0e4; stroke-width: 1; }
.now { stroke: #2f7fd8; stroke-width: 1; stroke-dasharray: 4 3; }
.link { fill: none; stroke: #555; stroke-width: 1; opacity: 0.7; }
.bar { stroke: rgba(0, 0, 0, 0.25); stroke-width: 0.5; }
.bar:hover { stroke: #000; stroke-width: 1.5; }
""" + "".join(f".{name} {{ fill: {hue}; }}\n" for name, hue in COLOURS.items())


def timeline_html(sessions: Iterable[Sess], now_ms: int, title: str = "brat sessions") -> str:
    """One self-contained HTML page: an inline SVG with a lane per task, a bar per session
    (`<rect class="bar OUTCOME" data-session-id data-task-id data-outcome>`, its details
    in a `<title>` shown on hover) on a shared time axis with tick labels, and a
    `<path class="link" data-parent data-child>` from each parent to each child shown.
    Same input, same bytes."""
    bars, missing = _bars(sessions, now_ms)
    out: list[str] = []
    esc_title = _text(title, 200)
    rows: list[tuple[str, _Bar | str]] = []  # ("lane", task) or ("bar", bar)
    for n, b in enumerate(bars):
        if n == 0 or bars[n - 1].task != b.task:
            rows.append(("lane", b.task))
        rows.append(("bar", b))
    lanes = sum(1 for kind, _ in rows if kind == "lane")
    height = TOP + ROW_H * len(rows) + LANE_GAP * lanes + 20
    if bars:
        t0, t1 = _axis(bars, now_ms)
    else:
        t0, t1 = now_ms, now_ms + 1
    scale = (PLOT_X1 - PLOT_X0) / (t1 - t0)

    def x(t: int) -> float:
        return PLOT_X0 + (min(max(t, t0), t1) - t0) * scale

    counts = {o: sum(1 for b in bars if b.outcome == o) for o in COLOURS}
    out.append(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc_title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{esc_title}</h1>\n"
        f'<p class="meta">{len(bars)} session(s), {when(t0)} to {when(t1)}; now {when(now_ms)}'
        + (f"; {missing} session(s) with no start time not shown" if missing else "")
        + "</p>\n"
    )
    out.append(
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'data-t0="{t0}" data-t1="{t1}" data-x0="{_num(PLOT_X0)}" data-x1="{_num(PLOT_X1)}">\n'
        f"<title>{esc_title}</title>\n"
    )
    # legend
    lx = PLOT_X0
    for name in COLOURS:
        out.append(
            f'<rect class="{name}" x="{_num(lx)}" y="8" width="12" height="12"/>'
            f'<text class="legend" x="{_num(lx + 16)}" y="18">{name} ({counts[name]})</text>\n'
        )
        lx += 130
    # lanes, labels and bars, rows from top to bottom
    y = float(TOP)
    centre: dict[int, tuple[float, float, float]] = {}  # bar index -> (x, width, y centre)
    lane_parts: list[str] = []
    bar_parts: list[str] = []
    lane_top = y
    for n, (kind, item) in enumerate(rows):
        if kind == "lane":
            if n:
                y += LANE_GAP
            lane_top = y
            lane_rows = 1
            for k2, _ in rows[n + 1 :]:
                if k2 == "lane":
                    break
                lane_rows += 1
            task = item if isinstance(item, str) else "-"
            lane_parts.append(
                f'<rect class="lane" x="0" y="{_num(lane_top - 2)}" width="{WIDTH}" '
                f'height="{lane_rows * ROW_H + 4}" data-lane="{_text(task, ATTR_LIMIT)}"/>'
                f'<text class="task" x="{LABEL_X}" y="{_num(y + 14)}">'
                f"{'(no task)' if task == '-' else 'task ' + _text(task, LABEL_CHARS - 5)}</text>\n"
            )
        elif isinstance(item, _Bar):
            b = item
            bx, bw = x(b.start), max(1.0, (b.end - b.start) * scale)
            cy = y + ROW_H / 2
            centre[b.index] = (bx, bw, cy)
            indent = min(b.depth, 8)
            lane_parts.append(
                f'<text x="{LABEL_X + 12 + 12 * indent}" y="{_num(y + 14)}">'
                f"{_text(b.sid, LABEL_CHARS - 2 * indent)}</text>\n"
            )
            bar_parts.append(
                f'<rect class="bar {b.outcome}" x="{_num(bx)}" y="{_num(cy - BAR_H / 2)}" '
                f'width="{_num(bw)}" height="{BAR_H}" rx="2" '
                f'data-session-id="{_text(b.sid, ATTR_LIMIT)}" data-task-id="{_text(b.task, ATTR_LIMIT)}" '
                f'data-outcome="{b.outcome}"><title>{_tooltip(b, now_ms)}</title></rect>\n'
            )
        y += ROW_H
    out += lane_parts
    # ticks and grid lines over the lanes, under the bars
    bottom = y
    step = (t1 - t0) / (TICKS - 1)  # fine enough that neighbouring ticks read differently
    fmt = "%H:%M:%S" if step < 60_000 else "%m-%d %H:%M" if step < 86_400_000 else "%Y-%m-%d"
    for i in range(TICKS):
        t = t0 + (t1 - t0) * i // (TICKS - 1)
        tx = x(t)
        anchor = "start" if i == 0 else "end" if i == TICKS - 1 else "middle"
        out.append(
            f'<line class="grid" x1="{_num(tx)}" y1="{TOP - 10}" x2="{_num(tx)}" y2="{_num(bottom)}"/>'
            f'<text class="tick" x="{_num(tx)}" y="{TOP - 14}" text-anchor="{anchor}">'
            f"{_short(t, fmt)}</text>\n"
        )
    if t0 <= now_ms <= t1:
        nx = x(now_ms)
        out.append(
            f'<line class="now" x1="{_num(nx)}" y1="{TOP - 10}" x2="{_num(nx)}" y2="{_num(bottom)}"/>'
            f'<text class="tick" x="{_num(nx - 4)}" y="{TOP - 28}" text-anchor="end">now</text>\n'
        )
    # parent -> child links: down from the parent's bar (at the child's start, within the
    # parent's bar), then across to the child's start
    first: dict[str, _Bar] = {}
    for b in bars:
        first.setdefault(b.sid, b)
    for b in bars:
        p = first.get(key_text(b.s.get("parent_session_id")))
        if p is None or p is b:
            continue
        px, pw, py = centre[p.index]
        cx, _, cy = centre[b.index]
        fx = min(max(cx, px), px + pw)
        out.append(
            f'<path class="link" d="M{_num(fx)},{_num(py)} V{_num(cy)} H{_num(cx)}" '
            f'data-parent="{_text(p.sid, ATTR_LIMIT)}" data-child="{_text(b.sid, ATTR_LIMIT)}"/>\n'
        )
    out += bar_parts
    out.append("</svg>\n</body>\n</html>\n")
    return "".join(out)
