"""One repository as every command sees it: the log, the index, the actor."""

from __future__ import annotations

import os
from collections.abc import Callable

from .clock import now_ms
from .errors import EnvironmentProblem
from .index import Index
from .sessions.lease import overlay_lease, read_lease
from .sessions.model import Session
from .storage.context import RepoContext

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

    from .config import Config
    from .sessions.lease import Lease
    from .storage.events import Event
    from .storage.wal import Wal


def this_host() -> str:
    """The name of this machine, as written in a block's `host` (BRAT_HOST overrides)."""
    import socket

    return os.environ.get("BRAT_HOST") or socket.gethostname()


class Workspace:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        try:
            self.path = os.path.abspath(path if path is not None else os.curdir)  # (the cwd may change)
        except FileNotFoundError:  # (a relative path, or none, in a directory deleted meanwhile)
            raise EnvironmentProblem("the current directory no longer exists") from None
        self._index: Index | None = None
        self._open()
        self._actor: str | None = None
        self._config: Config | None = None

    def _open(self) -> None:
        from .storage.repo import open_repo
        from .storage.wal import Wal

        self.ctx: RepoContext = open_repo(self.path)
        self.repo = self.ctx.repo
        self.wal: Wal = Wal(self.ctx)

    def reopen(self) -> None:
        """Open the repository anew: libgit2 keeps what it read at open (a shallow clone's
        boundary), which a fetch that made the clone whole has changed."""
        if self._index is not None:
            self._index.close()
            self._index = None
        self._open()

    @property
    def actor(self) -> str:
        """The writing actor; creates grite's actor files on first write."""
        if self._actor is None:
            from .storage.actor import ensure_actor

            self._actor = ensure_actor(self.ctx)
        return self._actor

    @property
    def index(self) -> Index:
        """The index, as of the moment it was first asked for in this process."""
        if self._index is None:
            self._index = Index(self.ctx, self.wal, snapshots=self.config.read_snapshots)
            self._index.refresh()
            self._index.report_corrupt_commits()
        return self._index

    def fresh_index(self) -> Index:
        return self.index.refresh()

    def append(self, build: Callable[[Index], list[Event]]) -> list[Event]:
        """Append what `build` returns, judged against the index at the head it builds on."""
        index = self.index
        head, written = self.wal.append(self.actor, lambda h: build(index.refresh(h)))
        if head is not None:
            index.refresh(head)
        return written

    @property
    def config(self) -> Config:
        """`.brat/sessions.yaml` of this repository (defaults when there is none)."""
        if self._config is None:
            from .config import load_config

            self._config = load_config(self.ctx.config_root, self.ctx.data_dir)
        return self._config

    # sessions, with the heartbeat lease folded in ----------------------
    def with_lease(self, session: Session, now: int | None = None) -> Session:
        """The session with its lease's heartbeat, its times judged against the clock."""
        if not session.exited:
            lease = self._read_lease(session.session_id)
            if lease is not None:
                overlay_lease(session, lease)
        skew_ms = int(self.config.clock_skew * 1000)
        return session.settle(now_ms() if now is None else now, skew_ms)

    def _read_lease(self, session_id: str) -> Lease | None:
        return read_lease(self.repo, session_id)

    def sessions(self, include_exited: bool = False) -> list[Session]:
        return [self.with_lease(s) for s in self.fresh_index().sessions(include_exited)]

    def session(self, session_id: str) -> Session:
        return self.with_lease(self.fresh_index().session(session_id))

    def problems(self, now: int | None = None) -> list[dict[str, Any]]:
        """Everything doctor reports: what the index found in the log, an incomplete log,
        and times in the future (no sign of life: the reaper ignores them)."""
        index = self.fresh_index()
        index.recheck_corrupt()
        found = index.problems()
        if index.incomplete:
            found.insert(0, _problem("incomplete_log", index.incomplete))
        now = now_ms() if now is None else now
        for s in index.sessions(include_exited=True):
            self.with_lease(s, now)
            if s.future_ts is not None and not s.exited:
                found.append(
                    _problem(
                        "future_time",
                        f"session {s.session_id}: time {s.future_ts} is later than now "
                        f"plus the clock-skew allowance; ignored as a sign of life",
                        session_id=s.session_id,
                    )
                )
        return found


def _problem(kind: str, message: str, session_id: str | None = None) -> dict[str, Any]:
    return {
        "id": f"{kind}:{session_id or ''}",
        "kind": kind,
        "commit_id": None,
        "event_id": None,
        "session_id": session_id,
        "message": message,
    }
