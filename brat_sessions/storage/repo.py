"""Open the repository the way every layer needs it: at the git common dir.

A linked worktree shares refs and objects with its main repository. We open the
common dir itself, which also avoids a libgit2 quirk where creating an existing
ref from a linked worktree silently overwrites it (that would break
compare-and-swap).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pygit2

from ..errors import EnvironmentProblem
from .safe_odb import install_safe_odb

_LIMITED = False


def _limit_libgit2_memory() -> None:
    """Bound what libgit2 keeps mapped and cached: a long replay reads each object once."""
    global _LIMITED
    if not _LIMITED:
        pygit2.settings.mwindow_size = 32 * 1024 * 1024
        pygit2.settings.mwindow_mapped_limit = 128 * 1024 * 1024
        pygit2.settings.cache_max_size(64 * 1024 * 1024)
        _LIMITED = True


@dataclass
class RepoContext:
    repo: pygit2.Repository
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


def open_repo(path: str | os.PathLike[str] | None = None) -> RepoContext:
    """Open the repository containing `path` (default: the current directory)."""
    start = os.fspath(path) if path is not None else os.getcwd()
    if not os.path.isdir(start):
        raise EnvironmentProblem(f"no such directory: {start}")
    try:
        gitdir = pygit2.discover_repository(start)
    except pygit2.GitError:
        gitdir = None
    if gitdir is None:
        raise EnvironmentProblem(f"not a git repository: {os.path.abspath(start)}")
    gitdir_path = Path(gitdir)
    common_file = gitdir_path / "commondir"
    if common_file.is_file():
        common = (gitdir_path / common_file.read_text().strip()).resolve()
    else:
        common = gitdir_path.resolve()
    _limit_libgit2_memory()
    try:
        repo = pygit2.Repository(str(common))
        install_safe_odb(repo, common / "objects")  # damaged loose objects fail fast
    except pygit2.GitError as exc:
        raise EnvironmentProblem(f"cannot open git repository {common}: {exc}") from None
    main = Path(repo.workdir).resolve() if repo.workdir else None
    worktree = main
    linked = gitdir_path / "gitdir"  # a linked worktree records its `.git` file here
    if linked.is_file():
        worktree = Path(linked.read_text().strip()).parent.resolve()
    return RepoContext(repo=repo, common_dir=common, main_worktree=main, worktree=worktree)
