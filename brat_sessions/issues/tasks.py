"""Task issues: create them with brat's labels and a fresh unique task id."""

from __future__ import annotations

from ..clock import now_ms
from ..errors import BadInput
from ..index import Index
from ..kinds import TASK_STATUSES
from ..rules import ID_RULE, MAX_TEXT, valid_id, valid_text
from ..storage.events import ISSUE_CREATED, Event, make_event, new_issue_id
from ..workspace import Workspace
from .ids import new_id
from .labels import task_labels
from .projection import Issue


def create_task(
    ws: Workspace,
    title: str,
    body: str = "",
    convoy: str | None = None,
    status: str = "queued",
    priority: str | None = None,
) -> Issue:
    """Append an IssueCreated with brat's task labels; the new task issue."""
    if not isinstance(title, str) or not title.strip():
        raise BadInput("a task needs a title")
    for what, text, limit in (("title", title, MAX_TEXT), ("body", body, 1_000_000)):
        if not valid_text(text, limit):
            raise BadInput(f"a task's {what} {_why_not_text(text, limit)}")
    if convoy is not None and not valid_id(convoy):
        raise BadInput(f"not a valid convoy id: {str(convoy)[:80]!r} ({ID_RULE})")
    if status not in TASK_STATUSES:
        raise BadInput(f"unknown task status {status!r}; one of {', '.join(TASK_STATUSES)}")
    if priority is not None and priority not in ("P0", "P1", "P2"):
        raise BadInput("priority must be P0, P1 or P2")
    issue_id = new_issue_id()

    def build(index: Index) -> list[Event]:
        ts = now_ms()
        task_id = new_id("t", ts, index.task_id_exists)
        labels = task_labels(task_id, status, convoy, priority)
        return [make_event(issue_id, bytes.fromhex(ws.actor), ts, ISSUE_CREATED, [title, body, labels])]

    ws.append(build)
    issue = ws.index.issue(issue_id.hex())
    assert issue is not None
    return issue


def _why_not_text(text: object, limit: int) -> str:
    """What keeps `text` from being stored: its length, a NUL, bytes UTF-8 cannot hold."""
    if not isinstance(text, str):
        return "must be text"
    if len(text) > limit:
        return f"is {len(text):,} characters (at most {limit:,})"
    if "\x00" in text:
        return "holds a NUL character"
    return "holds bytes that are not UTF-8"
