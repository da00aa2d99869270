"""Arguments of the public API, checked before anything is written (BadInput, exit code 2)."""

from __future__ import annotations

from .. import rules
from ..errors import BadInput


def check_session_id(session_id: str) -> str:
    """BadInput (exit code 2) unless `session_id` follows the id rule."""
    if not isinstance(session_id, str) or not rules.valid_id(session_id):
        shown = session_id[:80] if isinstance(session_id, str) else session_id
        raise BadInput(f"not a valid session id: {shown!r} ({rules.ID_RULE})")
    return session_id


def check_choice(what: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadInput(f"{what} must be one of {', '.join(allowed)}, not {str(value)[:80]!r}")


def check_text(what: str, value: object, limit: int) -> None:
    if not rules.valid_text(value, limit):
        raise BadInput(f"{what} must be UTF-8 text of at most {limit} characters without NUL")


def check_name(what: str, value: object, limit: int) -> None:
    """Text as check_text, and not empty nor only blanks (an engine, a model, a phase)."""
    check_text(what, value, limit)
    if not str(value).strip():
        raise BadInput(f"{what} must not be empty")


def check_pid(pid: int | None) -> None:
    if pid is not None and not rules.valid_pid(pid):
        raise BadInput(f"pid must be in {rules.PID_MIN}..{rules.PID_MAX}, not {pid!r}")


def check_grace(grace_s: object) -> None:
    """Seconds between SIGTERM and SIGKILL: a finite number, 0 or more."""
    if not rules.valid_seconds(grace_s):
        raise BadInput(f"a grace period must be a finite number of seconds, 0 or more, not {grace_s!r}")
