"""The text and HTML timelines (brat_sessions/timeline.py): pure functions of session dicts."""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brat_sessions.render import safe, when
from brat_sessions.report import aggregate, report_table, rollup
from brat_sessions.timeline import timeline_html, timeline_text

from .test_report import MIN, T0, entry, sess, usage

NOW = T0 + 100 * MIN
ANSI = re.compile("\x1b\\[[0-9;]*m")


def columns(line: str) -> int:
    """Terminal columns, as wcwidth counts them (marks and format characters take none)."""
    line = ANSI.sub("", line)
    return sum(
        0
        if unicodedata.category(c) in ("Mn", "Me", "Cf") or "\u1160" <= c <= "\u11ff"
        else 2
        if unicodedata.east_asian_width(c) in "WF"
        else 1
        for c in line
    )


def family() -> list[dict]:
    """Two tasks; in T-1 a three-level tree, started out of order in the list."""
    return [
        sess(
            "s-4", task_id="T-2", start=T0 + 50 * MIN, reason="user-stop", end=T0 + 60 * MIN, engine="claude"
        ),
        sess("s-3", start=T0 + 30 * MIN, parent_session_id="s-2"),  # live, grandchild of s-1
        sess(
            "s-2",
            start=T0 + 10 * MIN,
            reason="completed",
            exit_code=3,
            end=T0 + 40 * MIN,
            parent_session_id="s-1",
        ),
        sess(
            "s-1",
            start=T0,
            reason="completed",
            end=T0 + 80 * MIN,
            phase="review",
            iteration=2,
            iterations=5,
            usage=usage(1234, 567, 89, 0.0123, 7),
            role="witness",
            session_type="crew",
        ),
        sess("s-5", task_id="T-2", start=T0 + 20 * MIN, reason="timeout", end=T0 + 25 * MIN),
        sess("s-6", task_id=None, start=T0 + 5 * MIN, reason="crash", end=T0 + 6 * MIN),
        sess("s-7", task_id="T-2", start=T0 + 70 * MIN, reason="signal", exit_code=137, end=T0 + 71 * MIN),
    ]


# ----------------------------------------------------------------------------- text


def test_text_orders_by_task_then_start_with_children_under_parents():
    lines = timeline_text(family(), NOW, width=100).splitlines()
    assert lines[0].startswith("SESSION  TASK")
    assert when(T0) in lines[0] and when(NOW) in lines[0]
    labels = [re.match(r" *\S+", line).group() for line in lines[1:]]
    assert labels == ["s-1", "  s-2", "    s-3", "s-5", "s-4", "s-7", "s-6"]
    states = [line.split()[-1] for line in lines[1:]]
    assert states == ["ok", "failed", "live", "timeout", "stopped", "failed", "crash"]


def test_text_bars_sit_on_a_shared_axis():
    text = timeline_text(family(), NOW, width=100)
    lines = text.splitlines()
    axis_start = lines[0].index(when(T0))
    axis_end = lines[0].index(when(NOW)) + len(when(NOW))  # exclusive
    bar_w = axis_end - axis_start
    for line in lines[1:]:
        sid = line.split()[0]
        s = next(s for s in family() if s["session_id"] == sid)
        first, last = line.index("━"), line.rindex("━") + 1
        end = s["updated_ts"] if s["status"] == "exit" else NOW
        assert abs((first - axis_start) - (s["started_ts"] - T0) / (NOW - T0) * bar_w) <= 1
        assert abs((last - axis_start) - (end - T0) / (NOW - T0) * bar_w) <= 1
        assert line[first:last] == "━" * (last - first)


def test_text_lines_never_exceed_the_width():
    hostile = [
        *family(),
        sess("x" * 10_000, task_id="漢字" * 3000, start=T0 + MIN, parent_session_id="s-1"),
        sess("e\u0301" * 500, task_id="\x1b[2J\n\u202e" * 100, start=T0 + 2 * MIN),
    ]
    for width in [*range(1, 60), 80, 100, 133, 200]:
        for colour in (False, True):
            text = timeline_text(hostile, NOW, width=width, colour=colour)
            assert len(text.splitlines()) == len(hostile) + 1, width
            for line in text.splitlines():
                assert columns(line) <= width, (width, line)
            assert "\u202e" not in text and "\x1b[2J" not in text
            assert colour or "\x1b" not in text


