"""Stopping sessions: a signal only with local proof, then the exit (and whole trees of them)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import EnvironmentProblem, Fenced, NotFound
from ..kinds import STOP_REASONS, StopReason
from ..sessions.model import Session
from . import proof as proofs
from .checks import check_choice, check_grace

if TYPE_CHECKING:
    from .api import Tracker


@dataclass
class StopReport:
    """What `stop` did: the session as recorded, and whether a signal was sent."""

    session: Session
    signalled: bool
    note: str
    already_exited: bool = False  # (stop_tree: the top session had exited before the call)


def stop_report(
    tracker: Tracker, session_id: str, reason: StopReason = "user-stop", grace_s: float = 10.0
) -> StopReport:
    """Stop a session: signal its process (group) only if this machine holds proof that
    brat started or adopted that very process, then record the exit.

    A pid and host read from the log are never enough to send a signal. Without local
    proof the exit is recorded and the report says that no signal was sent.
    """
    check_choice("stop reason", reason, STOP_REASONS)
    check_grace(grace_s)
    session = tracker.session(session_id)
    if session.exited:
        raise Fenced(f"session {session_id} has already exited ({session.exit_reason})")
    incomplete = tracker.ws.index.incomplete
    if incomplete and session.host != tracker.host:
        raise EnvironmentProblem(
            f"{incomplete}; refusing to stop a session of another host on a partial view"
        )
    files = tracker.files(session_id)
    code = -1
    proof = proofs.load(tracker.ws.ctx.data_dir, session_id)
    signalled = False
    if proof is not None and proof.live_members():
        files.request_stop(reason)
        signalled = proof.stop(grace_s)
    if signalled:
        # Under `run`, the shim writes the status file as the command ends and the
        # supervisor then records the exit itself: give it a moment to do so.
        ended = _poll(files.how_it_ended, 1.0)
        if ended is not None:
            code = ended[0]
            if _poll(lambda: tracker.ws.fresh_index().session(session_id).exited, 5.0):
                return StopReport(tracker.session(session_id), True, "")
    if signalled:
        note = ""
    elif proof is not None and proof.pid == os.getpid():
        note = "no signal sent: the session's process is this one"
    else:
        note = (
            "no signal sent: this machine holds no record that brat started or adopted the session's process"
        )
    try:
        return StopReport(tracker.exit(session_id, code, reason), signalled, note)
    except Fenced:
        if not signalled:
            raise  # another process recorded an exit meanwhile: this stop did nothing
        return StopReport(tracker.session(session_id), signalled, note)  # its supervisor was first


def stop_tree(
    tracker: Tracker, session_id: str, reason: StopReason = "user-stop", grace_s: float = 10.0
) -> list[StopReport]:
    """Stop a session and its live descendants, deepest first (so no child outlives
    its parent's stop); one report each. A session that has already exited is reported
    as it is (its live descendants are still stopped); Fenced only when nothing was live."""
    check_grace(grace_s)
    tracker.session(session_id)  # NotFound for an unknown id
    # the descendants this clone started (their links recorded here): the log's lineage,
    # which anyone can write, never decides what is stopped or signalled
    below = []
    for sid, depth in proofs.local_tree(tracker.ws.ctx.data_dir, session_id):
        try:
            child = tracker.session(sid)
        except NotFound:
            continue
        if not child.exited:
            below.append((depth, child))
    reports = []
    for _, s in sorted(below, key=lambda pair: -pair[0]):
        try:
            reports.append(stop_report(tracker, s.session_id, reason, grace_s))
        except Fenced:
            continue  # it ended meanwhile
    try:
        reports.append(tracker.stop_report(session_id, reason, grace_s))
    except Fenced:
        if not reports:
            raise
        exited = tracker.session(session_id)
        reports.append(StopReport(exited, False, f"had already exited ({exited.exit_reason})", True))
    return reports


def _poll(check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)
