"""Heartbeat leases: one ref per live session, renewed in place, outside the log.

`refs/brat/sessions/leases/<session_id>` points at a small JSON blob
`{"session_id", "ts", "host"}`. A heartbeat writes a new blob and moves the ref
with compare-and-swap: no WAL commit, and the cost does not grow with the
repository. The lease is created at start and deleted at exit, so a heartbeat
that finds no lease learns that its session is over (fencing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pygit2

from ..errors import BadInput, Fenced

LEASE_PREFIX = "refs/brat/sessions/leases/"


@dataclass
class Lease:
    session_id: str
    ts: int | None
    host: str | None


def lease_ref(session_id: str) -> str:
    name = LEASE_PREFIX + session_id
    if not pygit2.reference_is_valid_name(name):
        raise BadInput(f"session id {session_id!r} cannot name a lease ref")
    return name


def _blob(repo: pygit2.Repository, lease: Lease) -> pygit2.Oid:
    data = {"session_id": lease.session_id, "ts": lease.ts, "host": lease.host}
    return repo.create_blob(json.dumps(data, sort_keys=True).encode())


def decode_lease(repo: pygit2.Repository, session_id: str, target: pygit2.Oid) -> Lease:
    try:
        data = json.loads(repo[target].data)
        ts = data.get("ts")
        return Lease(session_id, ts if isinstance(ts, int) else None, data.get("host"))
    except (KeyError, ValueError, AttributeError):
        return Lease(session_id, None, None)  # unreadable: present, but tells no time


def create_lease(repo: pygit2.Repository, session_id: str, host: str | None) -> Lease:
    lease = Lease(session_id, None, host)
    repo.references.create(lease_ref(session_id), _blob(repo, lease), force=True)
    return lease


def read_lease(repo: pygit2.Repository, session_id: str) -> Lease | None:
    ref = repo.references.get(lease_ref(session_id))
    return decode_lease(repo, session_id, ref.target) if ref is not None else None


def renew_lease(repo: pygit2.Repository, session_id: str, ts: int) -> Lease:
    """Move the lease to `ts` (never backwards); Fenced when it is gone."""
    name = lease_ref(session_id)
    for _ in range(20):
        ref = repo.references.get(name)
        if ref is None:
            raise Fenced(f"session {session_id} has exited (its lease is gone): stop working")
        old = decode_lease(repo, session_id, ref.target)
        new = Lease(session_id, max(ts, old.ts or 0), old.host)
        try:
            ref.set_target(_blob(repo, new), "heartbeat")
            return new
        except pygit2.GitError:
            continue  # another heartbeat or a delete raced us: look again
    raise Fenced(f"session {session_id}: lease kept changing under the heartbeat")


def drop_lease(repo: pygit2.Repository, session_id: str) -> None:
    ref = repo.references.get(lease_ref(session_id))
    if ref is not None:
        try:
            ref.delete()
        except pygit2.GitError:
            pass  # already gone