def test_text_colours_only_when_asked():
    assert "\x1b[" not in timeline_text(family(), NOW)
    coloured = timeline_text(family(), NOW, colour=True)
    assert "\x1b[32m" in coloured and "\x1b[31m" in coloured  # live green, failed red
    plain = timeline_text(family(), NOW).splitlines()
    assert [line.rstrip() for line in ANSI.sub("", coloured).splitlines()] == plain


def test_text_without_sessions_or_start_times():
    assert timeline_text([], NOW) == "no sessions"
    assert "no sessions with a start time (1)" in timeline_text([sess("a", start=None)], NOW)
    text = timeline_text([sess("a"), sess("b", start="soon")], NOW)
    assert text.splitlines()[-1] == "(1 session(s) with no start time not shown)"


# ----------------------------------------------------------------------------- HTML


class Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rects: list[dict] = []
        self.links: list[dict] = []
        self.svg: dict = {}
        self.titles: dict[int, str] = {}  # rect number -> its <title> text
        self._in_rect_title: int | None = None
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "svg":
            self.svg = a
        if tag == "rect" and "data-session-id" in a:
            self.rects.append(a)
        if tag == "path" and "data-parent" in a:
            self.links.append(a)
        if tag == "title" and self._open and self._open[-1] == "rect" and self.rects:
            self._in_rect_title = len(self.rects) - 1
            self.titles[self._in_rect_title] = ""
        if tag not in ("meta", "path", "line"):
            self._open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in ("meta", "path", "line"):
            self._open.pop()

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_rect_title = None
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._in_rect_title is not None:
            self.titles[self._in_rect_title] += data


def rect_of(page: Page, sid: str) -> tuple[dict, str]:
    (n,) = [i for i, r in enumerate(page.rects) if r["data-session-id"] == sid]
    return page.rects[n], page.titles[n]


def test_html_has_one_bar_per_session_on_a_shared_axis():
    sessions = family()
    page = Page(timeline_html(sessions, NOW))
    assert sorted(r["data-session-id"] for r in page.rects) == sorted(s["session_id"] for s in sessions)
    t0, t1 = int(page.svg["data-t0"]), int(page.svg["data-t1"])
    x0, x1 = float(page.svg["data-x0"]), float(page.svg["data-x1"])
    assert (t0, t1) == (T0, NOW)
    for s in sessions:
        rect, _ = rect_of(page, s["session_id"])
        end = s["updated_ts"] if s["status"] == "exit" else NOW
        assert abs(float(rect["x"]) - (x0 + (s["started_ts"] - t0) / (t1 - t0) * (x1 - x0))) <= 1
        assert abs(float(rect["width"]) - (end - s["started_ts"]) / (t1 - t0) * (x1 - x0)) <= 1
        assert rect["data-task-id"] == (s["task_id"] or "-")
    assert abs(float(rect_of(page, "s-1")[0]["x"]) - x0) <= 0.01
    live = rect_of(page, "s-3")[0]
    assert abs(float(live["x"]) + float(live["width"]) - x1) <= 0.01


def test_html_outcome_classes_and_attributes():
    page = Page(timeline_html(family(), NOW))
    expected = {
        "s-1": "ok",
        "s-2": "failed",
        "s-3": "live",
        "s-4": "stopped",
        "s-5": "timeout",
        "s-6": "crash",
        "s-7": "failed",
    }
    for sid, result in expected.items():
        rect, _ = rect_of(page, sid)
        assert rect["data-outcome"] == result
        assert rect["class"].split() == ["bar", result]


def test_html_links_each_parent_to_each_child_shown():
    sessions = [*family(), sess("orphan", parent_session_id="not-here"), sess("me", parent_session_id="me")]
    page = Page(timeline_html(sessions, NOW))
    assert sorted((link["data-parent"], link["data-child"]) for link in page.links) == [
        ("s-1", "s-2"),
        ("s-2", "s-3"),
    ]
    # a link goes from the parent's row down to the child's start
    link = next(link for link in page.links if link["data-child"] == "s-3")
    child = rect_of(page, "s-3")[0]
    assert link["d"].endswith(f"H{child['x']}")


