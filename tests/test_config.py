"""`.brat/sessions.yaml`, and its checked values kept in the data dir (no PyYAML import
while the file is unchanged)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from brat_sessions import config
from brat_sessions.config import Config, load_config
from brat_sessions.errors import BadInput
from brat_sessions.worker.api import Tracker

from .helpers import WORKTREE_ENV, brat, brat_json, git, make_repo, wal_commit_count


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
    _write(root, "timeout: 75\n")
    before = (root / ".brat" / "sessions.yaml").stat()
    load_config(root, cache)
    _write(root, "timeout: 99\n")  # the same size, and the same modification time put back
    os.utime(root / ".brat" / "sessions.yaml", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert load_config(root, cache).timeout == 99


def test_a_file_changed_just_now_is_not_kept(dirs):
    root, cache = dirs
    _write(root, "timeout: 75\n")
    os.utime(root / ".brat" / "sessions.yaml", (time.time() - 3600,) * 2)  # (cp -p, touch -d ...)
    assert load_config(root, cache).timeout == 75
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
    _write(root, "timeout: 75\n")
    load_config(root, cache)
    kept = (cache / "config-cache.json").read_text()
    assert "75.0" in kept
    for damage in (
        "{not json",
        kept.replace("75.0", '"75"'),  # a value that fails the checks
        kept.replace("75.0", "0.0"),  # (as an older brat kept it: below the bound)
        kept.replace("75.0", "[" * 1000 + "]" * 1000),  # (and far too big)
        kept.replace("75.0", "1" * 5000),
    ):
        (cache / "config-cache.json").write_text(damage)
        assert load_config(root, cache).timeout == 75
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


# --- a settings file written by an attacker, arriving with `git pull` -----------------


@pytest.fixture
def pulled(tmp_path):
    """A victim clone with a live session and an attacker's clone of the same remote:
    `pulled(write)` has the attacker write `.brat/` (write(folder)), commit and push it,
    and the victim pull it; the victim's repository. `pulled.session` is its session."""
    victim = make_repo(tmp_path / "victim")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(victim, "remote", "add", "origin", str(remote))
    git(victim, "push", "-q", "-u", "origin", "main")
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(remote), str(attacker))
    task = brat_json("task", "create", "Victim's task", cwd=victim)["task_id"]

    def pull(write) -> Path:
        (attacker / ".brat").mkdir(exist_ok=True)
        write(attacker / ".brat")
        git(attacker, "add", "-A")
        git(attacker, "commit", "-qm", "Tune the session settings")
        git(attacker, "push", "-q", "origin", "main")
        git(victim, "pull", "-q", "--ff-only", "origin", "main")
        return victim

    pull.victim = victim
    pull.task = task
    pull.session = brat_json("sessions", "start", "--task", task, cwd=victim)["session_id"]
    return pull


def _link(target: Path | str):
    """An attacker's `write`: `.brat/sessions.yaml` a symbolic link to `target`."""
    return lambda folder: (folder / "sessions.yaml").symlink_to(target)


def _text(text: str):
    """An attacker's `write`: `.brat/sessions.yaml` holding `text`."""
    return lambda folder: (folder / "sessions.yaml").write_text(text)


def _one_line_refusal(out, *words: str) -> None:
    """Exit 2 (a bad settings file), one line on stderr naming the file and saying why."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert ".brat/sessions.yaml" in out.stderr and all(w in out.stderr for w in words), out.stderr


def _memory_limit() -> None:
    """(In the child) at most 1 GiB of address space: reading /dev/zero fails, not the machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def _still_live(pull) -> None:
    """The victim's session was not reaped: no exit was written, and once the attacker's
    commit is reverted the session is listed live."""
    git(pull.victim, "revert", "--no-edit", "HEAD")
    (session,) = brat_json("sessions", "list", cwd=pull.victim)["sessions"]
    assert session["session_id"] == pull.session and session["exit_reason"] is None, session


