"""Read a long stretch of the log through git's own plumbing (used to build a cold index).

`git log --first-parent --raw -t -z` names the entries each commit changes, newest
first, and one `git cat-file --batch` streams the blobs; git inflates objects in its own
processes while this one decodes and folds. Nothing is held for the whole log: each
commit's `meta.json` and `events/` entries (trees included) are carried back from the
head (`git ls-tree` of the head, then each diff undone and checked), requests are
written in small batches and read back in order.

Anything this path does not expect (git missing or failing, a partial clone, a diff that
does not fit, a commit whose entries are not exactly `meta.json` and the chain
`events/Y/M/D/<hash>.bin`, an object that is missing or not a blob) is read by the
pygit2 path instead, commit by commit or for the rest of the log, so the result is the
same: the folds are idempotent. Commits come newest first.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from ..errors import CorruptCommit

if TYPE_CHECKING:
    from .wal import Prepare, Wal, WalCommit

BATCH = 64  # commits requested from cat-file at a time
# git keeps at most this much of a pack mapped (its default is far larger)
GIT_MEMORY = [
    *("-c", "core.packedGitLimit=32m", "-c", "core.packedGitWindowSize=4m"),
    *("-c", "core.deltaBaseCacheLimit=8m"),
]
_CHUNK_PATH = re.compile(rb"events/[^/]+/[^/]+/[^/]+/[0-9a-f]{64}\.bin")
_FILE_MODES = (b"100644", b"100755")
_TREE = b"040000"
_EMPTY_TREES = (
    b"4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    b"6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",  # SHA-256
)
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_END = object()


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


def _tokens(stream: IO[bytes]) -> Iterator[bytes]:
    """The NUL-separated fields of `git log -z` / `git ls-tree -z` output."""
    pending = b""
    while block := stream.read(1 << 16):
        parts = (pending + block).split(b"\0")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _tracked(path: bytes) -> bool:
    """The paths a plan depends on; the rest of a commit's tree is ignored, as by pygit2."""
    return path == b"meta.json" or path == b"events" or path.startswith(b"events/")


class _Plan:
    """What to do with one commit: fetch its two blobs, or read it with pygit2."""

    __slots__ = ("chunk", "meta", "name", "oid")

    def __init__(self, oid: str, meta: bytes | None, chunk: bytes | None, name: str) -> None:
        self.oid, self.meta, self.chunk, self.name = oid, meta, chunk, name


def _plan(oid: str, files: dict[bytes, tuple[bytes, bytes]]) -> _Plan:
    """The blobs of a commit whose tracked entries are exactly `meta.json` and the chain
    `events/a/b/c/<name>.bin` (trees included); anything else is read with pygit2."""
    meta = files.get(b"meta.json")
    if meta is None or meta[0] not in _FILE_MODES or len(files) != 6:
        return _Plan(oid, None, None, "")
    chunks = [p for p, (mode, _) in files.items() if p != b"meta.json" and mode != _TREE]
    if len(chunks) != 1 or not _CHUNK_PATH.fullmatch(chunks[0]):
        return _Plan(oid, None, None, "")
    path = chunks[0]
    mode, chunk = files[path]
    parts = path.split(b"/")
    trees = [files.get(b"/".join(parts[:n]), (b"", b"")) for n in range(1, 5)]
    # an empty folder can hide a file whose name holds a "/" (only a hand-made tree does)
    if mode not in _FILE_MODES or any(m != _TREE or o in _EMPTY_TREES for m, o in trees):
        return _Plan(oid, None, None, "")
    return _Plan(oid, meta[1], chunk, parts[-1].decode())


def _undo(files: dict[bytes, tuple[bytes, bytes]], lines: list[tuple[bytes, bytes]]) -> None:
    """Turn a commit's tracked entries into its first parent's, undoing its raw diff lines
    (additions and changes first, so that a path that changed type fits); StreamBroken when
    a line does not fit what is known (odd trees, odd output)."""
    parsed = [(info[1:].split(b" "), path) for info, path in lines]
    for (old_mode, new_mode, old, new, status), path in sorted(parsed, key=lambda p: p[0][4] == b"D"):
        current = files.get(path)
        if status == b"A" and current == (new_mode, new):
            del files[path]
        elif (status == b"D" and current is None) or (status in (b"M", b"T") and current == (new_mode, new)):
            files[path] = (old_mode, old)
        else:
            raise StreamBroken(
                f"git log shows {status.decode(errors='replace')} for an entry it does not fit"
            )