def test_html_title_holds_the_details():
    page = Page(timeline_html(family(), NOW))
    _, title = rect_of(page, "s-1")
    for part in (
        "session: s-1",
        "task: T-1",
        "engine: codex",
        "role/type: witness/crew",
        "state: exit: completed, code 0 (ok)",
        f"start: {when(T0)}",
        f"end: {when(T0 + 80 * MIN)} (1h20m)",
        "phase: review, iteration 2/5",
        "tokens: 1,234 in, 567 out, 89 cache read",
        "cost: $0.0123 (7 calls)",
    ):
        assert part in title.splitlines(), (part, title)
    _, live = rect_of(page, "s-3")
    assert "end: running, 1h10m so far" in live.splitlines()
    assert "parent: s-2" in live.splitlines()
    assert "state: running (live)" in live.splitlines()


def test_html_is_self_contained_without_script_or_urls():
    text = timeline_html(family(), NOW)
    lowered = text.lower()
    for bad in ("<script", "http", "//", "@import", "url(", "href", "src=", "@font-face", "javascript:"):
        assert bad not in lowered, bad
    page = Page(text)
    assert "script" not in page.tags
    assert page.tags.count("svg") == 1 and page.tags.count("style") == 1
    assert set(page.tags) <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "p",
        "svg",
        "rect",
        "text",
        "line",
        "path",
    }


def test_html_is_deterministic():
    sessions = family()
    assert timeline_html(sessions, NOW) == timeline_html([dict(s) for s in sessions], NOW)
    assert timeline_html(sessions, NOW) == timeline_html(list(reversed(sessions)), NOW)


def test_hostile_values_appear_only_escaped():
    evil_engine = "</title><script>alert(1)</script>"
    evil_id = "q\"uo'te<b>&amp;"
    evil_task = "\x1b[31m\u202etask\n<style>*{}</style>"
    sessions = [
        *family(),
        sess(evil_id, engine=evil_engine, task_id=evil_task, role='" onmouseover="x', phase="<i>" * 5000),
        sess("kid", parent_session_id=evil_id, task_id=evil_task, start=T0 + 3 * MIN),
    ]
    text = timeline_html(sessions, NOW, title="<script>t</script>")
    for raw in (evil_engine, evil_id, "<script", "<b>", "<i>", '" onmouseover', "\x1b", "\u202e", "<style>*"):
        assert raw not in text, raw
    assert "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "q&quot;uo&#x27;te&lt;b&gt;&amp;amp;" in text
    page = Page(text)
    assert "script" not in page.tags and page.tags.count("style") == 1
    assert len(page.rects) == len(sessions)
    rect, title = rect_of(page, evil_id)  # the attribute, parsed, is the id itself
    assert rect["data-task-id"] == safe(evil_task)
    assert f"engine: {evil_engine}" in title.splitlines()
    assert len(title) < 5000  # long values are cut
    assert ("q\"uo'te<b>&amp;", "kid") in [(link["data-parent"], link["data-child"]) for link in page.links]


def test_html_without_placeable_sessions():
    page = Page(timeline_html([sess("a", start=None)], NOW))
    assert page.rects == []
    assert "1 session(s) with no start time not shown" in timeline_html([sess("a", start=None)], NOW)
    assert Page(timeline_html([], NOW)).rects == []


# ----------------------------------------------------------------------------- arbitrary input

STRING_FIELDS = (
    "session_id",
    "task_id",
    "grite_issue_id",
    "role",
    "session_type",
    "engine",
    "status",
    "exit_reason",
    "convoy_id",
    "parent_session_id",
    "root_session_id",
    "phase",
    "stop_cause",
)
any_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),  # any code point, lone surrogates too
    st.sampled_from(
        ["</title><script>alert(1)</script>", "<svg onload=x>", "]]>", "&#x3c;", "'\"", "-->", ""]
    ),
    st.text(st.sampled_from("<>&\"'/\\\x00\x1b\n\u202e=ab"), max_size=30),
)


@st.composite
def arbitrary_session(draw) -> dict:
    s = sess("x", start=T0 + draw(st.integers(0, 200)) * MIN)
    for key in STRING_FIELDS:
        s[key] = draw(st.one_of(st.none(), any_text))
    if draw(st.booleans()):
        s["status"] = "exit"
        s["updated_ts"] = s["started_ts"] + draw(st.integers(-10, 300)) * MIN
    s["ledger"] = [entry(draw(any_text), i=5), {"model": draw(any_text), "source": draw(any_text)}]
    return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions=st.lists(arbitrary_session(), max_size=8), width=st.integers(1, 160))
