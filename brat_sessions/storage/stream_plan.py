"""The planning side of a cold replay (storage/stream.py), run as its own process.

    git log --raw -t -z ... | python -m brat_sessions.storage.stream_plan GIT_DIR HEAD | git cat-file ...

It reads `git log --first-parent --raw -t -z --format='%H %P'` on stdin and writes, for
each commit, requests for `git cat-file --batch='%(objectname) %(objecttype)
%(objectsize) %(rest)'`, where `%(rest)` tells the reader what it is reading: its
meta.json blob with `+ COMMIT NAME PARENTS`, then its chunk blob; or, for a commit to be
read with libgit2, the commit object with `- COMMIT - PARENTS`. The last request is the
target commit with `.` (the log ended) or `! MESSAGE` (planning cannot go on: the reader
reads the rest with libgit2). Each commit's `meta.json` and `events/` entries (trees included)
are carried back from the head (`git ls-tree` of the head, then each diff undone and
checked). It runs apart from the reader so that its work never waits for the reader's
interpreter lock; it imports nothing but the standard library.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import IO

BATCH = 64  # commits requested from cat-file at a time
_CHUNK_PATH = re.compile(rb"events/[^/]+/[^/]+/[^/]+/[0-9a-f]{64}\.bin")
_FILE_MODES = (b"100644", b"100755")
_TREE = b"040000"
_EMPTY_TREES = (
    b"4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    b"6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",  # SHA-256
)
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Files = dict[bytes, tuple[bytes, bytes]]  # tracked path -> (mode, oid)


class PlanBroken(Exception):
    """The log's output does not fit what is known: the reader goes on with libgit2."""


def tokens(stream: IO[bytes]) -> Iterator[bytes]:
    """The NUL-separated fields of `git log -z` / `git ls-tree -z` output."""
    pending = b""
    while block := stream.read(1 << 16):
        parts = (pending + block).split(b"\0")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def tracked(path: bytes) -> bool:
    """The paths a plan depends on; the rest of a commit's tree is ignored, as by pygit2."""
    return path == b"meta.json" or path == b"events" or path.startswith(b"events/")


def request(oid: str, parents: list[str], files: Files) -> bytes:
    """The cat-file requests for one commit: its blobs when its tracked entries are exactly
    `meta.json` and the chain `events/a/b/c/<name>.bin` (trees included), else the commit
    alone (marked to be read with libgit2)."""
    head = f"{oid} - {oid} - {' '.join(parents)}\n".encode()
    meta = files.get(b"meta.json")
    if meta is None or meta[0] not in _FILE_MODES or len(files) != 6:
        return head
    chunks = [p for p, (mode, _) in files.items() if p != b"meta.json" and mode != _TREE]
    if len(chunks) != 1 or not _CHUNK_PATH.fullmatch(chunks[0]):
        return head
    path = chunks[0]
    mode, chunk = files[path]
    parts = path.split(b"/")
    trees = [files.get(b"/".join(parts[:n]), (b"", b"")) for n in range(1, 5)]
    # an empty folder can hide a file whose name holds a "/" (only a hand-made tree does)
    if mode not in _FILE_MODES or any(m != _TREE or o in _EMPTY_TREES for m, o in trees):
        return head
    return b"%s + %s %s %s\n%s\n" % (meta[1], oid.encode(), parts[-1], " ".join(parents).encode(), chunk)


def undo(files: Files, lines: list[tuple[bytes, bytes]]) -> None:
    """Turn a commit's tracked entries into its first parent's, undoing its raw diff lines
    (additions and changes first, so that a path that changed type fits); PlanBroken when
    a line does not fit what is known (odd trees, odd output)."""
    parsed = [(info[1:].split(b" "), path) for info, path in lines]
    for (old_mode, new_mode, old, new, status), path in sorted(parsed, key=lambda p: p[0][4] == b"D"):
        current = files.get(path)
        if status == b"A" and current == (new_mode, new):
            del files[path]
        elif (status == b"D" and current is None) or (status in (b"M", b"T") and current == (new_mode, new)):
            files[path] = (old_mode, old)
        else:
            raise PlanBroken(f"git log shows {status.decode(errors='replace')} for an entry it does not fit")


def head_files(git_dir: str, target: str) -> Files:
    """The tracked entries of the target commit's tree."""
    out = subprocess.run(
        ["git", "--git-dir", git_dir, "ls-tree", "-r", "-t", "-z", "--full-tree", target],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise PlanBroken("git ls-tree failed")
    files: Files = {}
    for entry in out.stdout.split(b"\0"):
        info, _, path = entry.partition(b"\t")
        if not tracked(path):
            continue
        mode, _kind, oid = info.split(b" ")
        if path in files:
            raise PlanBroken("the head's tree names an entry twice")
        files[path] = (mode, oid)
    return files


def plan(log: IO[bytes], out: IO[bytes], git_dir: str, target: str) -> None:
    """Turn `git log -z --raw -t` output into cat-file requests, BATCH commits at a time."""
    files = head_files(git_dir, target)
    batch: list[bytes] = []
    info = b""
    lines: list[tuple[bytes, bytes]] = []  # the tracked raw lines of the last commit
    for field in tokens(log):
        if info:  # the path of the raw line before
            if tracked(field):
                lines.append((info, field))
            info = b""
            continue
        token = field.lstrip(b"\n")
        if token.startswith(b":"):
            info = token
        elif token:  # a new commit: "<oid> <parents>"
            header = token.decode("ascii").split()
            if not header or not all(_OID.fullmatch(h) for h in header):
                raise PlanBroken("unexpected git log output")
            if lines:
                undo(files, lines)  # the commit before, undone: this one's entries
                lines = []
            batch.append(request(header[0], header[1:], files))
            if len(batch) >= BATCH:
                out.write(b"".join(batch))
                out.flush()
                batch = []
    out.write(b"".join(batch))


def main(argv: list[str]) -> int:
    git_dir, target = argv[1], argv[2]
    out = sys.stdout.buffer
    try:
        try:
            plan(sys.stdin.buffer, out, git_dir, target)
            out.write(f"{target} .\n".encode())
        except (PlanBroken, OSError, ValueError) as exc:
            out.write(f"{target} ! {' '.join(str(exc).split()) or type(exc).__name__}\n".encode())
        out.flush()
    except BrokenPipeError:  # the reader stopped early
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # (no error at exit flushing stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
