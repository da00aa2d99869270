"""`.brat/sessions.yaml`, and what it parsed to kept in the data dir (no PyYAML import
while the file is unchanged)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from brat_sessions.config import Config, load_config
from brat_sessions.errors import BadInput
from brat_sessions.worker.api import Tracker

from .helpers import WORKTREE_ENV, brat

OLD = time.time() - 60  # a file last changed a minute ago has settled


def _write(root, text: str, when: float | None = OLD) -> None:
    path = root / ".brat" / "sessions.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    if when is not None:
        os.utime(path, (when, when))


def test_a_settled_file_is_read_once_with_pyyaml_then_from_the_data_dir(tmp_path, monkeypatch):
    root, cache = tmp_path, tmp_path / "data"
    cache.mkdir()
    _write(root, "heartbeat_interval: 10\ntimeout: 45\nread_snapshots: false\n")
    first = load_config(root, cache)
    assert (cache / "config-cache.json").exists()
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert (
        load_config(root, cache) == first == Config(heartbeat_interval=10, timeout=45, read_snapshots=False)
    )


def test_any_change_to_the_file_is_read_again(tmp_path):
    root, cache = tmp_path, tmp_path / "data"
    cache.mkdir()
    _write(root, "timeout: 45\n")
    load_config(root, cache)
    _write(root, "timeout: 99\n")  # same size, and the same mtime put back: the ctime moved
    assert load_config(root, cache).timeout == 99


def test_a_file_changed_just_now_is_not_kept(tmp_path):
    root, cache = tmp_path, tmp_path / "data"
    cache.mkdir()
    _write(root, "timeout: 45\n", when=None)  # a second edit in the same clock tick could hide
    assert load_config(root, cache).timeout == 45
    assert not (cache / "config-cache.json").exists()


def test_a_kept_file_gives_the_same_errors_and_odd_values_are_never_kept(tmp_path, monkeypatch):
    root, cache = tmp_path, tmp_path / "data"
    cache.mkdir()
    _write(root, "timeout: -1\n")
    with pytest.raises(BadInput) as first:
        load_config(root, cache)
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(BadInput) as again:
        load_config(root, cache)
    assert str(again.value) == str(first.value)
    monkeypatch.delitem(sys.modules, "yaml")
    (cache / "config-cache.json").unlink()
    _write(root, "1: 2\n")  # a key JSON would turn into text
    with pytest.raises(BadInput, match="unknown key 1 "):
        load_config(root, cache)
    assert not (cache / "config-cache.json").exists()
    (cache / "config-cache.json").write_text("{not json")
    _write(root, "timeout: 45\n")
    assert load_config(root, cache).timeout == 45  # a damaged copy is read past, and replaced


def test_a_warm_list_with_a_settings_file_does_not_import_pyyaml(repo, task):
    _write(repo, "heartbeat_interval: 10\n")
    Tracker(repo).start(task.task_id, state="running")  # a live session: its staleness needs the file
    assert brat("sessions", "list", "--json", cwd=repo).returncode == 0  # reads the file, keeps it
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "brat_sessions.cli", "sessions", "list", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert done.returncode == 0 and '"ok": true' in done.stdout, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.rstrip().endswith("| yaml")]
    _write(repo, "heartbeat_interval: 0\n")  # and a change is seen at once
    assert brat("sessions", "list", "--json", cwd=repo).returncode == 2