COMMANDS = [("sessions", "list"), ("config",), ("sessions", "reap", "--dry-run"), ("sessions", "reap")]


def test_a_pulled_link_to_dev_zero_is_refused_without_reading_it(pulled):
    victim = pulled(_link("/dev/zero"))
    assert (victim / ".brat" / "sessions.yaml").is_symlink()  # (git made the link)
    for args in COMMANDS:
        out = brat(*args, cwd=victim, preexec_fn=_memory_limit)
        _one_line_refusal(out, "a symbolic link", "never through a link")
    _still_live(pulled)


def test_a_pulled_link_to_a_fifo_is_refused_at_once(pulled, tmp_path):
    fifo = tmp_path / "victim-fifo"  # (a FIFO on the victim's machine whose path the attacker knows)
    os.mkfifo(fifo)
    victim = pulled(_link(fifo))
    for args in COMMANDS:
        _one_line_refusal(brat(*args, cwd=victim, timeout=30), "a symbolic link")
    _still_live(pulled)


def test_a_fifo_in_place_of_the_file_is_refused_at_once(repo):
    (repo / ".brat").mkdir()
    os.mkfifo(repo / ".brat" / "sessions.yaml")  # (git cannot make one; the user may)
    _one_line_refusal(brat("config", cwd=repo, timeout=30), "a FIFO (named pipe), not a settings file")


def test_a_pulled_link_to_a_file_outside_the_repository_is_neither_read_nor_echoed(pulled, tmp_path):
    secret = tmp_path / "home" / ".aws" / "credentials.yaml"
    secret.parent.mkdir(parents=True)
    secret.write_text("aws_secret_access_key: wJalrXUtnFEMI\n")
    victim = pulled(_link(secret))
    for args in COMMANDS:
        for out in (brat(*args, cwd=victim), brat(*args, "--json", cwd=victim)):
            assert out.returncode == 2 and "symbolic link" in out.stderr + out.stdout, out.stderr
            assert "aws_secret" not in out.stderr + out.stdout and "wJalr" not in out.stderr + out.stdout
    _still_live(pulled)


def test_a_pulled_dot_brat_that_links_to_a_folder_outside_is_not_read(pulled, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "sessions.yaml").write_text("private_token: 7f3e9\n")

    def write(folder: Path) -> None:
        folder.rmdir()
        folder.symlink_to(outside)

    victim = pulled(write)
    for args in COMMANDS:
        out = brat(*args, cwd=victim)
        _one_line_refusal(out, ".brat is a symbolic link")
        assert "private_token" not in out.stderr and "7f3e9" not in out.stderr


def test_a_pulled_settings_file_over_64_kib_is_refused_unread(pulled):
    padding = "# " + "x" * 78 + "\n"
    victim = pulled(_text("leaked_marker: 1\n" + padding * 820))  # 65,617 bytes
    for args in COMMANDS:
        out = brat(*args, cwd=victim, preexec_fn=_memory_limit)
        _one_line_refusal(out, "larger than 64 KiB")
        assert "leaked_marker" not in out.stderr
    _still_live(pulled)


def test_a_settings_file_of_exactly_64_kib_is_read(repo):
    text = "timeout: 120\n"
    _write(repo, text + "#" * (64 * 1024 - len(text) - 1) + "\n")
    assert (repo / ".brat" / "sessions.yaml").stat().st_size == 64 * 1024
    assert load_config(repo).timeout == 120


