"""Reading a repository the way git stores it, without libgit2: for the warm path.

When the index is current, `sessions list`, `show` and `task list` need only the WAL
head and the leases. Importing pygit2 costs more than the rest of such a command,
so these read git's files directly: the `.git` dir (or file) and `commondir`, loose
refs and `packed-refs`, and loose objects (zlib). Anything else (reftable, a
symbolic ref, a packed lease blob, GIT_DIR and friends, an odd layout) raises
`Unsupported`, and the caller falls back to pygit2.
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}
_HEX = frozenset("0123456789abcdef")


class Unsupported(Exception):
    """A layout this reader does not handle: use pygit2."""


@dataclass(frozen=True)
class GitDirs:
    """Where git keeps a worktree's files, found without pygit2."""

    git_dir: Path  # this worktree's git dir
    common_dir: Path  # where refs and objects live
    worktree: Path | None  # the worktree the command runs in
    main_worktree: Path | None


def find(start: str | os.PathLike[str] | None) -> GitDirs:
    """The git dirs of the repository containing `start`, as git finds them."""
    if any(
        os.environ.get(v)
        for v in (
            "GIT_DIR",
            "GIT_COMMON_DIR",
            "GIT_OBJECT_DIRECTORY",
            "GIT_WORK_TREE",
            "GIT_CEILING_DIRECTORIES",
        )
    ):
        raise Unsupported("git environment variables")
    here = Path(os.fspath(start) if start is not None else os.getcwd()).resolve()
    if not here.is_dir():
        raise Unsupported(f"no such directory: {here}")  # the full workspace says so
    for folder in (here, *here.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return _dirs(dot, folder)
        if dot.is_file():
            text = dot.read_text().strip()
            if not text.startswith("gitdir: "):
                raise Unsupported(".git file")
            target = Path(text[8:])
            return _dirs(target if target.is_absolute() else (folder / target).resolve(), folder)
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir():
            return _dirs(folder, None)  # a bare repository
    raise Unsupported("not found here")


def _dirs(git_dir: Path, worktree: Path | None) -> GitDirs:
    common_file = git_dir / "commondir"
    common = (git_dir / common_file.read_text().strip()).resolve() if common_file.is_file() else git_dir
    if (common / "reftable").exists():
        raise Unsupported("reftable")
    if worktree is None:
        return GitDirs(git_dir, common, None, None)
    main = common.parent if common.name == ".git" else None
    if main is None:
        raise Unsupported("a worktree whose common dir is not <main>/.git")
    return GitDirs(git_dir, common, worktree, main)


def _oid(text: str) -> str:
    value = text.strip()
    if len(value) not in (40, 64) or not set(value) <= _HEX:
        raise Unsupported(f"ref holds {value[:20]!r}")
    return value


def _packed(common_dir: Path) -> dict[str, str]:
    try:
        lines = (common_dir / "packed-refs").read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except FileNotFoundError:
        return {}
    refs = {}
    for line in lines:
        if not line or line[0] in "#^":
            continue
        oid, _, name = line.partition(" ")
        refs[name] = _oid(oid)
    return refs


def read_ref(common_dir: Path, name: str) -> str | None:
    """The object id a ref points at, or None when there is no such ref."""
    try:
        text = (common_dir / name).read_bytes().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return _packed(common_dir).get(name)
    except IsADirectoryError:
        return None
    if text.startswith("ref:"):
        raise Unsupported("symbolic ref")
    return _oid(text)


def refs_under(common_dir: Path, prefix: str) -> dict[str, str]:
    """Every ref whose name starts with `prefix` (a folder, ending in `/`): name -> oid.
    (Plain strings and os.walk, not pathlib: a warm list reads one ref per live session.)
    Loose refs are read before `packed-refs`, as git does: a `git pack-refs` that runs
    meanwhile moves a ref into packed-refs before deleting its loose file, so it is seen
    in one or the other."""
    found: dict[str, str] = {}
    root = os.fspath(common_dir) + os.sep
    for folder, _, files in os.walk(root + prefix, onerror=_unless_gone):
        name_of_folder = folder[len(root) :].replace(os.sep, "/").rstrip("/")
        for file in files:
            if file.endswith(".lock"):
                continue
            try:
                text = read_file(os.path.join(folder, file)).decode("utf-8", "surrogateescape")
            except FileNotFoundError:
                continue  # deleted (an exit) while we looked
            if text.startswith("ref:"):
                raise Unsupported("symbolic ref")
            found[f"{name_of_folder}/{file}"] = _oid(text)
    packed = _packed(common_dir)
    return {name: oid for name, oid in packed.items() if name.startswith(prefix)} | found


def read_file(path: str, max_bytes: int = 65536) -> bytes:
    """A small regular file's bytes through the system calls alone (no buffered file
    object: a warm list reads two small files per live session). Anything else (a FIFO,
    a device, a file over `max_bytes`) is Unsupported: the full command line decides."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO must not block the open)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            raise Unsupported(f"{path}: not a small regular file")
        data = os.read(fd, max_bytes + 1)
        if len(data) > max_bytes:  # (grown since the fstat)
            raise Unsupported(f"{path}: not a small regular file")
        return data
    finally:
        os.close(fd)


def _unless_gone(exc: OSError) -> None:
    """os.walk's errors: a folder removed meanwhile (its last ref deleted) is skipped;
    any other (unreadable, too many open files) sends the command to pygit2 rather than
    answering with refs missing."""
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        raise Unsupported(f"cannot list {exc.filename}: {exc.strerror}")


def inflate_header(raw: bytes, hex_id: str) -> tuple[int, int]:
    """(type, size) from the first bytes of a loose object, without inflating the rest: a
    size check then comes before the memory is spent (a small file can inflate to GBs)."""
    try:
        head = zlib.decompressobj().decompress(raw, 64)
    except zlib.error as exc:
        raise ValueError(f"loose object {hex_id} is damaged: {exc}") from None
    nul = head.find(b"\0")
    kind, _, size = head[: max(nul, 0)].partition(b" ")
    if nul < 0 or kind not in _TYPES or not size.isdigit():
        raise ValueError(f"loose object {hex_id} is damaged (a bad header)")
    return _TYPES[kind], int(size)


def inflate_loose(raw: bytes, hex_id: str) -> tuple[int, bytes]:
    """(type, body) of a loose object's file; ValueError when it is damaged or truncated."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw)
    except zlib.error as exc:
        raise ValueError(f"loose object {hex_id} is damaged: {exc}") from None
    nul = data.find(b"\0", 0, 40)
    kind, _, size = data[: max(nul, 0)].partition(b" ")
    if (
        not inflater.eof
        or inflater.unused_data
        or nul < 0
        or kind not in _TYPES
        or not size.isdigit()
        or int(size) != len(data) - nul - 1
    ):
        raise ValueError(f"loose object {hex_id} is damaged (truncated or a bad header)")
    return _TYPES[kind], data[nul + 1 :]


def read_loose_blob(common_dir: Path, hex_id: str, limit: int) -> bytes:
    """A blob's bytes from its loose file; Unsupported when it is packed, damaged or large."""
    try:
        raw = read_file(os.path.join(common_dir, "objects", hex_id[:2], hex_id[2:]), limit + 1024)
    except FileNotFoundError:
        raise Unsupported("a packed object") from None
    try:
        kind, size = inflate_header(raw, hex_id)
        if kind != 3 or size > limit:
            raise Unsupported("not a small blob")
        return inflate_loose(raw, hex_id)[1]
    except ValueError as exc:
        raise Unsupported(str(exc)) from None
