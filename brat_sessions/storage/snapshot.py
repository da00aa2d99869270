"""grite snapshots (`refs/grite/snapshots/<unix_ms>`): list, create, check, load, collect.

A snapshot is a parentless commit holding every event of the log up to one WAL
commit (`wal_head`), cut into WAL-format chunks of at most 1000 events, plus a
`snapshot.json` that lists them. It is a shortcut only: the log stays the truth, so
any snapshot that fails a check is skipped (and reported) and an older one, or the
whole log, is used instead. Snapshots arrive from remotes, so every read is bounded:
`snapshot.json` and each chunk are size-checked before they are loaded, the number
of chunks is capped, and `event_count` is compared, never used to allocate.
The contract is `shared/spec/grite-snapshot.md`; decisions are in docs/format.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pygit2

from ..clock import now_ms as _clock_ms
from ..errors import BratError, Conflict, CorruptCommit, EnvironmentProblem
from .chunk import ChunkError, chunk_hash, decode_chunk, encode_chunk, event_count, too_costly
from .context import create_ref_if_absent
from .events import ATTACHMENT_ADDED, COMMENT_ADDED, ISSUE_CREATED, LINK_ADDED, Event
from .wal import Wal, WalCommit

SNAPSHOT_PREFIX = "refs/grite/snapshots/"
SCHEMA_VERSION = 1
CHUNK_EVENTS = 1000  # events per chunk, at most
MAX_JSON_BYTES = 2 * 1024 * 1024  # snapshot.json (10,000 pretty chunk entries are ~1.6 MB)
MAX_CHUNKS = 10_000  # chunks per snapshot: 10 million events
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # one chunk file (decoding may take some 70 times that)
# all of a snapshot's chunks (the benchmark's 410,000 events are 80 MB): git's deltas let a
# push of a few KB name gigabytes of near-identical chunks, so the sum is capped too
MAX_SNAPSHOT_BYTES = 1024 * 1024 * 1024
MAX_CANDIDATES = 32  # newest refs usable_snapshot looks at
MAX_LOADS = 4  # on-chain snapshots usable_snapshot fully checks
DAY_MS = 86_400_000
FUTURE_SLACK_MS = 3_600_000  # a ref named after a later time than now + this is not trusted
TAIL_COMMITS = 16  # commits up to wal_head whose comments a snapshot must hold

_NAME = re.compile(r"[0-9]{1,19}", re.ASCII)  # the ref's last component: unix ms
_OID = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", re.ASCII)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,80}")  # a tree entry named plainly (shown unquoted)
_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)


class SnapshotError(BratError):
    """A snapshot that cannot be used; readers skip it, report it and try an older one."""

    code = "corrupt_snapshot"

    def __init__(self, ref: str, reason: str, local: bool = False) -> None:
        super().__init__(f"unusable snapshot {ref}: {reason}")
        self.ref = ref
        self.reason = reason
        self.local = local  # an object is missing or damaged here, not the snapshot's fault


@dataclass
class Snapshot:
    """One snapshot ref as listed.

    `created_ts` is the ref's number (always known). `wal_head` and `event_count`
    come from `snapshot.json` and are None when it cannot be read (`problem` says
    why); `commit_oid` is None when the ref does not point at a commit.
    """

    ref: str
    created_ts: int
    wal_head: str | None
    event_count: int | None
    commit_oid: str | None
    problem: str | None = None
    unreadable_here: bool = False  # the problem is an object missing or damaged in this clone


# listing ---------------------------------------------------------------------
def is_snapshot_name(name: str) -> bool:
    """True for the last part of a snapshot ref: 1 to 19 ASCII digits (unix ms)."""
    return _NAME.fullmatch(name) is not None


def from_the_future(number: int, now_ms: int | None = None) -> bool:
    """A ref named after a time more than an hour from now (clocks differ by less): whoever
    pushed it wants it tried first and kept by gc; it is neither."""
    return number > (now_ms if now_ms is not None else _clock_ms()) + FUTURE_SLACK_MS


def _split_future(refs: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(refs named after a time up to now + FUTURE_SLACK_MS, refs from the future)."""
    now = _clock_ms()
    current: list[tuple[int, str]] = []
    future: list[tuple[int, str]] = []
    for r in refs:
        (future if from_the_future(r[0], now) else current).append(r)
    return current, future


def _current_refs(repo: pygit2.Repository) -> list[tuple[int, str]]:
    """(number, ref) of the snapshot refs not named after a future time, newest first."""
    return _split_future(_snapshot_refs(repo))[0]


def _snapshot_refs(repo: pygit2.Repository) -> list[tuple[int, str]]:
    """(number, ref) of every `refs/grite/snapshots/<digits>`, newest first; others ignored."""
    found = []
    for name in repo.references:
        if name.startswith(SNAPSHOT_PREFIX) and is_snapshot_name(name[len(SNAPSHOT_PREFIX) :]):
            found.append((int(name[len(SNAPSHOT_PREFIX) :]), name))
    found.sort(reverse=True)
    return found


