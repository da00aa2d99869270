"""Open the repository the way every layer needs it: at the git common dir.

A linked worktree shares refs and objects with its main repository. We open the
common dir itself, which also avoids a libgit2 quirk where creating an existing
ref from a linked worktree silently overwrites it (that would break
compare-and-swap).
"""

from __future__ import annotations

import os
from pathlib import Path

import pygit2

from ..errors import EnvironmentProblem
from .context import RepoContext
from .safe_odb import install_safe_odb

_LIMITED = False


def _limit_libgit2_memory() -> None:
    """Bound what libgit2 keeps mapped and cached: a long replay reads each object once."""
    global _LIMITED
    if not _LIMITED:
        pygit2.settings.mwindow_size = 32 * 1024 * 1024
        pygit2.settings.mwindow_mapped_limit = 96 * 1024 * 1024
        # the cache limit does not bound RSS (a cold read grew it by 640 MB), and a replay
        # reads each object once: no object cache at all
        pygit2.settings.enable_caching(False)
        _LIMITED = True


def open_repo(path: str | os.PathLike[str] | None = None) -> RepoContext:
    """Open the repository containing `path` (default: the current directory)."""
    try:
        start = os.fspath(path) if path is not None else os.getcwd()
    except FileNotFoundError:
        raise EnvironmentProblem("the current directory no longer exists") from None
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
        common = (gitdir_path / os.fsdecode(common_file.read_bytes()).strip()).resolve()
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
        worktree = Path(os.fsdecode(linked.read_bytes()).strip()).parent.resolve()  # (any bytes)
    return RepoContext(repo=repo, common_dir=common, main_worktree=main, worktree=worktree)
