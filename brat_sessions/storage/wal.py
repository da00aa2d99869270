"""refs/grite/wal: write one commit per append (compare-and-swap), read and replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

import pygit2

from ..clock import pause_after_lost_race
from ..errors import Conflict, CorruptCommit, EnvironmentProblem, refused
from .context import WAL_REF as WAL_REF  # (re-exported: the log's name is used everywhere)
from .context import RepoContext, create_ref_if_absent

if TYPE_CHECKING:
    from .events import Event

# The chunk codec (cbor2, hashlib) loads on the first read or write, not on import:
# a warm `brat sessions list` never decodes a commit.

MAX_APPEND_ATTEMPTS = 200
STALE_LOCK_S = 10  # a lock file on the log older than this was left by a dead process
STREAM_FROM = 500  # commits; a shorter replay reads them with pygit2, one by one

Prepare = Callable[["WalCommit"], Any]


class WalCommit(NamedTuple):
    oid: str
    prev_wal: str | None
    actor: str
    events: list[Event]
    chunk: bytes = b""  # the chunk file as stored, so sync can re-append it unchanged


# a commit's files, at most: one append is a few events (a comment is parsed up to a
# million characters); decoding a chunk can take some seventy times its size in memory
# (16 MiB of empty arrays: 1.2 GB and 5 s)
MAX_META_BYTES = 64 * 1024
MAX_WAL_CHUNK_BYTES = 16 * 1024 * 1024


def _signature() -> pygit2.Signature:
    return pygit2.Signature("grite", "grit@local", int(time.time()), 0)


def _find_chunk(tree: pygit2.Tree, oid: str) -> pygit2.Blob:
    """The single `events/YYYY/MM/DD/<hash>.bin` blob of a commit's tree."""
    try:
        node: pygit2.Object = tree["events"]
    except KeyError:
        raise CorruptCommit(oid, "no events/ folder") from None
    for _ in range(4):
        if not isinstance(node, pygit2.Tree) or len(node) != 1:
            raise CorruptCommit(oid, "events/ must hold exactly one chunk")
        node = next(iter(node))
    if not isinstance(node, pygit2.Blob) or not (node.name or "").endswith(".bin"):
        raise CorruptCommit(oid, "no .bin chunk under events/YYYY/MM/DD/")
    return node