class CommitStream:
    """The commits of `target` (not reachable from `since`), newest first, as pairs
    `(WalCommit or CorruptCommit, prepare(commit))`."""

    def __init__(self, wal: Wal, prepare: Prepare, target: str, since: str | None) -> None:
        self.wal, self.prepare, self.target, self.since = wal, prepare, target, since
        self.cwd = str(wal.ctx.common_dir)
        self.git = ["git", "--git-dir", self.cwd, *GIT_MEMORY]
        self.yielded: set[str] = set()
        self.oldest: tuple[str, list[str]] | None = None  # the last commit seen and its parents
        self.plans: queue.Queue[Any] = queue.Queue(maxsize=32)
        self.stopped = threading.Event()  # the reader is gone: the planning thread ends
        self.error: BaseException | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, args: list[str], stdin: int | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            self.git + args,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_env(),
            cwd=self.cwd,
        )
        self.procs.append(proc)
        return proc

    def _head_files(self) -> dict[bytes, tuple[bytes, bytes]]:
        out = subprocess.run(
            [*self.git, "ls-tree", "-r", "-t", "-z", "--full-tree", self.target],
            capture_output=True,
            check=False,
            env=git_env(),
            cwd=self.cwd,
        )
        if out.returncode != 0:
            raise StreamBroken("git ls-tree failed")
        files: dict[bytes, tuple[bytes, bytes]] = {}
        for entry in out.stdout.split(b"\0"):
            info, _, path = entry.partition(b"\t")
            if not _tracked(path):
                continue
            mode, _kind, oid = info.split(b" ")
            if path in files:
                raise StreamBroken("the head's tree names an entry twice")
            files[path] = (mode, oid)
        return files

    def _plan_all(self, log: subprocess.Popen[bytes], cat: subprocess.Popen[bytes]) -> None:
        """Thread: turn `git log -z --raw -t` output into plans, writing each batch's
        requests to cat-file before its plans are queued (the reader only waits for what
        was asked). The tracked entries are carried back from the head, one diff at a time."""
        try:
            files = self._head_files()
            assert log.stdout is not None and cat.stdin is not None
            batch: list[_Plan] = []
            info = b""
            lines: list[tuple[bytes, bytes]] = []  # the tracked raw lines of the last commit
            for field in _tokens(log.stdout):
                if self.stopped.is_set():
                    return
                if info:  # the path of the raw line before
                    if _tracked(field):
                        lines.append((info, field))
                    info = b""
                    continue
                token = field.lstrip(b"\n")
                if token.startswith(b":"):
                    info = token
                elif token:  # a new commit: "<oid> <parents>"
                    header = token.decode("ascii").split()
                    if not header or not all(_OID.fullmatch(h) for h in header):
                        raise StreamBroken("unexpected git log output")
                    if lines:
                        _undo(files, lines)  # the commit before, undone: this one's entries
                        lines = []
                    batch.append(_plan(header[0], files))
                    self.oldest = (header[0], header[1:])
                    if len(batch) >= BATCH:
                        self._send(batch, cat.stdin)
                        batch = []
            self._send(batch, cat.stdin)
            cat.stdin.close()
            if log.wait() != 0:
                raise StreamBroken("git log failed")
        except BaseException as exc:  # noqa: BLE001 (handed to the reading side)
            self.error = exc
        self._hand_over(_END)

    def _send(self, batch: list[_Plan], stdin: IO[bytes]) -> None:
        stdin.write(b"".join(p.meta + b"\n" + p.chunk + b"\n" for p in batch if p.meta and p.chunk))
        stdin.flush()
        self._hand_over(batch)

    def _hand_over(self, item: Any) -> None:
        """Queue `item` for the reader, unless it stopped reading (then drop it)."""
        while not self.stopped.is_set():
            try:
                self.plans.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[WalCommit | CorruptCommit, Any]]:
        spec = [self.target] + ([f"^{self.since}"] if self.since else [])
        log = self._start(
            ["-c", "log.showSignature=false", "log", "--first-parent", "--raw", "-t", "-z",
             "--no-abbrev", "--no-renames", "--no-relative", "--no-color", "--no-mailmap",
             "--encoding=UTF-8", "--diff-merges=first-parent", "--ignore-submodules=none",
             "--format=%H %P", *spec, "--"]
        )  # fmt: skip
        cat = self._start(["cat-file", "--batch"], stdin=subprocess.PIPE)
        threading.Thread(target=self._plan_all, args=(log, cat), daemon=True).start()
        assert cat.stdout is not None
        try:
            while (batch := self.plans.get()) is not _END:
                for plan in batch:
                    yield self._read(plan, cat.stdout)
                    self.yielded.add(plan.oid)
            if self.error is not None:
                raise StreamBroken(str(self.error))
        finally:
            self.close()

    def _read(self, plan: _Plan, out: IO[bytes]) -> tuple[WalCommit | CorruptCommit, Any]:
        from .wal import MAX_META_BYTES, MAX_WAL_CHUNK_BYTES, decode_files, read_prepared

        if plan.meta is None or plan.chunk is None:
            return read_prepared(self.wal, plan.oid, self.prepare)
        meta, chunk = _blob(out, MAX_META_BYTES), _blob(out, MAX_WAL_CHUNK_BYTES)
        if meta is None or chunk is None:
            return read_prepared(self.wal, plan.oid, self.prepare)  # names what is wrong
        try:
            commit = decode_files(plan.oid, meta, plan.name, chunk)
        except CorruptCommit as exc:
            return exc, None
        return commit, self.prepare(commit)

    def close(self) -> None:
        """Stop git and the planning thread (also when the reader stops early)."""
        self.stopped.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.procs = []


def _blob(out: IO[bytes], limit: int) -> bytes | None:
    """The next cat-file answer: a blob's bytes, or None for a missing object, another type or
    more than `limit` bytes (read and dropped: the pygit2 path names the commit)."""
    header = out.readline()
    if not header:
        raise StreamBroken("git cat-file ended early")
    fields = header.split()
    if len(fields) != 3:
        return None  # "<oid> missing" / "ambiguous"
    size = int(fields[2])
    if size > limit:
        left = size + 1
        while left and (piece := out.read(min(left, 1 << 20))):
            left -= len(piece)
        if left:
            raise StreamBroken("git cat-file ended early")
        return None
    data = out.read(size + 1)
    if len(data) != size + 1:
        raise StreamBroken("git cat-file ended early")
    return data[:-1] if fields[1] == b"blob" else None