def _read_json(repo: pygit2.Repository, tree: pygit2.Tree) -> dict[str, Any]:
    """snapshot.json of a snapshot tree, size-checked before it is read; ValueError says why."""
    try:
        entry = tree["snapshot.json"]
    except KeyError:
        raise ValueError("no snapshot.json") from None
    if entry.type_str != "blob":
        raise ValueError("snapshot.json is not a file")
    _, size = repo.odb.read_header(entry.id)
    if size > MAX_JSON_BYTES:
        raise ValueError(f"snapshot.json is larger than {MAX_JSON_BYTES} bytes")
    try:
        blob = repo[entry.id]
        meta = json.loads(blob.data if isinstance(blob, pygit2.Blob) else b"")
    except (ValueError, RecursionError):
        raise ValueError("snapshot.json is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ValueError("snapshot.json is not an object")
    if type(meta.get("schema_version")) is not int or meta["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {meta.get('schema_version')!r}")
    head, count = meta.get("wal_head"), meta.get("event_count")
    if not (isinstance(head, str) and _OID.fullmatch(head)):
        raise ValueError("wal_head is not a commit id")
    if not (type(count) is int and count >= 0):
        raise ValueError("event_count is not a non-negative integer")
    if not isinstance(meta.get("chunks"), list):
        raise ValueError("chunks is not an array")
    return meta


def _read_snapshot(repo: pygit2.Repository, number: int, ref: str) -> Snapshot:
    snap = Snapshot(ref, number, None, None, None)
    if from_the_future(number):
        snap.problem = f"named after a time {(number - _clock_ms()) / 3_600_000:,.0f} hours from now"
    try:
        obj = repo.references[ref].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        snap.problem = "the ref does not point at a commit"
        try:
            target = repo.references[ref].target
            snap.unreadable_here = not isinstance(target, pygit2.Oid) or not repo.odb.exists(target)
        except (KeyError, ValueError, pygit2.GitError):
            snap.unreadable_here = True
        if snap.unreadable_here:
            snap.problem = "cannot read it here: its commit is missing or damaged"
        return snap
    snap.commit_oid = str(obj.id)
    try:
        meta = _read_json(repo, obj.tree)
    except ValueError as exc:
        snap.problem = str(exc)
        return snap
    except (KeyError, pygit2.GitError) as exc:  # (a partial clone, a damaged object)
        snap.problem, snap.unreadable_here = f"cannot read it here: {exc}", True
        return snap
    if snap.problem is None:
        snap.wal_head, snap.event_count = meta["wal_head"].lower(), meta["event_count"]
    return snap


def find_snapshot(repo: pygit2.Repository, name: str) -> Snapshot | None:
    """The snapshot `refs/grite/snapshots/<name>` (or the full ref), read; None when there is
    no such snapshot ref."""
    name = name.removeprefix(SNAPSHOT_PREFIX)
    if not is_snapshot_name(name) or SNAPSHOT_PREFIX + name not in repo.references:
        return None
    return _read_snapshot(repo, int(name), SNAPSHOT_PREFIX + name)


def list_snapshots(repo: pygit2.Repository, limit: int | None = None) -> list[Snapshot]:
    """Every snapshot ref (or the `limit` newest), newest (largest number) first.

    Refs under the prefix whose name is not `<digits>` are ignored. A snapshot whose
    json cannot be read, or named after a time more than an hour from now, is still
    listed, with `problem` set (and `wal_head`/`event_count` None), so `gc_snapshots`
    and reports can see it.
    """
    return [_read_snapshot(repo, number, ref) for number, ref in _snapshot_refs(repo)[:limit]]


# loading ---------------------------------------------------------------------
def _chunks(repo: pygit2.Repository, snap: Snapshot, tail: Tail | None = None) -> Iterator[list[Event]]:
    """Each chunk's events, checked as the spec says; SnapshotError naming the ref at the
    first mismatch (snapshot.json, the layout, the sizes and, with `tail`, the end of the
    snapshot are checked before the first chunk)."""

    def bad(reason: str) -> SnapshotError:
        return SnapshotError(snap.ref, reason)

    if snap.commit_oid is None:
        raise bad(snap.problem or "the ref does not point at a commit")
    commit: Any = repo.get(snap.commit_oid)
    if not isinstance(commit, pygit2.Commit):
        raise bad("the snapshot commit is missing")
    tree = commit.tree
    try:
        meta = _read_json(repo, tree)
    except (ValueError, pygit2.GitError) as exc:
        raise bad(str(exc)) from None
    chunks: list[Any] = meta["chunks"]
    total: int = meta["event_count"]
    if len(chunks) > MAX_CHUNKS:
        raise bad(f"more than {MAX_CHUNKS} chunks")
    declared = 0
    for i, info in enumerate(chunks):
        if not isinstance(info, dict):
            raise bad(f"chunks[{i}] is not an object")
        if info.get("path") != f"events/{i:04d}.bin":
            raise bad(f"chunks[{i}].path is {info.get('path')!r}, not 'events/{i:04d}.bin'")
        if not (isinstance(info.get("chunk_hash"), str) and _HASH.fullmatch(info["chunk_hash"].lower())):
            raise bad(f"chunks[{i}].chunk_hash is not a BLAKE2b-256 hex")
        n = info.get("event_count")
        if not (type(n) is int and 0 <= n <= CHUNK_EVENTS):
            raise bad(f"chunks[{i}].event_count is not between 0 and {CHUNK_EVENTS}")
        declared += n
    if declared != total:
        raise bad(f"event_count {total} is not the sum of the chunks' counts ({declared})")
    if snap.wal_head is not None and meta["wal_head"].lower() != snap.wal_head:
        raise bad("wal_head differs from the one in snapshot.json")
    files = _chunk_blobs(tree, len(chunks), bad)
    _check_sizes(repo, files, bad)

    def read(i: int) -> list[Event]:
        info = chunks[i]
        blob = repo[files[f"{i:04d}.bin"]]
        data = blob.data if isinstance(blob, pygit2.Blob) else b""
        if chunk_hash(data) != info["chunk_hash"].lower():
            raise bad(f"{info['path']} does not match its chunk_hash")
        length = event_count(data)
        if length is not None and length != info["event_count"]:  # before checking each event id
            raise bad(f"{info['path']} holds {length} events, not {info['event_count']}")
        try:
            decoded = decode_chunk(data)
        except ChunkError as exc:
            raise bad(f"{info['path']}: {exc}") from None
        if len(decoded) != info["event_count"]:
            raise bad(f"{info['path']} holds {len(decoded)} events, not {info['event_count']}")
        return decoded

    if tail is not None and tail.whole:  # its end first: a snapshot of the log ends with the log's
        # last commits (when one of them cannot be read here, grite may have put its events after)
        missing, seen = set(tail.wanted), 0
        for i in reversed(range(len(chunks))):
            if not missing or seen >= tail.events:
                break
            events = read(i)
            missing.difference_update(e.event_id for e in events)
            seen += len(events)
        if missing:
            raise bad(
                f"its last events lack {len(missing)} comment(s) or issue(s) of the last {TAIL_COMMITS} log "
                f"commits up to its wal_head (event {min(missing).hex()}): it does not hold the log it names"
            )
    for i in range(len(chunks)):
        yield read(i)


def _check_sizes(
    repo: pygit2.Repository, files: dict[str, pygit2.Oid], bad: Callable[[str], Exception]
) -> None:
    """Before any chunk is read: each is another file (two chunks with the same bytes
    would hold the same events twice) and the sizes their object headers give stay within
    MAX_CHUNK_BYTES each and MAX_SNAPSHOT_BYTES in all."""
    first: dict[pygit2.Oid, str] = {}
    total = 0
    for name in sorted(files):
        oid = files[name]
        if oid in first:
            raise bad(f"events/{_shown(first[oid])} and events/{_shown(name)} are the same file")
        first[oid] = name
        _, size = repo.odb.read_header(oid)
        if size > MAX_CHUNK_BYTES:
            raise bad(f"events/{_shown(name)} is larger than {MAX_CHUNK_BYTES} bytes")
        total += size
        if total > MAX_SNAPSHOT_BYTES:
            raise bad(f"its chunks add up to more than {MAX_SNAPSHOT_BYTES:,} bytes")


def _shown(name: str) -> str:
    """A tree entry's name for a message: as it is when plain (`0001.bin`), else quoted
    with its escapes and cut (a name pushed by anyone may hold any byte but NUL and `/`)."""
    return name if _PLAIN_NAME.fullmatch(name) else repr(name[:80])


def _chunk_blobs(tree: pygit2.Tree, count: int, bad: Callable[[str], Exception]) -> dict[str, pygit2.Oid]:
    """The blobs of `events/`: exactly `0000.bin`.. for the listed chunks, nothing else."""
    try:
        folder: Any = tree["events"]
    except KeyError:
        if count == 0:
            return {}
        raise bad("no events/ folder") from None
    if folder.type_str != "tree":
        raise bad("events is not a folder")
    files: dict[str, pygit2.Oid] = {}
    for entry in folder:
        if entry.type_str != "blob" or entry.filemode not in (
            pygit2.enums.FileMode.BLOB,
            pygit2.enums.FileMode.BLOB_EXECUTABLE,
        ):
            raise bad(f"events/{_shown(entry.name)} is not a file")
        files[str(entry.name)] = entry.id
    wanted = {f"{i:04d}.bin" for i in range(count)}
    if files.keys() - wanted:
        raise bad(
            f"events/ holds files that snapshot.json does not list: "
            f"{', '.join(_shown(name) for name in sorted(files.keys() - wanted)[:3])}"
        )
    if wanted - files.keys():
        raise bad(f"events/{min(wanted - files.keys())} is missing")
    return files


def load_snapshot(wal: Wal, snap: Snapshot) -> list[Event]:
    """The snapshot's events in replay order, after checking all of it.

    Checks: a readable `snapshot.json` (schema_version 1, wal_head, event_count,
    chunks); chunk paths exactly `events/0000.bin`, `events/0001.bin`... in order;
    `events/` holds those files and nothing else (other files at the top are
    ignored); each chunk's BLAKE2b-256 equals its `chunk_hash`, it decodes as a WAL
    chunk (magic, version, codec, 8-item records, event ids), holds exactly its
    `event_count` (at most 1000); the counts add up to `event_count`. Raises
    SnapshotError(ref, reason) on the first mismatch.
    """
    return [ev for events in stream_snapshot(wal, snap) for ev in events]


def stream_snapshot(wal: Wal, snap: Snapshot) -> Iterator[list[Event]]:
    """The snapshot's events chunk by chunk, with the checks of `load_snapshot`: memory for
    one chunk at a time, but a SnapshotError may come after chunks were handed out (a
    caller folding them must be able to undo that)."""
    try:
        tail = _tail(wal, snap.wal_head) if snap.wal_head else None
        wanted = set(tail.wanted) if tail else set()
        for events in _chunks(wal.repo, snap, tail):
            if wanted:
                wanted.difference_update(e.event_id for e in events)
            yield events
    except (KeyError, pygit2.GitError) as exc:  # e.g. an object missing from a partial clone
        raise SnapshotError(snap.ref, f"cannot read it here: {exc}", local=True) from None
    if wanted:
        raise SnapshotError(
            snap.ref,
            f"it lacks {len(wanted)} comment(s) or issue(s) of the last {TAIL_COMMITS} log commits up to "
            f"its wal_head (event {min(wanted).hex()}): it does not hold the log it names",
        )


@dataclass
class Tail:
    """The log's TAIL_COMMITS commits up to a wal_head, as a snapshot of it must end."""

    wanted: frozenset[bytes]  # their comments and created issues: a snapshot never drops one
    events: int  # all their events: a snapshot's last this many events hold `wanted`
    whole: bool  # every one of them read here (else another reader may hold more of them)


def _tail(wal: Wal, wal_head: str) -> Tail:
    """The TAIL_COMMITS commits up to `wal_head`: what a snapshot of the log must hold
    (a cheap check that it holds the log it names, whatever its hashes say: an empty or
    cut snapshot fails it), and where (at its end: a snapshot is in log order, and what
    compaction drops only shortens that end)."""
    wanted: set[bytes] = set()
    count, whole = 0, True
    commits = _FirstParentChain._commits(wal.repo, wal_head)  # (ends at a commit it cannot read)
    for _, oid in zip(range(TAIL_COMMITS), commits, strict=False):
        try:
            events = wal.read_commit(oid).events
        except CorruptCommit:
            events, whole = [], False  # skipped by every replay here: the snapshot need not hold them
        count += len(events)
        wanted.update(e.event_id for e in events if e.kind in (COMMENT_ADDED, ISSUE_CREATED))
    return Tail(frozenset(wanted), count, whole)


# verifying -------------------------------------------------------------------
# kinds a snapshot must keep whatever it compacts (the spec: every comment, link and
# attachment, and each issue itself); others may be dropped when superseded
_KEPT_KINDS = (ISSUE_CREATED, COMMENT_ADDED, LINK_ADDED, ATTACHMENT_ADDED)


@dataclass
class Verdict:
    """What a snapshot holds against the log up to its wal_head, event by event."""

    ref: str
    problem: str | None  # a check the snapshot fails (then nothing was compared)
    snapshot_events: int = 0
    log_events: int = 0
    added: int = 0  # events no log commit up to wal_head holds
    dropped: int = 0  # comments, issues, links and attachments of the log it lacks
    compacted: int = 0  # other events of the log it lacks (allowed when superseded)
    diverging: int = 0  # issues the snapshot shows otherwise than the log (with a view)
    examples: dict[str, list[str]] | None = None  # the first ids of each kind

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.added and not self.dropped and not self.diverging


class View(Protocol):
    """What a set of events shows (`issues.projection.IssueView`): fed one event at a time."""

    def apply(self, ev: Event) -> None: ...

    def issues(self) -> dict[str, Any]: ...


def verify_snapshot(
    wal: Wal, snap: Snapshot, shown: int = 20, view: Callable[[], View] | None = None
) -> Verdict:
    """Compare a snapshot with the log it names: every event it holds must be in the log
    (up to its wal_head, or just after it: grite may read a little past the head it
    records), and none of the events a snapshot must keep may be missing. This reads the
    whole log (what the snapshot saves a cold build), so it is for a scheduled job, not for
    every build; `shown` ids of each kind are listed. With `view` (a factory), the events
    a snapshot may leave out (superseded updates) are judged by what they show: the
    snapshot's view and the log's must be the same, issue by issue.

    A verdict blames the snapshot only for what it holds: EnvironmentProblem when this
    clone cannot judge (a shallow or partial clone, an object missing or damaged here)."""
    from .stream import usable

    if not usable(wal):
        raise EnvironmentProblem("a partial clone (--filter) lacks objects: verify in a full clone")
    head = wal.head()
    if snap.unreadable_here:
        raise EnvironmentProblem(f"snapshot {snap.ref}: {snap.problem}")
    if snap.wal_head is None or head is None:
        return Verdict(snap.ref, snap.problem or "unreadable")
    if not _known(wal.repo, snap.wal_head) or snap.wal_head not in _FirstParentChain(wal.repo, head):
        wal.commit_ids(head)  # (sets root_gap) a log cut short here may simply not reach it
        if wal.root_gap is not None:
            raise EnvironmentProblem(wal.root_gap)
        return Verdict(snap.ref, f"wal_head {snap.wal_head[:12]} is not on the log's first-parent chain")
    held: set[bytes] = set()
    snap_view, log_view = (view(), view()) if view is not None else (None, None)
    try:
        for events in stream_snapshot(wal, snap):
            held.update(e.event_id for e in events)
            if snap_view is not None:
                for e in events:
                    snap_view.apply(e)
    except SnapshotError as exc:
        if exc.local:
            raise EnvironmentProblem(f"snapshot {snap.ref}: {exc.reason}") from None
        return Verdict(snap.ref, exc.reason)
    after = set(wal.commit_ids(head, snap.wal_head))
    added = set(held)
    dropped: list[bytes] = []
    compacted = logged = 0
    for commit, _ in wal.replay_prepared(lambda c: None, head):
        if not isinstance(commit, WalCommit):
            if commit.unreadable:
                raise EnvironmentProblem(f"{commit.message}: this clone cannot judge the snapshot")
            continue
        if commit.oid in after:  # past wal_head: only what the snapshot holds of it
            for event in commit.events:
                if event.event_id in held:
                    added.discard(event.event_id)
                    if log_view is not None:
                        log_view.apply(event)
            continue
        for event in commit.events:
            logged += 1
            if log_view is not None:
                log_view.apply(event)
            if event.event_id in held:
                added.discard(event.event_id)
            elif event.kind in _KEPT_KINDS:
                dropped.append(event.event_id)
            else:
                compacted += 1
    if wal.root_gap is not None:  # (a shallow clone): nothing can be judged, let alone deleted
        raise EnvironmentProblem(wal.root_gap)
    examples = {
        "added": sorted(e.hex() for e in added)[:shown],
        "dropped": sorted(e.hex() for e in dropped)[:shown],
    }
    diverging: list[str] = []
    if snap_view is not None and log_view is not None:
        theirs, ours = snap_view.issues(), log_view.issues()
        diverging = sorted(i for i in theirs.keys() | ours.keys() if theirs.get(i) != ours.get(i))
        examples["diverging"] = diverging[:shown]
    return Verdict(
        snap.ref, None, len(held), logged, len(added), len(dropped), compacted, len(diverging), examples
    )


# choosing --------------------------------------------------------------------
def _holds_chain(repo: pygit2.Repository, snap: Snapshot, chain: _FirstParentChain) -> bool:
    return snap.wal_head is not None and _known(repo, snap.wal_head) and snap.wal_head in chain


def on_chain(wal: Wal, head: str, names: set[str]) -> list[str]:
    """Those of the named snapshots (numbers) whose wal_head is on the first-parent chain of
    `head`: a snapshot of commits a sync re-appended elsewhere is of no use to anyone."""
    chain = _FirstParentChain(wal.repo, head)
    snaps = (_read_snapshot(wal.repo, int(name), SNAPSHOT_PREFIX + name) for name in sorted(names, key=int))
    return [snap.ref[len(SNAPSHOT_PREFIX) :] for snap in snaps if _holds_chain(wal.repo, snap, chain)]


def latest_on_chain(wal: Wal, head: str) -> Snapshot | None:
    """The newest snapshot on the first-parent chain of `head` whose commit this clone
    trusts: one it made, or one a full check here passed (a cold build started from it, a
    gc kept it), under whatever name, not named after a future time; None when there is
    none. (Junk that passes every check short of a full read must not count as the newest
    here: sync would take no newer snapshot, and make one of the same log on every run.)"""
    data_dir = wal.ctx.data_dir
    named: dict[str, int] = {}  # trusted commit -> the time of the first name it was trusted under
    for log in (made_snapshots(data_dir), checked_snapshots(data_dir)):
        for name, oid in log.entries().items():
            named[oid] = min(int(name), named.get(oid, int(name)))
    chain, tails = _FirstParentChain(wal.repo, head), TailCounts(wal)
    found: Snapshot | None = None
    for number, ref in _current_refs(wal.repo):
        try:
            if str(wal.repo.references[ref].target) not in named:
                continue  # (its commit, before anything is read)
        except (KeyError, ValueError, pygit2.GitError):
            continue
        snap = _read_snapshot(wal.repo, number, ref)
        if snap.commit_oid in named and quick_problem(wal, snap, head, chain, tails) is None:
            # its time is the one it was trusted under (a newer name for it proves nothing)
            snap.created_ts = named[snap.commit_oid]
            if found is None or snap.created_ts > found.created_ts:
                found = snap
    return found


class TailCounts(dict[str, int]):
    """How many comments and created issues the TAIL_COMMITS log commits up to each
    wal_head hold (read once per wal_head)."""

    def __init__(self, wal: Wal) -> None:
        super().__init__()
        self.wal = wal

    def __missing__(self, wal_head: str) -> int:
        self[wal_head] = len(_tail(self.wal, wal_head).wanted)
        return self[wal_head]


def quick_problem(
    wal: Wal, snap: Snapshot, head: str, chain: _FirstParentChain, tails: TailCounts
) -> str | None:
    """What is wrong with a snapshot for the log at `head`, as far as can be seen without
    reading its chunks: unreadable, a wal_head that is not on the log's first-parent
    chain, or fewer events than the comments and created issues of the log's last
    TAIL_COMMITS commits up to its wal_head (which it must hold: an empty or cut one)."""
    if snap.problem is not None or snap.wal_head is None:
        return snap.problem or "unreadable"
    if not _known(wal.repo, snap.wal_head):
        return f"wal_head {snap.wal_head[:12]} is not in this repository"
    if snap.wal_head not in chain:
        return f"wal_head {snap.wal_head[:12]} is not on the first-parent chain of {head[:12]}"
    needed = tails[snap.wal_head]
    if (snap.event_count or 0) < needed:
        return (
            f"it holds {snap.event_count or 0} event(s), fewer than the {needed} comment(s) and issue(s) "
            f"of the last {TAIL_COMMITS} log commits up to its wal_head: it does not hold the log it names"
        )
    return None


def full_problem(wal: Wal, snap: Snapshot) -> tuple[str | None, bool]:
    """(what the checks of a cold build find wrong with a snapshot, reading all of it, or
    None; whether the fault is this clone's: an object missing or damaged here)."""
    try:
        for _ in stream_snapshot(wal, snap):
            pass
    except SnapshotError as exc:
        return exc.reason, exc.local
    return None, False


def checked_list(wal: Wal) -> list[Snapshot]:
    """Every snapshot ref, newest first, with `problem` set also for what `quick_problem`
    finds (what `brat snapshot list` shows)."""
    found = list_snapshots(wal.repo)
    head = wal.head()
    if head is not None:
        chain, tails = _FirstParentChain(wal.repo, head), TailCounts(wal)
        for snap in found:
            snap.problem = quick_problem(wal, snap, head, chain, tails)
    return found


class _FirstParentChain:
    """The first-parent chain below a head, walked lazily, once, into a set."""

    def __init__(self, repo: pygit2.Repository, head: str) -> None:
        self._walk = self._commits(repo, head)
        self._seen: set[str] = set()

    @staticmethod
    def _commits(repo: pygit2.Repository, head: str) -> Iterator[str]:
        try:
            commit: Any = repo.get(head)
            while isinstance(commit, pygit2.Commit):
                yield str(commit.id)
                parents = commit.parent_ids
                commit = repo.get(parents[0]) if parents else None
        except (KeyError, ValueError, pygit2.GitError):
            return  # a damaged or missing commit ends the chain here (the replay reports it)

    def __contains__(self, oid: str) -> bool:
        if oid in self._seen:
            return True
        for seen in self._walk:
            self._seen.add(seen)
            if seen == oid:
                return True
        return False


def _known(repo: pygit2.Repository, oid: str) -> bool:
    try:
        return repo.odb.exists(oid)
    except (ValueError, pygit2.GitError):  # e.g. a SHA-256 id in a SHA-1 repository
        return False


def usable_snapshot(
    wal: Wal, head: str | None = None
) -> tuple[tuple[Snapshot, list[Event]] | None, list[tuple[str, str]]]:
    """The newest valid snapshot on the log up to `head` (default: the WAL head), and problems.

    Returns `((snapshot, events), problems)`, or `(None, problems)` when none can be
    used (see `snapshot_candidates`). The caller then replays
    `wal.replay(head, since=snapshot.wal_head)`.
    """
    problems: list[tuple[str, str]] = []
    for found in snapshot_candidates(wal, head):
        if isinstance(found, tuple):
            problems.append(found)
            continue
        try:
            return (found, load_snapshot(wal, found)), problems
        except SnapshotError as exc:
            problems.append((found.ref, exc.reason))
    return None, problems


def snapshot_candidates(wal: Wal, head: str | None = None) -> Iterator[Snapshot | tuple[str, str]]:
    """Snapshots worth loading for the log up to `head`, newest first, and `(ref, reason)`
    for each one skipped, in the order they are looked at; the caller stops at the first
    that loads.

    A snapshot qualifies when its `wal_head` is on the first-parent chain of `head`. At
    most MAX_CANDIDATES refs are looked at and MAX_LOADS handed out, so a flood of
    hostile refs costs bounded work (and a full replay).
    """
    repo = wal.repo
    head = head if head is not None else wal.head()
    if head is None:
        return
    chain, tails = _FirstParentChain(repo, head), TailCounts(wal)
    refs, future = _split_future(_snapshot_refs(repo))
    if future:  # (one report: there may be thousands, all pushed by one hand)
        yield (future[0][1], f"skipped with {len(future) - 1} more: named after a time over an hour from now")
    loads = 0
    handed: dict[str, str] = {}  # commit -> the ref it was handed out under
    for number, ref in refs[:MAX_CANDIDATES]:
        snap = _read_snapshot(repo, number, ref)
        problem = quick_problem(wal, snap, head, chain, tails)
        if problem is None and snap.commit_oid in handed:  # (one commit under many names)
            problem = f"the same snapshot commit as {handed[snap.commit_oid]}, which was not usable"
        if problem is not None:
            yield (ref, problem)
            continue
        handed[snap.commit_oid or ""] = ref
        if loads == MAX_LOADS:
            yield (ref, f"not checked: {MAX_LOADS} newer snapshots were invalid")
            return
        loads += 1
        yield snap
    if len(refs) > MAX_CANDIDATES:
        yield (refs[MAX_CANDIDATES][1], f"not checked: only the {MAX_CANDIDATES} newest snapshots are tried")


def snapshot_due(
    wal: Wal,
    latest: Snapshot | None,
    events_since: int | None,
    now_ms: int,
    max_events: int = 10_000,
    max_age_days: float = 7,
) -> bool:
    """Whether a new snapshot should be made (the spec's suggested thresholds).

    Due when more than `max_events` events were appended since the newest snapshot
    (all events when there is none), or when the newest is older than
    `max_age_days` and at least one event came after it (a snapshot of an unchanged
    log would repeat the last one). `events_since=None` counts them from the log.
    """
    if events_since is None:
        since = latest.wal_head if latest is not None else None
        events_since = sum(len(c.events) for c in wal.replay(since=since) if isinstance(c, WalCommit))
    if events_since > max_events:
        return True
    return latest is not None and events_since > 0 and now_ms - latest.created_ts > max_age_days * DAY_MS


# writing ---------------------------------------------------------------------
class NameLog:
    """Refs (name, and the object it named; snapshots unless `valid_name` says otherwise)
    kept in a file of this clone's data dir, `<name> <oid>` a line. Lines are only ever
    appended (two processes lose nothing), and the file is read leniently: it is local
    bookkeeping, never a reason for a command to fail."""

    def __init__(self, path: Path, valid_name: Callable[[str], bool] = is_snapshot_name) -> None:
        self.path = path
        self.valid_name = valid_name

    def entries(self) -> dict[str, str]:
        """name -> commit id (the last line for a name wins)."""
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return {}
        found = {}
        for line in lines:
            name, _, oid = line.partition(" ")
            if self.valid_name(name):  # (a name alone: its commit unknown, "")
                found[name] = oid.lower() if _OID.fullmatch(oid) else ""
        return found

    def names(self) -> set[str]:
        return set(self.entries())

    def times(self, name: str) -> int:
        """How many lines name `name`."""
        try:
            return sum(line.split(" ", 1)[0] == name for line in self.path.read_text().splitlines())
        except (OSError, UnicodeDecodeError):
            return 0

    def add(self, name: str, oid: str) -> None:
        if not self.valid_name(name):
            return  # (a line `entries` would not read back; a name that is not UTF-8 cannot be written)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(f"{name} {oid}\n")
        except OSError:
            pass  # (then sync treats it as another's: not pushed, which loses no event)


def made_snapshots(data_dir: Path) -> NameLog:
    """The snapshots this clone made (`create_snapshot`): the only ones sync pushes."""
    return NameLog(data_dir / "snapshots_made")


def checked_snapshots(data_dir: Path) -> NameLog:
    """The snapshots a full check here passed (a cold build started from one, gc kept one):
    with those made here, the ones sync may count as the newest here."""
    return NameLog(data_dir / "snapshots_checked")


def made_here_at_head(wal: Wal) -> Snapshot | None:
    """The newest snapshot this clone made (not named after a future time), when it is of
    the log's current head (newer ones from elsewhere do not count: they may be junk)."""
    head = wal.head()
    made = made_snapshots(wal.ctx.data_dir).entries()
    for number, ref in _current_refs(wal.repo):
        name = ref[len(SNAPSHOT_PREFIX) :]
        if name in made:
            snap = _read_snapshot(wal.repo, number, ref)
            if snap.commit_oid == made[name]:
                return snap if head is not None and snap.wal_head == head else None
    return None


def _chunk_files(events: list[Event]) -> Iterator[tuple[bytes, int]]:
    """The events as chunk files of at most CHUNK_EVENTS events each and, where large events
    make one more than a reader takes (MAX_CHUNK_BYTES, or too many CBOR items in a chunk
    over 1 MiB: see chunk.py), fewer: (bytes, event count). Halving ends: one event from a
    log commit that was read fits."""
    pending = [events[i : i + CHUNK_EVENTS] for i in range(0, len(events), CHUNK_EVENTS)][::-1]
    while pending:
        part = pending.pop()
        data = encode_chunk(part)
        if (len(data) > MAX_CHUNK_BYTES or too_costly(data)) and len(part) > 1:
            half = len(part) // 2
            pending += [part[half:], part[:half]]  # (the first half is next)
            continue
        yield data, len(part)


def create_snapshot(wal: Wal, head: str | None = None, now_ms: int | None = None) -> Snapshot | None:
    """Write a snapshot of every event up to `head` (default: the WAL head); None if there are none.

    Events come from `wal.replay` (oldest commit first, chunk order within; corrupt
    commits skipped exactly as a full replay skips them) and are copied unchanged:
    nothing is compacted, so no comment is ever dropped. The ref is
    `refs/grite/snapshots/<now_ms>`, or the next free millisecond; an existing ref is
    never overwritten. Raises EnvironmentProblem when the log here is incomplete
    (a shallow clone): such a snapshot would hide the missing events for good.
    """
    repo = wal.repo
    head = head if head is not None else wal.head()
    if head is None:
        return None
    events: list[Event] = []
    size = 0  # (its chunks hold the same events, encoded the same: about as many bytes)
    for commit in wal.replay(head):
        if isinstance(commit, WalCommit):
            events += commit.events
            size += len(commit.chunk)
            if size > MAX_SNAPSHOT_BYTES:  # (before anything is written: sync tries again)
                raise _too_large()
        elif commit.unreadable or commit.oversize:
            raise EnvironmentProblem(
                f"WAL commit {commit.commit} cannot be read here ({commit.reason}); a snapshot would "
                "leave its events out for every clone"
                + ("" if commit.oversize else " (check this clone with `git fsck`)")
            )
    if wal.root_gap is not None:
        raise EnvironmentProblem(wal.root_gap)
    if not events:
        return None
    if len(events) > MAX_CHUNKS * CHUNK_EVENTS:
        raise EnvironmentProblem(
            f"the log holds more than {MAX_CHUNKS * CHUNK_EVENTS} events, more than one snapshot may hold"
        )
    folder = repo.TreeBuilder()
    chunks: list[dict[str, Any]] = []
    total = 0
    for data, count in _chunk_files(events):
        total += len(data)
        if total > MAX_SNAPSHOT_BYTES:
            raise _too_large()
        name = f"{len(chunks):04d}.bin"
        folder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
        chunks.append({"path": f"events/{name}", "chunk_hash": chunk_hash(data), "event_count": count})
    if len(chunks) > MAX_CHUNKS:
        raise EnvironmentProblem(
            f"the log's events need more than {MAX_CHUNKS} chunks, more than a snapshot holds"
        )
    folder_oid = folder.write()
    ms = now_ms if now_ms is not None else _clock_ms()
    for _ in range(1000):
        ref = f"{SNAPSHOT_PREFIX}{ms}"
        if ref not in repo.references:
            meta = {
                "schema_version": SCHEMA_VERSION,
                "created_ts": ms,
                "wal_head": head,
                "event_count": len(events),
                "chunks": chunks,
            }
            root = repo.TreeBuilder()
            root.insert("events", folder_oid, pygit2.enums.FileMode.TREE)
            root.insert(
                "snapshot.json",
                repo.create_blob(json.dumps(meta, indent=2).encode()),
                pygit2.enums.FileMode.BLOB,
            )
            sig = pygit2.Signature("grite", "grit@local", ms // 1000, 0)
            oid = str(
                repo.create_commit(
                    None, sig, sig, f"Snapshot: {len(events)} events at {ms}", root.write(), []
                )
            )
            if create_ref_if_absent(wal.ctx.common_dir, ref, oid, "brat_sessions snapshot"):
                made_snapshots(wal.ctx.data_dir).add(str(ms), oid)
                return Snapshot(ref, ms, head, len(events), oid)
        ms += 1
    raise Conflict("no free snapshot ref in 1000 milliseconds")


def _too_large() -> EnvironmentProblem:
    return EnvironmentProblem(
        f"the log's events take more than {MAX_SNAPSHOT_BYTES:,} bytes, more than one snapshot may hold"
    )


def log_gap(wal: Wal, head: str | None) -> str | None:
    """Why the log here does not reach its root (a shallow clone), or None."""
    if head is None:
        return None
    wal.commit_ids(head)  # (sets root_gap)
    return wal.root_gap


def _judge_only_a_whole_log(wal: Wal, head: str | None) -> None:
    """EnvironmentProblem when the log here is cut short: a snapshot whose wal_head this
    clone lacks may be perfectly good, and nothing is deleted on such a view."""
    gap = log_gap(wal, head)
    if gap is not None:
        raise EnvironmentProblem(f"{gap}: snapshots cannot be judged here, none deleted")


def gc_snapshots(wal: Wal, keep: int) -> list[str]:
    """Delete every snapshot ref but the `keep` newest (by number) that a cold build here
    could use; returns the deleted names.

    Each one is checked as a cold build checks it (every chunk read), newest first, until
    `keep` pass: one that fails is deleted (junk pushed under a newer name must not push
    out the good ones), and so is every ref named after a time more than an hour from now
    (it would otherwise outrank every real snapshot for good). One that only cannot be
    read here (an object missing in this clone) is kept and counted; on a log cut short
    here (a shallow clone) none is judged bad, and nothing is deleted (EnvironmentProblem). At most
    MAX_CANDIDATES are read in full per call: the refs below those are left for the next
    gc. Refs whose name is not `<digits>` are not snapshots and are left alone.
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    repo = wal.repo
    current, future = _split_future(_snapshot_refs(repo))
    head = wal.head()
    chain, tails = (_FirstParentChain(repo, head), TailCounts(wal)) if head is not None else (None, None)
    kept: list[str] = []
    doomed = [ref for _, ref in future]
    read = 0
    verdicts: dict[str, tuple[str | None, bool]] = {}  # commit -> full check (one per commit)
    checked = checked_snapshots(wal.ctx.data_dir)
    whole = False  # the log here reaches its root (known once a snapshot would be deleted)
    for number, ref in current:
        if len(kept) >= keep:
            doomed.append(ref)
            continue
        snap = _read_snapshot(repo, number, ref)
        if snap.unreadable_here:
            kept.append(ref)
            continue
        problem, here, commit = snap.problem, False, snap.commit_oid or ""
        if problem is None and chain is not None and tails is not None and head is not None:
            problem = quick_problem(wal, snap, head, chain, tails)
            if problem is None and commit not in verdicts:
                if read == MAX_CANDIDATES:
                    break  # (the rest is left as it is)
                read += 1
                verdicts[commit] = full_problem(wal, snap)
                if verdicts[commit][0] is None:
                    checked.add(ref[len(SNAPSHOT_PREFIX) :], commit)
            if problem is None:
                problem, here = verdicts[commit]
        if problem is None or here:
            kept.append(ref)
        else:
            if not whole:
                _judge_only_a_whole_log(wal, head)  # (once: it walks the whole log)
                whole = True
            doomed.append(ref)
    deleted = []
    for ref in doomed:
        try:
            repo.references.delete(ref)
        except (KeyError, pygit2.GitError):
            continue  # deleted meanwhile
        deleted.append(ref)
    return deleted