class Wal:
    """The log of one repository."""

    def __init__(self, ctx: RepoContext) -> None:
        self.ctx = ctx
        self.repo = ctx.repo
        # set by the last walk: did it reach the oldest commit here, and if so, why the
        # chain is not whole below it (None: it starts at the log's first commit)
        self.reached_root = False
        self.oldest: str | None = None  # the oldest commit here, when the walk reached it
        self.root_gap: str | None = None
        self.last_count: int | None = 0  # commits in the last replay_prepared (for progress)

    def head(self) -> str | None:
        ref = self.repo.references.get(WAL_REF)
        if ref is not None and isinstance(ref.target, str):  # (a symbolic ref names a ref)
            raise EnvironmentProblem(
                f"{WAL_REF} is a symbolic ref (to {ref.target}); grite's log must name a commit"
            )
        return str(ref.target) if ref is not None else None

    # reading -----------------------------------------------------------
    def read_commit(self, commit_or_id: pygit2.Commit | str) -> WalCommit:
        """Decode one commit; raises CorruptCommit naming it (a damaged or missing object
        of it included: reading one is bounded, see safe_odb.py)."""
        oid = commit_or_id if isinstance(commit_or_id, str) else str(commit_or_id.id)
        try:
            return self._decode_commit(commit_or_id)
        except KeyError:
            raise CorruptCommit(oid, "an object of it is missing", unreadable=True) from None
        except pygit2.GitError as exc:
            raise CorruptCommit(oid, str(exc), unreadable=True) from None

    def chunk_holds(self, oid: str, needle: bytes) -> bool:
        """Whether the commit's chunk holds these bytes, undecoded (a cheap look before
        `read_commit`: a text such as a session id is in a chunk as its UTF-8 bytes);
        False for a commit that cannot be read that way (`read_commit` names it)."""
        try:
            commit: Any = self.repo.get(oid)
            if not isinstance(commit, pygit2.Commit):
                return False
            blob = _find_chunk(commit.tree, oid)
            return not self._larger(blob, MAX_WAL_CHUNK_BYTES) and needle in blob.data
        except (KeyError, ValueError, pygit2.GitError, CorruptCommit):
            return False

    def _decode_commit(self, commit_or_id: pygit2.Commit | str) -> WalCommit:
        commit = self.repo[commit_or_id] if isinstance(commit_or_id, str) else commit_or_id
        oid = str(commit.id)
        if not isinstance(commit, pygit2.Commit):
            raise CorruptCommit(oid, "not a commit")
        tree = commit.tree
        try:
            meta_blob = tree["meta.json"]
        except KeyError:
            raise CorruptCommit(oid, "missing meta.json") from None
        if not isinstance(meta_blob, pygit2.Blob):
            raise CorruptCommit(oid, "meta.json is not valid")
        blob = _find_chunk(tree, oid)
        for part, limit, what in (
            (meta_blob, MAX_META_BYTES, "meta.json"),
            (blob, MAX_WAL_CHUNK_BYTES, "its chunk"),
        ):
            if self._larger(part, limit):
                raise CorruptCommit(oid, f"{what} is larger than {limit:,} bytes", oversize=True)
        return decode_files(oid, meta_blob.data, blob.name or "", blob.data)

    def commit_ids(self, head: str | None = None, since: str | None = None) -> list[str]:
        """Ids of the commits after `since` up to `head`, oldest first.

        Follows first parents back from the head (the chain grite writes), stopping at
        `since`; when `since` is not on the chain (a sync rebuilt it), at the point
        where the two chains meet.
        """
        ids = self._walk(head, since, None)
        assert ids is not None  # (only a limit stops the walk early)
        return ids

    def first_parents(self, tip: str) -> Iterator[str]:
        """The first-parent chain below `tip`, newest first (the chain the log is read on);
        it ends early at a commit that cannot be read."""
        try:
            walker = self.repo.walk(tip, pygit2.enums.SortMode.NONE)
            walker.simplify_first_parent()
            for commit in walker:
                yield str(commit.id)
        except (KeyError, ValueError, pygit2.GitError):
            return

    def on_chain(self, tip: str, oid: str, within: int | None = None) -> bool:
        """True when `oid` is on the first-parent chain below `tip` (among its `within`
        newest commits, when given). (A commit reachable only through a second parent holds
        nothing the log shows: readers follow first parents.)"""
        return oid in islice(self.first_parents(tip), within)

    def chain_base(self, a: str, b: str) -> str | None:
        """Where the first-parent chains of `a` and `b` meet (git's merge base follows
        every parent, so a merge commit could name a base no reader ever reaches: it is
        taken when it lies on both chains, two short walks; else both chains are walked)."""
        try:
            base = self.repo.merge_base(a, b)
        except (KeyError, ValueError, pygit2.GitError):
            base = None
        if base is not None and self.on_chain(a, str(base)) and self.on_chain(b, str(base)):
            return str(base)
        below_b = set(self.first_parents(b))
        return next((oid for oid in self.first_parents(a) if oid in below_b), None)

    def _walk(self, head: str | None, since: str | None, limit: int | None) -> list[str] | None:
        """`commit_ids`, or None as soon as `limit` commits are found (a long chain)."""
        head = head if head is not None else self.head()
        if head is None:
            return []
        ids: list[str] = []
        self.reached_root, self.root_gap = False, None
        try:
            commit: Any = self.repo[head]
        except pygit2.GitError as exc:
            raise EnvironmentProblem(f"{WAL_REF} points at a damaged commit {head[:12]}: {exc}") from None
        if not isinstance(commit, pygit2.Commit):
            raise EnvironmentProblem(f"{WAL_REF} points at a {commit.type_str}, not a commit")
        while True:
            oid = str(commit.id)
            if oid == since:
                break
            ids.append(oid)
            if limit is not None and len(ids) >= limit:
                return None
            parent = commit.parent_ids[0] if commit.parent_ids else None
            try:
                parent_commit = self.repo.get(parent) if parent is not None else None
            except pygit2.GitError as exc:  # a damaged commit: nothing older can be reached
                ids.append(str(parent))
                self.reached_root, self.oldest = True, ids[-1]
                self.root_gap = (
                    f"{WAL_REF} is incomplete: {exc}, so the commits before "
                    f"{str(parent)[:12]} cannot be read; repair the object store "
                    f"(`git fsck`) or clone again"
                )
                break
            if parent_commit is None:
                self.reached_root, self.oldest = True, ids[-1]
                self.root_gap = self._gap_below(commit, parent)
                if since is not None:  # `since` was not on this chain
                    base = self.chain_base(head, since)
                    if base is not None and base in ids:
                        ids = ids[: ids.index(base)]
                break
            commit = parent_commit
        ids.reverse()
        return ids

    def _gap_below(self, commit: pygit2.Commit, parent: pygit2.Oid | None) -> str | None:
        """Why the chain is incomplete below its oldest commit here, or None if it is whole.

        A commit whose parent is missing is not the first commit of the log, nor is one
        that git grafted (a shallow clone's boundary: its object names a parent that git
        hides). A commit whose object names no parent is the log's first, whatever its
        `meta.json` says: else anyone could push one whose `prev_wal` made every clone's
        log "incomplete", and reaping refused for good.
        """
        oid = str(commit.id)
        missing = str(parent) if parent is not None else self._hidden_parent(commit)
        if missing is None:
            return None
        return (
            f"{WAL_REF} is incomplete: commit {oid[:12]} follows {missing[:12]}, which this "
            f"clone does not have (a shallow or partial fetch); run `brat sync` or "
            f"`git fetch --unshallow origin {WAL_REF}`"
        )

    def _hidden_parent(self, commit: pygit2.Commit) -> str | None:
        """The first parent a commit's object names when git shows it with none (grafted:
        a shallow clone, or one whose history arrived after this repository was opened)."""
        try:
            raw = self.repo.odb.read(commit.id)[1]
        except (KeyError, ValueError, pygit2.GitError):
            return None
        for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
            if line.startswith(b"parent "):
                return line[7:].decode("ascii", "replace")
        return None

    def replay(
        self, head: str | None = None, since: str | None = None
    ) -> Iterator[WalCommit | CorruptCommit]:
        """Decoded commits oldest first; a corrupt one is yielded as its error."""
        for oid in self.commit_ids(head, since):
            try:
                yield self.read_commit(oid)
            except CorruptCommit as exc:
                yield exc

    def replay_prepared(
        self, prepare: Prepare, head: str | None = None, since: str | None = None
    ) -> Iterator[tuple[WalCommit | CorruptCommit, Any]]:
        """Like replay, with `prepare(commit)` computed alongside each readable commit.

        A long replay (a cold index) is read through git's plumbing (storage/stream.py),
        newest first, and after a failure of git some come twice: use it only for
        order-independent, idempotent folds.
        """
        target = head if head is not None else self.head()
        self.last_count = None
        if target is None:
            return
        limit = int(os.environ.get("BRAT_STREAM_FROM") or STREAM_FROM)
        ids = self.commit_ids(target, since) if since is not None else self._walk(target, None, limit)
        if ids is not None:
            self.last_count = len(ids)
            if len(ids) < limit:
                for oid in ids:
                    yield read_prepared(self, oid, prepare)
                return
        from .stream import CommitStream, StreamBroken, usable

        stream = CommitStream(self, prepare, target, since) if usable(self) else None
        try:
            if stream is not None:
                yield from stream
                if ids is None:
                    self._stream_reached(stream)
                    return
        except (StreamBroken, OSError) as exc:
            print(
                f"brat: reading the log through git failed ({exc}); reading it with libgit2", file=sys.stderr
            )
        done = stream.yielded if stream is not None else set()
        for oid in ids if ids is not None else self.commit_ids(target):
            if oid not in done:
                yield read_prepared(self, oid, prepare)

    def _stream_reached(self, stream: Any) -> None:
        """What the walk of a whole chain records (commit_ids), from the stream's oldest commit."""
        self.reached_root, self.oldest, self.root_gap = True, None, None
        if stream.oldest is None:
            return
        oid, parents = stream.oldest
        self.oldest = oid
        commit: Any = self.repo[oid]
        self.root_gap = self._gap_below(commit, pygit2.Oid(hex=parents[0]) if parents else None)

    def total_commits(self, head: str | None, since: str | None) -> int | None:
        """How many commits the last replay reads (for progress), counted by git when not known."""
        if self.last_count is None and head is not None:
            from .stream import GIT_MEMORY, git_env

            spec = [head] + ([f"^{since}"] if since else [])
            out = subprocess.run(
                ["git", "--git-dir", str(self.ctx.common_dir), *GIT_MEMORY, "rev-list", "--count",
                 "--first-parent", *spec, "--"],
                capture_output=True, text=True, env=git_env(), check=False,
            )  # fmt: skip
            self.last_count = int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else 0
        return self.last_count

    def _larger(self, blob: pygit2.Object, limit: int) -> bool:
        """Whether a blob holds more than `limit` bytes, from its header (nothing inflated)."""
        return bool(self.repo.odb.read_header(blob.id)[1] > limit)

    def carry_over(self, oid: str, parent: str) -> str | None:
        """A copy of commit `oid` on top of `parent`, its chunk neither read nor changed (the
        same events/ tree; meta.json's prev_wal is the new parent): how sync keeps a commit
        too large for this reader. None when its meta.json cannot be read."""
        try:
            commit: Any = self.repo[oid]
            blob = commit.tree["meta.json"]
            if not isinstance(blob, pygit2.Blob) or self._larger(blob, MAX_META_BYTES):
                return None
            meta = json.loads(blob.data)
            if not isinstance(meta, dict):
                return None
            meta["prev_wal"] = parent
            tree = self.repo.TreeBuilder(commit.tree)
            tree.insert(
                "meta.json", self.repo.create_blob(json.dumps(meta).encode()), pygit2.enums.FileMode.BLOB
            )
            sig = _signature()
            new = self.repo.create_commit(
                None, sig, sig, commit.message, tree.write(), [pygit2.Oid(hex=parent)]
            )
        except (KeyError, ValueError, TypeError, RecursionError, pygit2.GitError):
            return None
        return str(new)

    def count_events(self, head: str | None, since: str | None, stop_after: int) -> int:
        """How many events the commits after `since` up to `head` hold, read from each chunk's
        array header (no decoding); counting stops once past `stop_after`. A commit that
        cannot be read counts as one."""
        from .chunk import event_count

        total = 0
        for oid in reversed(self.commit_ids(head, since)):
            try:
                commit: Any = self.repo[oid]
                blob = _find_chunk(commit.tree, oid)
                # (one too large is never inflated: it counts as one)
                total += 1 if self._larger(blob, MAX_WAL_CHUNK_BYTES) else event_count(blob.data) or 1
            except (CorruptCommit, KeyError, ValueError, AttributeError, pygit2.GitError):
                total += 1
            if total > stop_after:
                break
        return total

    def events(self, head: str | None = None) -> Iterator[Event]:
        for item in self.replay(head):
            if isinstance(item, WalCommit):
                yield from item.events

    # writing -----------------------------------------------------------
    def write_commit(
        self, parent: str | None, actor: str, events: list[Event], data: bytes | None = None
    ) -> str:
        """Write (not publish) a commit holding one chunk on top of `parent`."""
        from datetime import datetime

        from .chunk import chunk_hash, encode_chunk

        repo = self.repo
        data = data if data is not None else encode_chunk(events)
        digest = chunk_hash(data)
        ts = min(events[0].ts_unix_ms, 253402300799999)  # (the folder's date: at most 9999-12-31)
        day = datetime.fromtimestamp(ts / 1000, tz=UTC)
        meta = {"schema_version": 1, "actor_id": actor, "chunk_hash": digest, "prev_wal": parent}
        tree = repo.TreeBuilder()
        tree.insert(f"{digest}.bin", repo.create_blob(data), pygit2.enums.FileMode.BLOB)
        for part in (f"{day.day:02d}", f"{day.month:02d}", f"{day.year:04d}", "events"):
            outer = repo.TreeBuilder()
            outer.insert(part, tree.write(), pygit2.enums.FileMode.TREE)
            tree = outer
        tree.insert("meta.json", repo.create_blob(json.dumps(meta).encode()), pygit2.enums.FileMode.BLOB)
        sig = _signature()
        oid = repo.create_commit(
            None,
            sig,
            sig,
            f"WAL: {len(events)} events from {actor[:8]}",
            tree.write(),
            [pygit2.Oid(hex=parent)] if parent else [],
        )
        return str(oid)

    def move_head(self, expected: str | None, new: str, message: str = "brat_sessions append") -> bool:
        """Compare-and-swap refs/grite/wal from `expected` to `new`; False on a lost race."""
        refs = self.repo.references
        if expected is None:
            return create_ref_if_absent(self.ctx.common_dir, WAL_REF, new, message)
        try:
            ref = refs.get(WAL_REF)
            if ref is None or str(ref.target) != expected:
                return False
            ref.set_target(new, message)
            return True
        except pygit2.AlreadyExistsError:
            return False
        except (pygit2.GitError, OSError) as exc:  # libgit2 reports a held lock as OSError
            refused(exc, WAL_REF)
            text = str(exc).lower()
            if "lock" in text or "does not match" in text or "exists" in text:
                return False
            raise EnvironmentProblem(f"cannot update {WAL_REF}: {exc}") from None

    def _fail_on_a_stale_lock(self) -> None:
        """EnvironmentProblem when the log's lock file is older than any writer holds it (a
        writer holds it for milliseconds): a process died holding it, and no retry helps."""
        lock = self.ctx.common_dir / f"{WAL_REF}.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except OSError:
            return
        if age > STALE_LOCK_S:
            raise EnvironmentProblem(
                f"{WAL_REF} is locked: {lock} is {age:.0f} s old (left by a git or brat process "
                "that died?); delete it if no git process is running"
            )

    def append(
        self, actor: str, build: Callable[[str | None], list[Event]]
    ) -> tuple[str | None, list[Event]]:
        """Append the events `build(head)` returns, retrying on a lost race.

        `build` is called again on every retry with the new head, so it can
        re-check what it depends on (and raise to abort). Returns the new head
        and the events written, or (None, []) when build returns nothing.
        """
        for attempt in range(MAX_APPEND_ATTEMPTS):
            head = self.head()
            events = build(head)
            if not events:
                return None, []
            new = self.write_commit(head, actor, events)
            if self.move_head(head, new):
                return new, events
            self._fail_on_a_stale_lock()
            pause_after_lost_race(attempt)
        raise Conflict(f"gave up appending to {WAL_REF} after {MAX_APPEND_ATTEMPTS} lost races")


