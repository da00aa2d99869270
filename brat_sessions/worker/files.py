"""A session's local files under `.grite/logs/`: output log, exit status, stop request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kinds import ExitReason
from ..rules import ID_RULE, valid_id


@dataclass
class SessionFiles:
    """Paths are built only from a session id that passed the id rule: they never leave
    `logs_dir`."""

    logs_dir: Path
    session_id: str

    def __post_init__(self) -> None:
        if not valid_id(self.session_id):
            raise BadInput(f"not a valid session id: {self.session_id[:80]!r} ({ID_RULE})")

    @property
    def log(self) -> Path:
        return self.logs_dir / f"{self.session_id}.log"

    @property
    def status(self) -> Path:
        """Written by the `run` shim when the command ends: how it ended."""
        return self.logs_dir / f"{self.session_id}.status.json"

    @property
    def stop_request(self) -> Path:
        """Left by `brat sessions stop` so the supervisor records `user-stop`."""
        return self.logs_dir / f"{self.session_id}.stop"

    def how_it_ended(self, fallback: dict[str, Any] | None = None) -> tuple[int, ExitReason] | None:
        """(exit_code, exit_reason) from the status file (or `fallback`); `user-stop` when
        `brat sessions stop` asked for the end. None while nothing says how it ended."""
        status = self.read_status() or fallback
        if status is None:
            return None
        code, reason = code_and_reason(status)
        return code, "user-stop" if self.stop_request.exists() else reason

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None


def code_and_reason(status: dict[str, Any]) -> tuple[int, ExitReason]:
    """The spec's (exit_code, exit_reason) for how the command ended."""
    if isinstance(status.get("signal"), int):
        return 128 + status["signal"], "signal"
    code = status.get("returncode")
    return (code if isinstance(code, int) else -1), "completed"
