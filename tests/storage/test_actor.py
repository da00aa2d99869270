import tomllib

import pytest

from brat_sessions.errors import BadInput
from brat_sessions.storage.actor import ensure_actor, load_actor
from brat_sessions.storage.repo import open_repo

from ..helpers import brat_json, git


def test_init_creates_grite_actor_layout_and_is_idempotent(repo):
    first = brat_json("init", cwd=repo)["actor_id"]
    assert brat_json("init", cwd=repo)["actor_id"] == first
    cfg = tomllib.loads((repo / ".git" / "grite" / "config.toml").read_text())
    assert cfg["default_actor"] == first
    actor_cfg = tomllib.loads((repo / ".git" / "grite" / "actors" / first / "config.toml").read_text())
    assert actor_cfg["actor_id"] == first and isinstance(actor_cfg["created_ts"], int)


def test_existing_grite_actor_is_reused(repo):
    (repo / ".git" / "grite").mkdir()
    (repo / ".git" / "grite" / "config.toml").write_text('default_actor = "' + "ab" * 16 + '"\n')
    assert ensure_actor(open_repo(repo)) == "ab" * 16


def test_brat_actor_overrides(repo, monkeypatch):
    monkeypatch.setenv("BRAT_ACTOR", "CD" * 16)
    assert load_actor(open_repo(repo)) == "cd" * 16
    monkeypatch.setenv("BRAT_ACTOR", "nope")
    with pytest.raises(BadInput):
        load_actor(open_repo(repo))


def test_worktree_shares_the_actor(repo, tmp_path):
    actor = brat_json("init", cwd=repo)["actor_id"]
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    assert brat_json("init", cwd=tmp_path / "wt")["actor_id"] == actor
