"""Where a repository keeps things: its git dirs, and brat_sessions' own folders in them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    import pygit2


WAL_REF = "refs/grite/wal"  # grite's log (here so that the pygit2-free warm path shares it)


@dataclass
class RepoContext:
    """The repository a command works in, and its worktree."""

    repo: pygit2.Repository  # None on the warm path that reads git's files directly
    common_dir: Path
    main_worktree: Path | None
    worktree: Path | None = None  # the worktree the command was started in

    @property
    def data_dir(self) -> Path:
        """Where brat_sessions keeps its local, disposable state (the index)."""
        return self.common_dir / "brat_sessions"

    @property
    def logs_dir(self) -> Path:
        """brat's `.grite/logs` under the main worktree (in the git dir when bare)."""
        if self.main_worktree is not None:
            return self.main_worktree / ".grite" / "logs"
        return self.common_dir / "brat_sessions" / "logs"

    @property
    def config_root(self) -> Path:
        """Folder holding `.brat/sessions.yaml`."""
        return self.main_worktree if self.main_worktree is not None else self.common_dir


def create_ref_if_absent(common_dir: Path, name: str, oid: str, message: str) -> bool:
    """Create ref `name` at `oid` only if it does not exist, checked under git's ref lock;
    False when it exists. libgit2's non-forced create checks before it takes the lock, so
    two concurrent creators could both "win"; `git update-ref` with an empty old value
    cannot."""
    import subprocess

    from ..errors import EnvironmentProblem

    try:
        result = subprocess.run(
            ["git", "--git-dir", str(common_dir), "update-ref", "-m", message, name, oid, ""],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise EnvironmentProblem(f"git is not installed (needed to create {name})") from None
    return result.returncode == 0
