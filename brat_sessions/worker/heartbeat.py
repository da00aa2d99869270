"""A background thread that renews a session's lease every interval."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

import pygit2

from ..clock import now_ms
from ..errors import BratError, Fenced
from ..sessions.lease import renew_lease


class HeartbeatKeeper(threading.Thread):
    """Renews the lease until stopped; calls `on_fenced` once if the session is over."""

    def __init__(self, common_dir: Path, session_id: str, interval_s: float,
                 on_fenced: Callable[[Fenced], None]) -> None:
        super().__init__(name=f"heartbeat-{session_id}", daemon=True)
        self.common_dir = common_dir
        self.session_id = session_id
        self.interval_s = interval_s
        self.on_fenced = on_fenced
        self._stop_event = threading.Event()

    def run(self) -> None:
        repo = pygit2.Repository(str(self.common_dir))  # pygit2 objects stay in their thread
        while not self._stop_event.wait(self.interval_s):
            try:
                renew_lease(repo, self.session_id, now_ms())
            except Fenced as exc:
                self.on_fenced(exc)
                return
            except (BratError, pygit2.GitError, OSError) as exc:
                print(f"brat: heartbeat for {self.session_id} failed: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
