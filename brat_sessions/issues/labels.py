"""The labels brat keeps on task issues."""

from __future__ import annotations

from ..kinds import SESSION_TYPES
from ..kinds import STATES as SESSION_STATES

SESSION_STATE_PREFIX = "session:"


def task_labels(
    task_id: str,
    status: str,
    convoy: str | None = None,
    priority: str | None = None,
    engine: str | None = None,
) -> list[str]:
    labels = ["type:task", f"task:{task_id}", f"status:{status}"]
    if convoy:
        labels.append(f"convoy:{convoy}")
    if priority:
        labels.append(f"priority:{priority}")
    if engine:
        labels.append(f"engine:{engine}")
    return sorted(labels)


def session_label_changes(
    current: list[str], state: str, session_type: str, engine: str
) -> tuple[list[str], list[str]]:
    """(to_remove, to_add) so the issue shows exactly this session's state, type and engine."""
    wanted = {f"session:{state}", f"session:{session_type}", f"engine:{engine}"}
    managed = {f"session:{s}" for s in SESSION_STATES + SESSION_TYPES}
    remove = [lb for lb in current if lb not in wanted and (lb in managed or lb.startswith("engine:"))]
    add = sorted(wanted - set(current))
    return remove, add