def test_arbitrary_text_never_breaks_the_page(sessions, width):
    text = timeline_html(sessions, NOW)
    text.encode("utf-8")  # no lone surrogate reaches the file
    assert "<script" not in text.lower()
    page = Page(text)
    assert len(page.rects) == len(sessions)
    assert len(page.titles) == len(sessions)
    assert page.tags.count("svg") == 1 and "script" not in page.tags
    assert {r["data-outcome"] for r in page.rects} <= {"live", "ok", "failed", "stopped", "timeout", "crash"}
    lines = timeline_text(sessions, NOW, width=width, colour=True).splitlines()
    assert len(lines) == len(sessions) + 1 if sessions else len(lines) == 1
    assert all(columns(line) <= width for line in lines)
    for by in ("task", "convoy", "engine", "model", "day"):
        report_table(aggregate(sessions, by, NOW, since_ms=T0 + 10 * MIN), width=width)
    rollup(sessions)


ANY_FIELDS = [
    *STRING_FIELDS,
    "started_ts",
    "updated_ts",
    "exit_code",
    "usage",
    "ledger",
    "iteration",
    "iterations",
]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions=st.lists(st.dictionaries(st.sampled_from(ANY_FIELDS), junk), max_size=6))
def test_values_of_any_type_never_raise(sessions):
    page = Page(timeline_html(sessions, NOW))
    placeable = [s for s in sessions if type(s.get("started_ts")) is int and 0 <= s["started_ts"] <= 2**53]
    assert len(page.rects) == len(placeable)
    timeline_text(sessions, NOW)
    for by in ("task", "convoy", "engine", "model", "day"):
        report_table(aggregate(sessions, by, NOW))
    rollup(sessions)


def test_ids_are_not_cut_in_the_text_timeline_nor_in_a_report_by_task():
    ids = [(f"s-20261126-{n:04x}", f"t-20261126-7a{n:02x}") for n in range(3)]
    found = [sess(sid, task_id=task, start=T0 + n * MIN) for n, (sid, task) in enumerate(ids)]
    lines = timeline_text(found, NOW, width=100).splitlines()
    assert all(f"{sid}  {task}" in line for (sid, task), line in zip(ids, lines[1:], strict=True))
    narrow = timeline_text(found, NOW, width=40).splitlines()  # no room for both: the session
    assert lines[0].startswith("SESSION") and all(columns(line) <= 40 for line in narrow)
    assert all(line.startswith(sid) for (sid, _), line in zip(ids, narrow[1:], strict=True))
    rows = aggregate(found, "task", NOW)
    keys = [line.split()[0] for line in report_table(rows, width=40, ids=True).splitlines()[1:-1]]
    assert len(set(keys)) == 3 and all(k.startswith("…") for k in keys)  # each keeps its end


def test_tables_count_wide_characters_as_the_terminal_does():
    from brat_sessions.render import cut, table

    rows = [["t-1", "修复解析器的错误并添加测试用例以及文档", "ok"], ["t-2", "Fix 🐛 in the parser", "ok"]]
    text = table(["TASK", "TITLE", "STATE"], rows, width=30, flex=(1,))
    lines = text.splitlines()
    assert all(columns(line) <= 30 for line in lines), lines
    ends = {columns(line[: line.rindex("ok") + 2]) for line in lines[1:]}
    assert len(ends) == 1  # the STATE column lines up
    assert columns(cut("修复解析器", 5)) <= 5 and cut("t-20261126-7afe", 6, keep_end=True) == "…-7afe"


def test_zero_width_characters_and_very_narrow_timelines():
    from brat_sessions.render import char_columns

    assert [char_columns(c) for c in "\u0e34\u1161\u00ad\ufe0f\u0301a\u4e2d"] == [0, 0, 0, 0, 0, 1, 2]
    found = [
        sess(f"s-20261126-{n:04x}", task_id=f"t-20261126-7a{n:02x}", start=T0 + n * MIN) for n in range(2)
    ]
    lines = timeline_text(found, NOW, width=12).splitlines()
    assert all(columns(line) <= 12 for line in lines) and lines[1].startswith("s-2")
