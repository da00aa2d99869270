"""What `brat sessions log` shows: the live file while a session runs, stored bytes after."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import BratError, NotFound
from .outputs import read_output

if TYPE_CHECKING:
    from ..worker.api import Tracker


@dataclass
class LogView:
    """A session's output and where it was found."""

    source: str  # "live", "stored" or "local"
    data: bytes
    output_ref: str | None


def read_log(tracker: Tracker, session_id: str) -> LogView:
    session = tracker.session(session_id)
    files = tracker.files(session_id)
    path = files.log
    local = files.read_log()  # never through a symbolic link
    if session.exited and session.last_output_ref:
        try:
            return LogView(
                "stored", read_output(tracker.ws.repo, session.last_output_ref), session.last_output_ref
            )
        except NotFound:
            if local is not None:
                data = local
                if "sha256:" + hashlib.sha256(data).hexdigest() == session.last_output_ref:
                    return LogView("local", data, session.last_output_ref)
                raise BratError(
                    f"{path} does not match {session.last_output_ref} and the stored "
                    f"copy is not in this clone"
                ) from None
            raise
    if local is not None:
        return LogView("live" if not session.exited else "local", local, None)
    if session.exited:
        raise NotFound(f"session {session_id} exited without a stored output")
    if session.host == tracker.host:
        raise NotFound(f"no output yet for session {session_id} ({path} does not exist yet)")
    raise NotFound(
        f"no output yet for session {session_id} ({path} does not exist here; "
        f"it runs on {session.host or 'another host'})"
    )


def wait_for_log(tracker: Tracker, session_id: str, poll_s: float = 0.5) -> LogView:
    """read_log, waiting while the session is live on this host and its log is not there
    yet (`log -f` on a session that has not written anything)."""
    while True:
        try:
            return read_log(tracker, session_id)
        except NotFound:
            session = tracker.ws.fresh_index().session(session_id)
            if session.exited or session.host != tracker.host:
                raise
        time.sleep(poll_s)


def follow_log(tracker: Tracker, session_id: str, offset: int, out: BinaryIO, poll_s: float = 0.5) -> None:
    """Print what is appended to the live log until the session exits."""
    path = tracker.files(session_id).log
    last_check = 0.0
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
        fh.seek(offset)
        while True:
            chunk = fh.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if tracker.ws.fresh_index().session(session_id).exited:
                    out.write(fh.read())
                    out.flush()
                    return
            time.sleep(poll_s)
