"""Session output logs kept in git: `refs/brat/sessions/outputs/<sha256 hex>` -> blob.

The ref keeps the bytes reachable (they survive gc) and travels with sync; the
name is the SHA-256 of exactly those bytes, so any clone can verify them.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import pygit2

from ..errors import BratError, Conflict, NotFound, refused
from ..rules import valid_output_name

OUTPUT_PREFIX = "refs/brat/sessions/outputs/"
MAX_FETCHED_OUTPUT = 256 * 2**20  # an output from another clone larger than this is not taken
_REF = re.compile(r"^sha256:([0-9a-f]{64})$")


def output_ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_output(repo: pygit2.Repository, data: bytes) -> str:
    """Store the bytes and return their `sha256:<hex>` reference."""
    ref = output_ref(data)
    put_output_ref(repo, ref[7:], repo.create_blob(data))
    return ref


MAX_TRIES = 40


def put_output_ref(repo: pygit2.Repository, name: str, oid: pygit2.Oid | str) -> None:
    """Point `refs/brat/sessions/outputs/<name>` at `oid`, the blob whose SHA-256 is `name`.
    Another process writing the same output at once (the same bytes: the same blob) holds
    the ref's lock for a moment: done once the ref holds `oid`, else tried again."""
    from ..clock import pause_after_lost_race

    full = OUTPUT_PREFIX + name
    for attempt in range(MAX_TRIES):
        try:
            repo.references.create(full, oid, force=True)
            return
        except (pygit2.GitError, OSError) as exc:
            refused(exc, full)
            ref = repo.references.get(full)
            if ref is not None and str(ref.target) == str(oid):
                return
            pause_after_lost_race(attempt)
    raise Conflict(f"output ref {full} stayed locked; try again")


def store_file(repo: pygit2.Repository, path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return store_stream(repo, fh)
    except FileNotFoundError:
        return None


def store_stream(repo: pygit2.Repository, fh: BinaryIO) -> str:
    """`store_output` for an open file, read once and never whole into memory (a log can
    be GBs): the bytes it holds now, hashed as they go into the blob, so the name is the
    hash of exactly what was stored even if the file still grows."""
    reader = _Hashing(fh, os.fstat(fh.fileno()).st_size)
    oid = repo.create_blob_fromiobase(reader)
    digest = reader.sha.hexdigest()
    put_output_ref(repo, digest, oid)
    return "sha256:" + digest


class _Hashing(io.RawIOBase):
    """At most `limit` bytes of `fh`, with the SHA-256 of what was read."""

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        super().__init__()
        self.fh, self.left, self.sha = fh, limit, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        n = self.fh.readinto(view) or 0  # type: ignore[attr-defined]
        self.sha.update(view[:n])
        self.left -= n
        return n


def read_output(repo: pygit2.Repository, ref: str) -> bytes:
    """The stored bytes for a `sha256:` ref, verified against the hash."""
    m = _REF.match(ref or "")
    if not m:
        raise NotFound(f"{ref!r} is not a sha256: output reference")
    stored = repo.references.get(OUTPUT_PREFIX + m.group(1))
    if stored is None:
        raise NotFound(f"output {ref} is not in this clone (run `brat sync` to fetch it)")
    try:
        blob = repo[stored.target]
    except (KeyError, pygit2.GitError) as exc:
        raise BratError(f"output {ref} cannot be read here: {exc}") from None
    data = blob.data if isinstance(blob, pygit2.Blob) else b""
    if not isinstance(blob, pygit2.Blob) or hashlib.sha256(data).hexdigest() != m.group(1):
        raise BratError(f"output {ref} is corrupt: its bytes do not match the hash")
    return data


def verified_output(repo: pygit2.Repository, name: str, oid: str) -> bool | None:
    """Is `oid` a blob of at most MAX_FETCHED_OUTPUT bytes whose SHA-256 is `name` (64
    lowercase hex)? None when its object cannot be read here (a passing failure, not a
    verdict). For outputs from elsewhere: the size is read before the bytes (a few MB of
    pushed zeros can inflate to GBs)."""
    if not valid_output_name(name):
        return False
    try:
        kind, size = repo.odb.read_header(oid)
        if kind != pygit2.enums.ObjectType.BLOB or size > MAX_FETCHED_OUTPUT:
            return False
        blob = repo[oid]
    except (KeyError, ValueError, pygit2.GitError):
        return None
    return isinstance(blob, pygit2.Blob) and hashlib.sha256(blob.data).hexdigest() == name
