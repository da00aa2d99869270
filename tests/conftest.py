from __future__ import annotations

import os

import pytest

from brat_sessions.issues.tasks import create_task
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from .helpers import WORKTREE_ENV, make_repo

# Every process a test starts (brat, run's shim, reader processes) imports this working tree.
os.environ.update(WORKTREE_ENV)


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


@pytest.fixture
def tracker(repo):
    return Tracker(repo)


@pytest.fixture
def task(repo):
    return create_task(Workspace(repo), "A task", "Paths: a.py")
