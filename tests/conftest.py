from __future__ import annotations

import pytest

from brat_sessions.issues.tasks import create_task
from brat_sessions.worker.api import Tracker
from brat_sessions.workspace import Workspace

from .helpers import make_repo


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


@pytest.fixture
def tracker(repo):
    return Tracker(repo)


@pytest.fixture
def task(repo):
    return create_task(Workspace(repo), "A task", "Paths: a.py")
