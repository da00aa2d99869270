"""Read a long stretch of the log through git's own plumbing (used to build a cold index).

`git log --first-parent --raw -t -z` names the entries each commit changes, newest
first; a planning process (`storage/stream_plan.py`) turns that into requests for one
`git cat-file --batch`, whose answers stream into this process, which decodes and folds
while git inflates and plans on other cores. Nothing is held for the whole log.

Anything this path does not expect (git missing or failing, a partial clone, a diff that
does not fit, a commit whose entries are not exactly `meta.json` and the chain
`events/Y/M/D/<hash>.bin`, an object that is missing or not a blob) is read by the
pygit2 path instead, commit by commit or for the rest of the log, so the result is the
same: the folds are idempotent. Commits come newest first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from .. import python_command
from ..errors import CorruptCommit
from . import wal as wal_module  # (complete by now: the log imports this module only when it replays)

if TYPE_CHECKING:
    from .wal import Prepare, Wal, WalCommit

# git keeps at most this much of a pack mapped (its default is far larger)
GIT_MEMORY = [
    *("-c", "core.packedGitLimit=32m", "-c", "core.packedGitWindowSize=4m"),
    *("-c", "core.deltaBaseCacheLimit=8m"),
]
PIPE_BYTES = 1 << 20
# what cat-file answers: %(rest) echoes what the planner wrote after each object name
_ANSWER = "--batch=%(objectname) %(objecttype) %(objectsize) %(rest)"


class StreamBroken(Exception):
    """The git plumbing cannot go on: the caller reads what is left with pygit2."""


def git_env() -> dict[str, str]:
    """The environment for git: none of the caller's GIT_* settings (pygit2 ignores them
    too), no replace refs (libgit2 does not apply them), never a prompt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_NO_REPLACE_OBJECTS="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return env


def usable(wal: Wal) -> bool:
    """False for a partial clone: git would fetch a missing object from the remote."""
    config = wal.repo.config
    try:
        if "extensions.partialclone" in config:
            return False
        return not any(e.name.endswith(".promisor") for e in config)  # whatever its value
    except Exception:  # noqa: BLE001 (an unreadable config: stay with pygit2)
        return False


class CommitStream:
    """The commits of `target` (not reachable from `since`), newest first, as pairs
    `(WalCommit or CorruptCommit, prepare(commit))`."""

    def __init__(self, wal: Wal, prepare: Prepare, target: str, since: str | None) -> None:
        self.wal, self.prepare, self.target, self.since = wal, prepare, target, since
        self.cwd = str(wal.ctx.common_dir)
        self.git = ["git", "--git-dir", self.cwd, *GIT_MEMORY]
        self.yielded: set[str] = set()
        self.oldest: tuple[str, list[str]] | None = None  # the last commit seen and its parents
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, args: list[str], stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE) -> Any:
        proc = subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, env=git_env(), cwd=self.cwd
        )
        self.procs.append(proc)
        return proc

    def _pipeline(self) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        """git log | planner | git cat-file: the log process, and cat-file's answers."""
        spec = [self.target] + ([f"^{self.since}"] if self.since else [])
        cat = self._start([*self.git, "cat-file", _ANSWER], stdin=subprocess.PIPE)
        log = self._start(
            [*self.git, "-c", "log.showSignature=false", "log", "--first-parent", "--raw", "-t", "-z",
             "--no-abbrev", "--no-renames", "--no-relative", "--no-color", "--no-mailmap",
             "--encoding=UTF-8", "--diff-merges=first-parent", "--ignore-submodules=none",
             "--format=%H %P", *spec, "--"]
        )  # fmt: skip
        planner = [*python_command("brat_sessions.storage.stream_plan"), self.cwd, self.target]
        for pipe in (log.stdout, cat.stdin, cat.stdout):
            _widen(pipe)
        self._start(planner, stdin=log.stdout, stdout=cat.stdin)
        log.stdout.close()  # (the planner holds them now)
        cat.stdin.close()
        return log, cat.stdout

    def __iter__(self) -> Iterator[tuple[WalCommit | CorruptCommit, Any]]:
        try:
            if not sys.executable:
                raise StreamBroken("no Python executable to plan with")
            log, out = self._pipeline()
            while (item := self._read(out)) is not None:
                yield item
                self.yielded.add(self.oldest[0] if self.oldest else "")
            if log.wait() != 0:
                raise StreamBroken("git log failed")
        finally:
            self.close()

    def _read(self, out: IO[bytes]) -> tuple[WalCommit | CorruptCommit, Any] | None:
        """The next commit, read as the planner asked; None at the end of the log."""
        oid, kind, size, rest = _header(out)
        if size < 0:  # (nothing says which commit it was for: the rest is read by libgit2)
            raise StreamBroken(f"git cat-file cannot read object {oid.decode(errors='replace')}")
        mark, _, rest = rest.partition(b" ")
        if mark in (b".", b"!"):
            _skip(out, size + 1)
            if mark == b"!":
                raise StreamBroken(rest.decode(errors="replace"))
            return None
        words = rest.decode(errors="replace").split()
        if mark not in (b"+", b"-") or len(words) < 2:
            raise StreamBroken("unexpected git cat-file output")
        commit_id, name, parents = words[0], words[1], words[2:]
        self.oldest = (commit_id, parents)
        if mark == b"-":
            _skip(out, size + 1)
            return wal_module.read_prepared(self.wal, commit_id, self.prepare)
        meta = _body(out, kind, size, wal_module.MAX_META_BYTES)
        _, chunk_kind, chunk_size, _ = _header(out)
        chunk = (
            _body(out, chunk_kind, chunk_size, wal_module.MAX_WAL_CHUNK_BYTES) if chunk_size >= 0 else None
        )
        if meta is None or chunk is None:
            return wal_module.read_prepared(self.wal, commit_id, self.prepare)  # names what is wrong
        try:
            commit = wal_module.decode_files(commit_id, meta, name, chunk)
        except CorruptCommit as exc:
            return exc, None
        return commit, self.prepare(commit)

    def close(self) -> None:
        """Stop git and the planner (also when the reader stops early)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.procs = []


def _widen(pipe: IO[bytes]) -> None:
    """Give a pipe 1 MiB of buffer where the system allows it (Linux: 64 KiB by default), so
    that each process of the stream does more at a time while the others wait for a core."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # (another system, or a lower limit: the default buffer works too)


def _skip(out: IO[bytes], size: int) -> None:
    """Read and drop `size` bytes of cat-file's answers."""
    while size and (piece := out.read(min(size, 1 << 20))):
        size -= len(piece)
    if size:
        raise StreamBroken("git cat-file ended early")


def _header(out: IO[bytes]) -> tuple[bytes, bytes, int, bytes]:
    """The next cat-file answer's object id, type, size and %(rest); size -1 (and nothing
    to read) for an object git cannot give ("<oid> missing", "ambiguous")."""
    line = out.readline()
    if not line:
        raise StreamBroken("git cat-file ended early")
    oid, kind, size, rest = (line.rstrip(b"\n").split(b" ", 3) + [b"", b"", b""])[:4]
    return oid, kind, int(size) if size.isdigit() else -1, rest


def _body(out: IO[bytes], kind: bytes, size: int, limit: int) -> bytes | None:
    """The answer's bytes when it is a blob of at most `limit` bytes, else None (read and
    dropped: the pygit2 path names the commit)."""
    if kind != b"blob" or size > limit:
        _skip(out, size + 1)
        return None
    data = out.read(size + 1)
    if len(data) != size + 1:
        raise StreamBroken("git cat-file ended early")
    return data[:-1]
