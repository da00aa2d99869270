"""The Session model and its state machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Conflict
from .fields import BRAT_FIELDS
from .usage import usage_json

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

# spawned -> ready -> running -> handoff -> exit; any state -> exit.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "spawned": ("ready", "exit"),
    "ready": ("running", "exit"),
    "running": ("handoff", "exit"),
    "handoff": ("exit",),
    "exit": (),
}

SIGNAL_BASE = 128
# extension keys written into blocks as they are (brat ignores keys it does not know)
EXTENSION_KEYS = (
    "parent_session_id",
    "root_session_id",
    "git_head",
    "resumed_from",
    "budget_tokens",
    "stop_cause",
    "phase",
    "iteration",
    "iterations",
    "last_activity_ts",
    "usage_ref",
)
# usage totals: block key -> key in Session.usage
USAGE_KEYS = {
    "llm_calls": "calls",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cost_usd_micros": "cost_usd_micros",
}


def allowed_targets(state: str) -> tuple[str, ...]:
    return TRANSITIONS.get(state, ("exit",))


def check_transition(session_id: str, current: str, target: str) -> None:
    """Raise Conflict (exit code 4) naming the allowed targets when refused."""
    allowed = allowed_targets(current)
    if target not in allowed:
        states = ", ".join(t for t in allowed if t != "exit")
        if not allowed:
            names = "none (the session has exited)"
        elif "exit" not in allowed:
            names = states
        else:  # (an exit is recorded by exit(), not by a transition)
            names = f"{states} or an exit" if states else "only an exit"
        raise Conflict(f"session {session_id}: cannot go from {current} to {target}; allowed: {names}")


@dataclass
class Session:
    """A session as projected from its blocks (and its heartbeat lease)."""

    session_id: str
    task_id: str | None
    grite_issue_id: str
    role: str
    session_type: str
    engine: str
    worktree: str
    pid: int | None
    status: str
    started_ts: int
    last_heartbeat_ts: int | None
    exit_code: int | None
    exit_reason: str | None
    last_output_ref: str | None
    host: str | None = None
    updated_ts: int = 0
    blocks: int = 0
    conflicts: int = 0
    beats: list[int] = field(default_factory=list)  # every heartbeat time seen (blocks, lease)
    future_ts: int | None = None  # a time later than now + skew, set by `settle`
    # brat_sessions' extension keys (docs/format.md): lineage, resume, budget ...
    parent_session_id: str | None = None
    root_session_id: str | None = None
    spawn_depth: int = 0
    git_head: str | None = None
    resumed_from: str | None = None
    budget_tokens: int | None = None
    stop_cause: str | None = None
    # ... progress (the lease's while it runs, else the latest block's) ...
    phase: str | None = None
    iteration: int | None = None
    iterations: int | None = None
    last_activity_ts: int | None = None
    # ... and usage: totals, the stored ledger's ref, and the live ledger from the lease
    usage: dict[str, int] | None = None
    usage_ref: str | None = None
    ledger: list[dict[str, Any]] | None = None

    @property
    def exited(self) -> bool:
        return self.status == "exit"

    def add_beat(self, ts: int) -> None:
        if ts not in self.beats:
            self.beats.append(ts)

    def settle(self, now: int, skew_ms: int) -> Session:
        """Judge the times against the clock: a time after now + skew is no sign of life.

        `last_heartbeat_ts` becomes the latest heartbeat that is not in the future;
        `future_ts` keeps the latest one that is (reported by doctor and show).
        """
        limit = now + skew_ms
        past = [b for b in self.beats if b <= limit]
        future = [t for t in (self.started_ts, *self.beats) if t > limit]
        self.last_heartbeat_ts = max(past) if past else None
        self.future_ts = max(future) if future else None
        return self

    def last_sign_of_life(self, now: int | None = None, skew_ms: int = 0) -> int | None:
        """The latest start or heartbeat time that is not after now + skew (None: none)."""
        limit = None if now is None else now + skew_ms
        times = [
            t
            for t in (self.started_ts, *self.beats, self.last_heartbeat_ts or 0)
            if t and (limit is None or t <= limit)
        ]
        return max(times) if times else None

    def heartbeat_age_ms(self, now: int) -> int | None:
        if self.last_heartbeat_ts is None:
            return None
        return max(0, now - self.last_heartbeat_ts)

    def block_fields(self) -> dict[str, Any]:
        """The fields a new block for this session starts from."""
        fields = {
            "state": self.status,
            "session_id": self.session_id,
            "role": self.role,
            "session_type": self.session_type,
            "engine": self.engine,
            "worktree": self.worktree,
            "pid": self.pid,
            "started_ts": self.started_ts,
            "last_heartbeat_ts": self.last_heartbeat_ts,
            "exit_code": self.exit_code,
            "exit_reason": self.exit_reason,
            "last_output_ref": self.last_output_ref,
        }
        if self.host:
            fields["host"] = self.host
        for key in EXTENSION_KEYS:
            fields[key] = getattr(self, key)
        fields["spawn_depth"] = self.spawn_depth or None
        for key, name in USAGE_KEYS.items():
            fields[key] = (self.usage or {}).get(name)
        return {k: v for k, v in fields.items() if v is not None or k in BRAT_FIELDS}

    def to_json(self, now: int | None = None) -> dict[str, Any]:
        data = dict(vars(self))  # not asdict(): no deep copies, 50,000 sessions must print fast
        data.pop("beats")
        data["usage"] = usage_json(self.usage) if self.usage else None
        if now is not None:
            data["heartbeat_age_ms"] = self.heartbeat_age_ms(now)
        return data
