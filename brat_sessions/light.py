"""The warm path: a workspace for reading commands that never imports pygit2.

When the index reflects the current WAL head, `sessions list`, `show`, `task list`
and `task show` need nothing but the index, the head and the leases. `LightWorkspace`
reads those the way git stores them (`storage/plain_git.py`); whenever the index is
not current, or the repository's layout is anything else (reftable, symbolic refs,
packed lease blobs, git environment variables), it raises `Unsupported` and the
caller uses the full `Workspace`.
"""

from __future__ import annotations

import os

from .index import Index
from .rules import valid_id
from .sessions.lease import LEASE_PREFIX, MAX_LEASE_BYTES, Lease, lease_from_bytes
from .storage import plain_git
from .storage.context import WAL_REF, RepoContext
from .storage.plain_git import Unsupported
from .workspace import Workspace

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any


class _HeadOnly:
    """What the index asks of the log when it is current: its head, and nothing else."""

    def __init__(self, head: str | None) -> None:
        self._head = head

    def head(self) -> str | None:
        return self._head

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(f"the log must be read ({name})")


class LightWorkspace(Workspace):
    """A Workspace for reading, answered from a current index without pygit2."""

    def __init__(self, path: str | os.PathLike[str] | None = None, report: bool = True) -> None:
        """`report=False` leaves naming corrupt commits to the caller (`index.report_corrupt_commits`)."""
        dirs = plain_git.find(path)
        self.ctx = RepoContext(
            repo=None,  # type: ignore[arg-type]  # (never used on this path)
            common_dir=dirs.common_dir,
            main_worktree=dirs.main_worktree,
            worktree=dirs.worktree,
        )
        self.repo = None  # type: ignore[assignment]
        if not (self.ctx.data_dir / "index.sqlite").exists():
            raise Unsupported("no index yet")
        head = plain_git.read_ref(dirs.common_dir, WAL_REF)
        # every lease read now (there is one per live session): a packed one means pygit2,
        # and that must be known before the command has printed anything
        self._leases = {
            name[len(LEASE_PREFIX) :]: lease_from_bytes(
                name[len(LEASE_PREFIX) :], plain_git.read_loose_blob(dirs.common_dir, oid, MAX_LEASE_BYTES)
            )
            for name, oid in plain_git.refs_under(dirs.common_dir, LEASE_PREFIX).items()
            if valid_id(name[len(LEASE_PREFIX) :])  # (another name is no session's lease)
        }
        self._actor = None
        self._config = None
        index = Index(self.ctx, _HeadOnly(head), snapshots=False)  # type: ignore[arg-type]
        if index.indexed_head() != head or index.incomplete:
            index.close()
            raise Unsupported("the index is not current")
        self._index = index
        if report:
            index.report_corrupt_commits()

    def fresh_index(self) -> Index:
        return self.index  # current by construction; a new head is for the next command

    def _read_lease(self, session_id: str) -> Lease | None:
        return self._leases.get(session_id)

    @property
    def actor(self) -> str:
        raise Unsupported("writing needs the full workspace")


def read_workspace(path: str | os.PathLike[str] | None = None) -> Workspace:
    """The light workspace when it can answer, else the full one (which also reports
    whatever made the light one give up, in its own words)."""
    try:
        return LightWorkspace(path)
    except (Unsupported, OSError, ValueError):
        return Workspace(path)