_CODEC: tuple[Any, Any] | None = None


def _codec() -> tuple[Any, Any]:
    """The chunk and actor modules, imported at the first decode (an import statement in
    decode_files would cost a few µs for each of a cold build's commits)."""
    global _CODEC
    if _CODEC is None:
        from . import actor, chunk

        _CODEC = (chunk, actor)
    return _CODEC


def decode_files(oid: str, meta_bytes: bytes, name: str, data: bytes) -> WalCommit:
    """A commit from its `meta.json` and its chunk file (named `name`): the chunk's hash
    must be the one meta.json names and the file's name; CorruptCommit otherwise."""
    chunk, actor_module = _codec()
    try:
        meta = json.loads(meta_bytes)
        expected_hash = meta["chunk_hash"]
        prev = meta.get("prev_wal")
        actor = meta.get("actor_id", "")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise CorruptCommit(oid, "meta.json is not valid") from None
    if chunk.chunk_hash(data) != expected_hash or name != f"{expected_hash}.bin":
        raise CorruptCommit(oid, "chunk hash does not match meta.json")
    try:
        events = chunk.decode_chunk(data)
    except chunk.ChunkTooCostly as exc:  # (grite may read it: carried over like an oversize one)
        raise CorruptCommit(oid, str(exc), oversize=True) from None
    except chunk.ChunkError as exc:
        raise CorruptCommit(oid, str(exc)) from None
    # (an actor that is not 32 hex is unknown: a re-append writes it under this clone's)
    actor = actor.lower() if isinstance(actor, str) and actor_module.HEX32.fullmatch(actor.lower()) else ""
    if not isinstance(prev, str):
        prev = None
    return WalCommit(oid=oid, prev_wal=prev, actor=actor, events=events, chunk=data)


def read_prepared(wal: Wal, oid: str, prepare: Prepare) -> tuple[WalCommit | CorruptCommit, Any]:
    try:
        commit = wal.read_commit(oid)
    except CorruptCommit as exc:
        return exc, None
    return commit, prepare(commit)
