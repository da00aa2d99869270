"""Heartbeat leases: one ref per live session, renewed in place, outside the log.

`refs/brat/sessions/leases/<session_id>` points at a small JSON blob
`{"session_id", "ts", "host", "progress", "ledger"}` (progress and the usage ledger:
see usage.py). A heartbeat writes a new blob and moves the ref
with compare-and-swap: no WAL commit, and the cost does not grow with the
repository. The lease is created at start and deleted at exit, so a heartbeat
that finds no lease learns that its session is over (fencing). An exit first seals the
lease (`"sealed": <ms>`, by compare-and-swap): from then on no heartbeat, phase or usage
call changes it (they are told the session is exiting), so the ledger the exit stores is
the last one, and nothing a caller was told is recorded is lost. A seal older than
SEAL_ABANDONED_MS (either way: a clock may step) was left by an exit that died: it lapses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from ..clock import now_ms, pause_after_lost_race
from ..errors import BadInput, Conflict, EnvironmentProblem, Fenced, refused
from ..rules import valid_id, valid_text, valid_ts
from .usage import LedgerEntry, Progress, decode_ledger, totals

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    import pygit2

    from .model import Session

LEASE_PREFIX = "refs/brat/sessions/leases/"
MAX_LEASE_BYTES = 65536
FORWARD_SLACK_MS = 60_000
SEAL_ABANDONED_MS = 60_000  # a seal older than this was left by an exit that died half-way


@dataclass
class Lease:
    """A session's heartbeat lease, as its ref holds it."""

    session_id: str
    ts: int | None
    host: str | None
    progress: Progress = field(default_factory=Progress)
    ledger: list[LedgerEntry] = field(default_factory=list)
    sealed: int | None = None  # when an exit sealed it (ms): nothing else may change the lease


class LeaseSealed(Fenced):
    """The session's exit is being recorded (its lease is sealed): stop working."""

    code = "session_exiting"


def lease_ref(session_id: str) -> str:
    if not valid_id(session_id):
        raise BadInput(f"session id {session_id[:80]!r} cannot name a lease ref")
    return LEASE_PREFIX + session_id


def _blob(repo: pygit2.Repository, lease: Lease) -> pygit2.Oid:
    data: dict[str, Any] = {"session_id": lease.session_id, "ts": lease.ts, "host": lease.host}
    if lease.progress != Progress():
        data["progress"] = asdict(lease.progress)
    if lease.ledger:
        data["ledger"] = [asdict(e) for e in lease.ledger]
    if lease.sealed is not None:
        data["sealed"] = lease.sealed
    return repo.create_blob(json.dumps(data, sort_keys=True).encode())


def decode_lease(repo: pygit2.Repository, session_id: str, target: pygit2.Oid | str) -> Lease:
    import pygit2

    try:
        kind, size = repo.odb.read_header(target)  # before the object is inflated
        if kind != pygit2.enums.ObjectType.BLOB or size > MAX_LEASE_BYTES:
            raise ValueError("not a small blob")
        blob = repo[target]
        if not isinstance(blob, pygit2.Blob):
            raise ValueError("not a blob")
        return lease_from_bytes(session_id, blob.data)
    except (KeyError, ValueError, pygit2.GitError):
        return Lease(session_id, None, None)  # unreadable: present, but tells no time


def lease_from_bytes(session_id: str, raw: bytes) -> Lease:
    """A lease from its blob's bytes, every value validated (an unreadable one tells nothing)."""
    try:
        data = json.loads(raw)
        ts, host = data.get("ts"), data.get("host")
        return Lease(
            session_id,
            ts if valid_ts(ts) else None,
            host if valid_text(host, 255) else None,
            Progress.decode(data.get("progress")),
            decode_ledger(data.get("ledger")),
            data["sealed"] if valid_ts(data.get("sealed")) else None,
        )
    except (ValueError, AttributeError, TypeError, RecursionError):
        return Lease(session_id, None, None)  # unreadable: present, but tells no time


def overlay_lease(session: Session, lease: Lease) -> None:
    """Fold what the lease knows into a live session: its heartbeat, progress and usage."""
    if lease.ts is not None:
        session.add_beat(lease.ts)
    p = lease.progress
    if p.phase is not None or p.iteration is not None:
        session.phase, session.iteration, session.iterations = p.phase, p.iteration, p.iterations
    if p.activity_ts is not None:
        session.last_activity_ts = max(session.last_activity_ts or 0, p.activity_ts)
    if lease.ledger:
        session.ledger = [e.to_json() for e in lease.ledger]
        session.usage = totals(lease.ledger)


def create_lease(repo: pygit2.Repository, session_id: str, host: str | None, ts: int | None = None) -> Lease:
    """A new session's lease (its id is new: nothing to overwrite)."""
    lease = Lease(session_id, ts, host)
    for attempt in range(MAX_TRIES):
        try:
            repo.references.create(lease_ref(session_id), _blob(repo, lease), force=True)
            return lease
        except _races() as exc:
            refused(exc, lease_ref(session_id))
            pause_after_lost_race(attempt)
    raise Conflict(f"session {session_id}: its lease ref stayed locked; try again")


