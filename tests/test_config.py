"""`.brat/sessions.yaml`, and its checked values kept in the data dir (no PyYAML import
while the file is unchanged)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from brat_sessions import config
from brat_sessions.config import Config, load_config
from brat_sessions.errors import BadInput
from brat_sessions.worker.api import Tracker

from .helpers import WORKTREE_ENV, brat


def _write(root, text: str | bytes) -> None:
    path = root / ".brat" / "sessions.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)


@pytest.fixture
def settled(monkeypatch):
    """Every file counts as settled (its change time cannot be set back in a test)."""
    monkeypatch.setattr(config, "_SETTLED_NS", 0)


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "data").mkdir()
    return tmp_path, tmp_path / "data"


def test_a_settled_file_is_read_once_with_pyyaml_then_from_the_data_dir(dirs, settled, monkeypatch):
    root, cache = dirs
    _write(root, "heartbeat_interval: 10\ntimeout: 45\nread_snapshots: false\n")
    first = load_config(root, cache)
    assert (cache / "config-cache.json").exists()
    monkeypatch.setitem(sys.modules, "yaml", None)  # whatever still works came from the copy
    assert (
        load_config(root, cache) == first == Config(heartbeat_interval=10, timeout=45, read_snapshots=False)
    )


def test_any_change_to_the_file_is_read_again(dirs, settled):
    root, cache = dirs
    _write(root, "timeout: 45\n")
    before = (root / ".brat" / "sessions.yaml").stat()
    load_config(root, cache)
    _write(root, "timeout: 99\n")  # the same size, and the same modification time put back
    os.utime(root / ".brat" / "sessions.yaml", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert load_config(root, cache).timeout == 99


def test_a_file_changed_just_now_is_not_kept(dirs):
    root, cache = dirs
    _write(root, "timeout: 45\n")
    os.utime(root / ".brat" / "sessions.yaml", (time.time() - 3600,) * 2)  # (cp -p, touch -d ...)
    assert load_config(root, cache).timeout == 45
    assert not (cache / "config-cache.json").exists()  # its change time is now


def test_a_file_that_fails_the_checks_is_never_kept_and_fails_the_same_each_time(dirs, settled):
    root, cache = dirs
    _write(root, "timeout: -1\n")
    with pytest.raises(BadInput) as first:
        load_config(root, cache)
    with pytest.raises(BadInput) as again:
        load_config(root, cache)
    assert str(again.value) == str(first.value) and not (cache / "config-cache.json").exists()
    # anchors that expand tenfold at each level: refused as fast as without a copy kept
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 8)]
    _write(root, "\n".join(lines) + "\n")
    with pytest.raises(BadInput, match="unknown key 'a0'"):
        load_config(root, cache)
    _write(root, b"timeout: \xff\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_config(root, cache)
    assert not (cache / "config-cache.json").exists()


def test_a_damaged_copy_is_read_past_and_replaced(dirs, settled):
    root, cache = dirs
    _write(root, "timeout: 45\n")
    load_config(root, cache)
    kept = (cache / "config-cache.json").read_text()
    assert "45.0" in kept
    for damage in (
        "{not json",
        kept.replace("45.0", '"45"'),  # a value that fails the checks
        kept.replace("45.0", "[" * 1000 + "]" * 1000),  # (and far too big)
        kept.replace("45.0", "1" * 5000),
    ):
        (cache / "config-cache.json").write_text(damage)
        assert load_config(root, cache).timeout == 45
    assert (cache / "config-cache.json").read_text() == kept
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_a_warm_list_with_a_settings_file_does_not_import_pyyaml(repo, task, monkeypatch):
    _write(repo, "heartbeat_interval: 10\n")
    Tracker(repo).start(task.task_id, state="running")  # a live session: its staleness needs the file
    assert brat("sessions", "list", "--json", cwd=repo).returncode == 0
    monkeypatch.setattr(config, "_SETTLED_NS", 0)
    load_config(repo, repo / ".git" / "brat_sessions")  # kept (in a command, 2 s after the edit)
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
    assert brat("config", cwd=repo).returncode == 2


def test_settings_nested_past_the_recursion_limit_are_bad_input(repo):
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("[" * 5000 + "]" * 5000 + "\n")
    out = brat("sessions", "list", cwd=repo)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nested" in out.stderr, out.stderr