def test_pulled_timeouts_of_zero_reap_nothing_and_run_starts_nothing(pulled):
    victim = pulled(_text("timeout: 0\nspawn_timeout: 0\nclock_skew: 0\n"))
    commits = wal_commit_count(victim)
    out = brat("sessions", "reap", cwd=victim)
    _one_line_refusal(out, "key 'timeout' must be a number of seconds from 10 to 86400, got 0")
    out = brat("sessions", "reap", "--json", cwd=victim)
    assert out.returncode == 2 and json.loads(out.stderr)["error"]["code"] == "bad_arguments"
    out = brat("sessions", "run", "--task", pulled.task, "--", "sleep", "30", cwd=victim)
    _one_line_refusal(out, "key 'timeout'")
    assert wal_commit_count(victim) == commits  # no exit written, no session started
    _still_live(pulled)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("spawn_timeout: 0\n", "key 'spawn_timeout' must be a number of seconds from 10 to 86400, got 0"),
        ("timeout: 1000000000\n", "key 'timeout' must be a number of seconds from 10 to 86400"),
        ("heartbeat_interval: 1.0e-300\n", "key 'heartbeat_interval' must be a number of seconds from 1 to"),
        ("clock_skew: 31536000\n", "key 'clock_skew' must be a number of seconds from 0 to 3600"),
        (
            "heartbeat_interval: 30\ntimeout: 59\n",
            "key 'timeout' must be at least 60 seconds, 2 x heartbeat_interval of 30, got 59: "
            "a shorter one would reap a live session between two of its heartbeats",
        ),
        ("timeout: 45\n", "2 x the default heartbeat_interval of 30, got 45"),
    ],
)
def test_pulled_numbers_out_of_bounds_are_refused_and_reap_nothing(pulled, text, says):
    victim = pulled(_text(text))
    commits = wal_commit_count(victim)
    _one_line_refusal(brat("sessions", "reap", cwd=victim), says)
    _one_line_refusal(brat("sessions", "run", "--task", pulled.task, "--", "true", cwd=victim), says)
    assert wal_commit_count(victim) == commits
    _still_live(pulled)


def test_a_value_built_from_aliases_is_named_by_its_kind_not_printed(pulled):
    # 31 levels of tenfold aliases: 10**31 items, in 1 KB (its repr would never end)
    inner = "&a0 [" + ", ".join(["y"] * 10) + "]"
    for n in range(1, 31):
        inner = f"&a{n} [{inner}, " + ", ".join([f"*a{n - 1}"] * 9) + "]"
    victim = pulled(_text(f"timeout: {inner}\n"))
    out = brat("config", cwd=victim, timeout=30, preexec_fn=_memory_limit)
    _one_line_refusal(out, "key 'timeout' must be a number of seconds from 10 to 86400, got a list")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("timeout: 1" + "0" * 5000 + "\n", "a value that cannot be read (Exceeds the limit"),
        ("timeout: 0x" + "f" * 5000 + "\n", "got a number too long to show"),
        ("timeout: 2001-13-01\n", "a value that cannot be read (month must be in 1..12)"),
        ("k" * 1000 + ": 1\n", "unknown key 'kkkkk"),
    ],
)
def test_a_value_python_cannot_build_or_show_is_one_line(repo, text, says):
    _write(repo, text)
    out = brat("config", cwd=repo)
    _one_line_refusal(out, says)
    assert len(out.stderr) < 600


# --- the bounds, one by one ---------------------------------------------------------


def test_the_documented_defaults_written_out_are_valid(dirs):
    root, _ = dirs
    _write(
        root,
        "heartbeat_interval: 30\ntimeout: 120\nspawn_timeout: 300\nclock_skew: 5\n"
        "read_snapshots: true\nsnapshot_events: 10000\nsnapshot_days: 7\n",
    )
    assert load_config(root) == Config(timeout=120)
    assert Config().effective_timeout == 120


@pytest.mark.parametrize(("key", "low", "high"), [(k, lo, hi) for k, (lo, hi, _) in config.BOUNDS.items()])
def test_each_number_is_checked_against_its_range(dirs, key, low, high):
    root, _ = dirs
    alone = {"timeout": "heartbeat_interval: 1\n"}.get(key, "")  # (the default 30 s wants 60)
    for fine in (low, high):
        _write(root, f"{alone}{key}: {fine!r}\n")
        assert getattr(load_config(root), key) == fine
    for bad in (repr(low - 0.5), repr(high + 1), "1.0e+400", "-.inf", ".nan", "true", "'30'"):
        _write(root, f"{alone}{key}: {bad}\n")
        with pytest.raises(BadInput, match=rf"key '{key}' must be a (whole )?number of \w+ from "):
            load_config(root)


