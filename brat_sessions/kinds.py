"""The closed sets of values a session has, as types (for type checkers) and tuples."""

from __future__ import annotations

from typing import Literal, get_args

State = Literal["spawned", "ready", "running", "handoff", "exit"]
LiveState = Literal["spawned", "ready", "running", "handoff"]  # what `transition` moves to
SessionType = Literal["polecat", "crew"]
Role = Literal["mayor", "witness", "refinery", "deacon", "user"]
ExitReason = Literal["completed", "signal", "timeout", "crash", "user-stop"]
StopReason = Literal["user-stop", "timeout", "crash"]
TaskStatus = Literal["queued", "running", "blocked", "needs-review", "merged", "dropped"]
Priority = Literal["P0", "P1", "P2"]

STATES: tuple[State, ...] = get_args(State)
SESSION_TYPES: tuple[SessionType, ...] = get_args(SessionType)
ROLES: tuple[Role, ...] = get_args(Role)
EXIT_REASONS: tuple[ExitReason, ...] = get_args(ExitReason)
STOP_REASONS: tuple[StopReason, ...] = get_args(StopReason)
TASK_STATUSES: tuple[TaskStatus, ...] = get_args(TaskStatus)
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
