"""Shared helpers for tests: real git repositories and real `brat` processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def git(cwd: Path | str, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("hello\n")
    git(path, "add", "README")
    git(path, "commit", "-qm", "init")
    return path


# Child processes import brat_sessions from this working tree, however it was installed.
WORKTREE_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def brat(
    *args: str,
    cwd: Path | str | None = None,
    env: dict | None = None,
    input: str | None = None,
    timeout: float = 60,
    preexec_fn=None,
) -> subprocess.CompletedProcess:
    """Run the real `brat` command in a new process (from this working tree); `preexec_fn`
    runs in the child first (to set a resource limit, say)."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "brat_sessions.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, **WORKTREE_ENV, **(env or {})},
        input=input,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def brat_json(*args: str, cwd: Path | str | None = None, env: dict | None = None) -> dict:
    out = brat(*args, "--json", cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    envelope = json.loads(out.stdout)
    assert envelope["schema_version"] == 1 and envelope["ok"] is True
    return envelope["data"]


def wal_commit_count(repo: Path) -> int:
    out = subprocess.run(
        ["git", "rev-list", "--count", "refs/grite/wal"], cwd=repo, capture_output=True, text=True
    )
    return int(out.stdout.strip()) if out.returncode == 0 else 0


def append_raw(repo: Path, events: list, actor: str = "0" * 32) -> str:
    """Append events in one commit, exactly as given (for projection tests)."""
    from brat_sessions.storage.repo import open_repo
    from brat_sessions.storage.wal import Wal

    head, _ = Wal(open_repo(repo)).append(actor, lambda h: list(events))
    return head


T0 = 1_700_000_000_000  # a realistic time (ms): block times must lie between 2000 and 2200


def block_text(**fields) -> str:
    from brat_sessions.sessions.block import format_block

    base = {
        "state": "running",
        "session_id": "s-20250114-0001",
        "role": "witness",
        "session_type": "polecat",
        "engine": "codex",
        "worktree": "",
        "started_ts": T0,
    }
    base.update(fields)
    return format_block(base)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy (for real processes; not a stand-in for a clock)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def brat_on_terminal(
    *args: str, cwd: Path | str, env: dict | None = None, columns: int = 80, timeout: float = 60
) -> tuple[int, str]:
    """Run `brat` with a pseudo-terminal of `columns` columns as its stdout and stderr."""
    import fcntl
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "brat_sessions.cli", *args],
        cwd=cwd,
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, **WORKTREE_ENV, **(env or {})},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(main)
    return proc.returncode, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def clones_of_one_remote(tmp_path: Path, *names: str) -> tuple[Path, ...]:
    """A bare `remote.git` and a repository of each name with it as origin."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    clones = tuple(make_repo(tmp_path / name) for name in names)
    for clone in clones:
        git(clone, "remote", "add", "origin", str(remote))
    return clones


def git_blob(repo: Path, data: bytes) -> str:
    """Write `data` as a blob with git's plumbing; its id."""
    return (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )


def push_snapshot(
    repo: Path, number: int | str, chunks: list[bytes], counts: list[int], wal_head: str
) -> str:
    """A snapshot commit made with git's plumbing, pushed as refs/grite/snapshots/<number>."""

    def mktree(text: str) -> str:
        return (
            subprocess.run(["git", "mktree"], cwd=repo, input=text.encode(), capture_output=True, check=True)
            .stdout.decode()
            .strip()
        )

    entries = "".join(f"100644 blob {git_blob(repo, c)}\t{i:04d}.bin\n" for i, c in enumerate(chunks))
    meta = {
        "schema_version": 1,
        "created_ts": 1,
        "wal_head": wal_head,
        "event_count": sum(counts),
        "chunks": [
            {
                "path": f"events/{i:04d}.bin",
                "chunk_hash": hashlib.blake2b(c, digest_size=32).hexdigest(),
                "event_count": n,
            }
            for i, (c, n) in enumerate(zip(chunks, counts, strict=True))
        ],
    }
    top = f"100644 blob {git_blob(repo, json.dumps(meta).encode())}\tsnapshot.json\n"
    if chunks:
        top = f"040000 tree {mktree(entries)}\tevents\n" + top
    commit = git(repo, "commit-tree", mktree(top), "-m", "Snapshot")
    git(repo, "push", "-q", "origin", f"{commit}:refs/grite/snapshots/{number}")
    return commit