def test_a_large_heartbeat_interval_keeps_its_derived_timeout_in_bounds(dirs):
    root, _ = dirs
    high = config.BOUNDS["heartbeat_interval"][1]
    _write(root, f"heartbeat_interval: {high}\n")
    assert load_config(root).effective_timeout == 3 * high + 30 <= config.BOUNDS["timeout"][1]


def test_flags_keep_their_own_checks(dirs):
    """Command-line flags are the caller's own: the file's bounds are not theirs."""
    root, _ = dirs
    assert load_config(root).override(timeout=0, spawn_timeout=0).effective_timeout == 0


# --- the copy kept in the data dir never answers for a file that is refused ----------


def _forge_copy(cache: Path, path: Path, values: dict) -> None:
    """A kept copy for `path` as it is now (its lstat), as if brat had kept it."""
    stamp = config._stamp(path, os.lstat(path))
    (cache / "config-cache.json").write_text(json.dumps({"stamp": stamp, "values": values}))


def test_a_kept_copy_never_answers_for_a_link(dirs, settled, tmp_path):
    root, cache = dirs
    good = tmp_path / "good.yaml"
    good.write_text("timeout: 75\n")
    (root / ".brat").mkdir()
    (root / ".brat" / "sessions.yaml").symlink_to(good)
    _forge_copy(cache, root / ".brat" / "sessions.yaml", {"timeout": 75.0})
    with pytest.raises(BadInput, match="a symbolic link"):
        load_config(root, cache)
    # nor for a regular file reached through a `.brat` that is a link
    (root / ".brat" / "sessions.yaml").unlink()
    (root / ".brat").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sessions.yaml").write_text("timeout: 75\n")
    (root / ".brat").symlink_to(elsewhere)
    _forge_copy(cache, root / ".brat" / "sessions.yaml", {"timeout": 75.0})
    with pytest.raises(BadInput, match=r"\.brat is a symbolic link"):
        load_config(root, cache)


def test_values_an_older_brat_kept_are_checked_against_the_bounds(dirs, settled):
    root, cache = dirs
    _write(root, "timeout: 0\nspawn_timeout: 0\n")  # (kept before the bounds existed)
    _forge_copy(cache, root / ".brat" / "sessions.yaml", {"timeout": 0.0, "spawn_timeout": 0.0})
    with pytest.raises(BadInput, match="key 'timeout'"):
        load_config(root, cache)


@contextmanager
def _at_most(seconds: int):
    """Fail, not hang, when the block takes longer (opening a FIFO waits for a writer)."""

    def expire(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["link", "fifo", "big", "folder link"])
def test_a_refused_file_is_never_kept_and_a_good_one_after_it_is(dirs, settled, tmp_path, kind):
    root, cache = dirs
    path = root / ".brat" / "sessions.yaml"
    good = tmp_path / "good"
    good.mkdir()
    (good / "sessions.yaml").write_text("timeout: 75\n")
    if kind == "folder link":
        (root / ".brat").symlink_to(good)
    else:
        path.parent.mkdir()
    if kind == "link":
        path.symlink_to(good / "sessions.yaml")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "big":
        _write(root, "timeout: 75\n" + "#" * 70_000 + "\n")
    for _ in range(2):
        with _at_most(10), pytest.raises(BadInput, match=r"link|FIFO|64 KiB"):
            load_config(root, cache)
    assert not (cache / "config-cache.json").exists()
    if kind == "folder link":
        (root / ".brat").unlink()
    else:
        path.unlink()
    _write(root, "timeout: 75\n")
    assert load_config(root, cache).timeout == 75
    assert (cache / "config-cache.json").exists()
