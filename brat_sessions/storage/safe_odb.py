"""A bounded reader for loose objects, in place of libgit2's own.

libgit2 up to 1.9.7 (the one pygit2 1.21 bundles) spins forever on a loose object
whose zlib stream stops early (libgit2#7342): a disk that filled up or a power loss
leaves exactly such files. So every repository brat opens gets an object database of
two backends: libgit2's pack reader, and this one for loose objects, which inflates
the file in Python and raises `DamagedObject` (a `pygit2.GitError`) on anything short
or malformed. A damaged loose copy of an object that is also packed defers to the pack.
Writing goes through libgit2's own loose writer. Remove this once pygit2 ships a
libgit2 with the fix; `tests/storage/test_damaged_objects.py` keeps the guarantee.
"""

from __future__ import annotations

import os
from pathlib import Path

import pygit2

from .plain_git import inflate_header, inflate_loose


class DamagedObject(pygit2.GitError):
    """A loose object whose file cannot be inflated or does not match its header."""


class SafeLooseBackend(pygit2.OdbBackend):
    def __init__(self, objects_dir: str, pack: pygit2.OdbBackendPack) -> None:
        super().__init__()
        self.dir = objects_dir
        self.pack = pack
        self._writer = pygit2.Odb()
        self._writer.add_backend(pygit2.OdbBackendLoose(objects_dir, -1, False), 1)

    def _path(self, hex_id: str) -> str:
        return f"{self.dir}/{hex_id[:2]}/{hex_id[2:]}"

    def _raw(self, hex_id: str) -> tuple[int, bytes]:
        try:
            with open(self._path(hex_id), "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise KeyError(hex_id) from None  # not here: libgit2 asks the next backend
        try:
            return inflate_loose(raw, hex_id)
        except ValueError as exc:
            raise DamagedObject(str(exc)) from None

    def read_cb(self, oid: pygit2.Oid) -> tuple[int, bytes]:
        return self._raw(str(oid))

    def read_header_cb(self, oid: pygit2.Oid) -> tuple[int, int]:
        """Type and size from the header only: size checks come before inflating the rest."""
        hex_id = str(oid)
        try:
            with open(self._path(hex_id), "rb") as fh:
                raw = fh.read(4096)
        except FileNotFoundError:
            raise KeyError(hex_id) from None
        try:
            return inflate_header(raw, hex_id)
        except ValueError as exc:
            raise DamagedObject(str(exc)) from None

    def exists_cb(self, oid: pygit2.Oid) -> bool:
        return os.path.exists(self._path(str(oid)))

    def _match(self, prefix: str) -> str:
        if len(prefix) == 40:
            if not os.path.exists(self._path(prefix)):
                raise KeyError(prefix)
            return prefix
        try:
            names = [
                n for n in os.listdir(f"{self.dir}/{prefix[:2]}") if n.startswith(prefix[2:]) and len(n) == 38
            ]
        except FileNotFoundError:
            names = []
        if not names:
            raise KeyError(prefix)
        if len(names) > 1:
            raise ValueError(prefix)  # ambiguous
        return prefix[:2] + names[0]

    def read_prefix_cb(self, prefix: str) -> tuple[int, bytes, pygit2.Oid]:
        # libgit2 1.9 loads object bodies through here, asking every backend
        hex_id = self._match(prefix)
        try:
            kind, body = self._raw(hex_id)
        except DamagedObject:
            if self.pack.exists(hex_id):
                raise KeyError(hex_id) from None  # a good packed copy wins
            raise
        return kind, body, pygit2.Oid(hex=hex_id)

    def exists_prefix_cb(self, prefix: str) -> pygit2.Oid:
        return pygit2.Oid(hex=self._match(prefix))

    def refresh_cb(self) -> None:
        pass

    def write_cb(self, _oid: pygit2.Oid, data: bytes, kind: int) -> None:
        self._writer.write(kind, data)


def install_safe_odb(repo: pygit2.Repository, objects_dir: Path) -> None:
    """Give `repo` the pack backend and the bounded loose backend (and its alternates)."""
    odb = pygit2.Odb()
    pack = pygit2.OdbBackendPack(str(objects_dir))
    odb.add_backend(pack, 3)
    odb.add_backend(SafeLooseBackend(str(objects_dir), pack), 2)
    alternates = objects_dir / "info" / "alternates"
    if alternates.exists():
        for raw in alternates.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                odb.add_disk_alternate(line if os.path.isabs(line) else str(objects_dir / line))
    repo.set_odb(odb)