def create_missing_lease(
    repo: pygit2.Repository, common_dir: Path, session_id: str, host: str | None, ts: int
) -> None:
    """Create the lease of a session that has none here, unless another process just did:
    `git update-ref` with an empty old value checks that under git's lock, so two
    concurrent creators never overwrite each other (and what the first one recorded)."""
    from ..storage.context import create_ref_if_absent

    oid = _blob(repo, Lease(session_id, ts, host))
    create_ref_if_absent(common_dir, lease_ref(session_id), str(oid), "brat_sessions lease")


def read_lease(repo: pygit2.Repository, session_id: str) -> Lease | None:
    ref = repo.references.get(lease_ref(session_id))
    return decode_lease(repo, session_id, ref.target) if ref is not None else None


MAX_TRIES = 40


def _races() -> tuple[type[Exception], ...]:
    """What a lost compare-and-swap looks like: a GitError, or an OSError for a held lock."""
    import pygit2

    return (pygit2.GitError, OSError)


def update_lease(
    repo: pygit2.Repository, session_id: str, change: Callable[[Lease], Lease], *, sealed_ok: bool = False
) -> Lease:
    """Replace the lease with `change(current)` by compare-and-swap; Fenced when it is gone,
    LeaseSealed when an exit sealed it (unless `sealed_ok`: the exit's own changes)."""
    import pygit2

    name = lease_ref(session_id)
    for attempt in range(MAX_TRIES):
        ref = repo.references.get(name)
        if ref is None:
            raise Fenced(f"session {session_id} has exited (its lease is gone): stop working")
        if not isinstance(ref.target, pygit2.Oid):  # (git's transport never makes one)
            raise EnvironmentProblem(
                f"{name} is a symbolic ref, not a lease: delete it (git update-ref -d --no-deref {name})"
            )
        current = decode_lease(repo, session_id, ref.target)
        if current.sealed is not None and not sealed_ok:
            if abs(now_ms() - current.sealed) <= SEAL_ABANDONED_MS:  # (a clock stepped either way)
                raise LeaseSealed(
                    f"session {session_id} is exiting (its exit is being recorded): stop working"
                )
            current = replace(current, sealed=None)  # an exit that died half-way: the worker goes on
        new = change(current)
        try:
            ref.set_target(_blob(repo, new), "heartbeat")
            return new
        except _races() as exc:
            refused(exc, name)
            pause_after_lost_race(attempt)  # another heartbeat or a delete raced us: look again
    raise Conflict(f"session {session_id}: its lease kept changing or stayed locked; try again")


def renew_lease(repo: pygit2.Repository, session_id: str, ts: int) -> Lease:
    """Move the lease to `ts` (never backwards); Fenced when it is gone."""

    def renew(old: Lease) -> Lease:
        # never backwards against a concurrent heartbeat, but a time far ahead of ours
        # (a wrong clock, a forged lease) is not kept alive by us
        keep = old.ts is not None and ts < old.ts <= ts + FORWARD_SLACK_MS
        return replace(old, ts=old.ts if keep else ts)

    return update_lease(repo, session_id, renew)


def seal_lease(repo: pygit2.Repository, session_id: str) -> Lease | None:
    """Seal the lease for an exit (see above): the sealed lease, or None when there is none
    or it stayed locked (a lock left by a killed heartbeat: the exit is recorded anyway)."""
    at = now_ms()
    try:
        return update_lease(repo, session_id, lambda old: replace(old, sealed=at), sealed_ok=True)
    except (Fenced, Conflict):
        return None


def unseal_lease(repo: pygit2.Repository, session_id: str, sealed: Lease) -> None:
    """Undo `seal_lease` (which returned `sealed`) after an exit that could not be recorded
    (the worker goes on); a seal made since by another exit is left alone."""

    def unseal(old: Lease) -> Lease:
        return replace(old, sealed=None) if old.sealed == sealed.sealed else old

    try:
        update_lease(repo, session_id, unseal, sealed_ok=True)
    except (Fenced, Conflict):
        pass  # gone meanwhile, or busy: a sealed lease only fences, a later exit unseals nothing


def drop_lease(repo: pygit2.Repository, session_id: str, tries: int = MAX_TRIES) -> bool:
    """Delete the lease; False when it stayed locked all along (a later look drops it)."""
    for attempt in range(tries):
        ref = repo.references.get(lease_ref(session_id))
        if ref is None:
            return True
        try:
            ref.delete()
            return True
        except _races() as exc:
            refused(exc, lease_ref(session_id))
            pause_after_lost_race(attempt)  # held by a heartbeat: the next look finds it gone or free
    return False
