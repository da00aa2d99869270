"""A background thread that renews a session's lease every interval."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pygit2

from ..errors import BratError, Fenced
from ..sessions.lease import LeaseSealed


class HeartbeatKeeper(threading.Thread):
    """Renews the lease until stopped; calls `on_fenced` once if the session is over."""

    def __init__(
        self,
        common_dir: Path,
        session_id: str,
        interval_s: float,
        on_fenced: Callable[[Fenced], None],
        host: str | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{session_id}", daemon=True)
        self.common_dir = common_dir
        self.session_id = session_id
        self.interval_s = interval_s
        self.on_fenced = on_fenced
        self.host = host  # (the scope's tracker's: a lease this thread recreates names it)
        self._stop_event = threading.Event()

    def run(self) -> None:
        from .api import Tracker

        # its own repository and index: pygit2 and sqlite objects stay in their thread
        tracker = Tracker(self.common_dir, host=self.host)
        tracker.push_in_background(True)  # (a slow remote never delays the next renewal)
        try:
            while not self._stop_event.wait(self.interval_s):
                try:
                    tracker.heartbeat(self.session_id)
                except LeaseSealed:
                    continue  # an exit is being recorded: the next beat learns how it went
                except Fenced as exc:
                    self.on_fenced(exc)
                    return
                except (BratError, pygit2.GitError, OSError) as exc:
                    print(f"brat: heartbeat for {self.session_id} failed: {exc}", file=sys.stderr)
        finally:
            tracker.push_in_background(False)  # no push outlives the worker

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
