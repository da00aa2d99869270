"""`brat sync`: share the log, the heartbeat leases and the stored outputs through a git remote.

The remote's refs are fetched into `refs/brat-remotes/<remote>/...` with the
user's own git (so ssh agents, credential helpers, paths and https all work).
When both sides appended, the local-only commits are re-appended chunk for
chunk on top of the remote head, minus any event the remote already holds; the
log stays linear and the remote's history is never rewritten. The push of
`refs/grite/wal` is a plain fast-forward; a lost race is retried with backoff.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pygit2

from .clock import now_ms
from .errors import BadInput, Conflict, CorruptCommit, EnvironmentProblem, NotFound
from .index import Index
from .issues.projection import check_event
from .reaper import ReaperRecord
from .rules import valid_id, valid_output_name, valid_text
from .sessions.block import has_block, parse_blocks
from .sessions.lease import LEASE_PREFIX, decode_lease, drop_lease
from .sessions.model import Session
from .sessions.outputs import OUTPUT_PREFIX, put_output_ref, verified_output
from .storage.chunk import encode_chunk
from .storage.events import COMMENT_ADDED, Event
from .storage.snapshot import (
    SNAPSHOT_PREFIX,
    NameLog,
    create_snapshot,
    from_the_future,
    is_snapshot_name,
    latest_on_chain,
    made_snapshots,
    on_chain,
    snapshot_due,
)
from .storage.wal import WAL_REF, Wal, WalCommit
from .workspace import Workspace

MAX_ATTEMPTS = 6
FETCH_SNAPSHOTS = 4  # the remote's newest snapshots taken by one sync, at most
PUSH_BATCH = 500  # refspecs a `git push` (a command line has a limit)
REFUSALS = 3  # times a snapshot is offered to a remote that refuses it (a hook): then no more
NAMED_SKIPS = 10  # refs ignored for their names that a sync's warnings name (then one line for the rest)
_NOT_HEX = "its name is not 64 lowercase hex digits"


LEASE_PUSH_TIMEOUT_S = 20  # a heartbeat's push of its lease (BRAT_HEARTBEAT_REMOTE)


@dataclass
class SyncReport:
    """What one sync with a remote did."""

    remote: str
    head: str | None = None
    fetched_commits: int = 0
    reappended_commits: int = 0
    pushed_commits: int = 0
    leases_fetched: int = 0
    leases_pushed: int = 0
    leases_dropped: int = 0
    outputs_fetched: int = 0
    outputs_pushed: int = 0
    snapshots_fetched: int = 0
    snapshots_pushed: int = 0
    snapshots_pruned: int = 0
    snapshot_created: str | None = None
    # sessions our reap passes ended, whose exits were dropped: the remote had theirs
    exits_dropped: list[str] = field(default_factory=list)
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_remote(ws: Workspace) -> str:
    names = [name for name in ws.repo.remotes.names() if name]
    if "origin" in names:
        return "origin"
    if len(names) == 1:
        return names[0]
    if not names:
        raise EnvironmentProblem("this repository has no git remote to sync with (git remote add ...)")
    raise BadInput(f"several remotes ({', '.join(names)}) and no origin: name one with --remote")


def _default_or_none(ws: Workspace) -> str | None:
    try:
        return default_remote(ws)
    except (BadInput, EnvironmentProblem):
        return None


def _tracking_prefix(remote: str) -> str:
    safe = (
        remote
        if re.fullmatch(r"[A-Za-z0-9._-]+", remote) and not remote.startswith(".")
        else hashlib.sha1(remote.encode()).hexdigest()[:16]
    )
    return f"refs/brat-remotes/{safe}/"


class Syncer:
    def __init__(self, ws: Workspace, remote: str | None = None) -> None:
        self.ws = ws
        self.remote = remote or default_remote(ws)
        self.shared = self.remote == _default_or_none(ws)  # the remote reapers meet on
        self.prefix = _tracking_prefix(self.remote)
        self.report = SyncReport(remote=self.remote)
        # the snapshots taken from this remote (deleted here once it no longer has them), and
        # those pushed to it (never again: a remote that deleted one meant it)
        remote_key = self.prefix.split("/")[-2]
        self.fetched = NameLog(ws.ctx.data_dir / f"snapshots_fetched.{remote_key}")
        self.pushed = NameLog(ws.ctx.data_dir / f"snapshots_pushed.{remote_key}")
        self.refused = NameLog(ws.ctx.data_dir / f"snapshots_refused.{remote_key}")
        self.reaper_record = ReaperRecord(ws.ctx.data_dir)
        self.skipped: set[str] = set()  # refs ignored for their names (each warned of once)
        # the folders whose refs are named after a session or an output: (folder, what, rule)
        leases, outputs = (valid_id, "not a valid session id"), (valid_output_name, _NOT_HEX)
        self.folders = (
            (LEASE_PREFIX, "lease", leases),
            (self.prefix + "sessions/leases/", "remote lease", leases),
            (OUTPUT_PREFIX, "output", outputs),
            (self.prefix + "sessions/outputs/", "remote output", outputs),
        )

    @property
    def repo(self) -> pygit2.Repository:
        return self.ws.repo  # (the workspace's: `fetch` may open the repository anew)

    @property
    def wal(self) -> Wal:
        return self.ws.wal

    # git transport -----------------------------------------------------
    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["git", "--git-dir", str(self.ws.ctx.common_dir), *args],
                capture_output=True,
                text=True,
                errors="replace",  # (a remote's path or message need not be UTF-8)
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise EnvironmentProblem("git is not installed; brat sync uses it to reach remotes") from None

    def fetch(self) -> None:
        # a shallow clone (CI's `fetch --depth 1`) gets the log's whole history this time
        deepen = ["--unshallow"] if (self.ws.ctx.common_dir / "shallow").exists() else []
        specs = [f"+refs/grite/*:{self.prefix}grite/*", f"+refs/brat/sessions/*:{self.prefix}sessions/*"]
        result = self._git("fetch", "--quiet", "--no-tags", "--prune", *deepen, self.remote, *specs)
        if result.returncode != 0 and deepen:
            # the remote may not serve deeper history of everything this clone holds
            result = self._git(
                "fetch", "--quiet", "--no-tags", "--prune", "--depth=2147483647", self.remote, *specs
            )
        if result.returncode != 0 and deepen:
            # nothing to deepen: git refuses to deepen when the remote has none of these refs
            # yet (a new repository); a log fetched shallow is still reported incomplete
            result = self._git("fetch", "--quiet", "--no-tags", "--prune", self.remote, *specs)
        if result.returncode != 0:
            if "cannot lock ref" in result.stderr or "unable to update local ref" in result.stderr:
                # another sync in this clone fetched at the same moment (or a stale lock)
                raise _LostRace(_first_line(result.stderr))
            raise EnvironmentProblem(f"git fetch {self.remote} failed: {_first_line(result.stderr)}")
        if deepen:  # (libgit2 read the shallow boundary at open: read the history anew)
            self.ws.reopen()

    def _ref(self, name: str) -> str | None:
        ref = self.repo.references.get(name)
        return str(ref.target) if ref is not None else None

    def _refs(self) -> dict[str, str]:
        """Every ref under refs/brat* and of the snapshots, with its target (one pass over the
        repository's refs); not a lease or an output whose name is not a session id or 64
        hex digits (a remote's, or pushed there by anyone: it may not even be UTF-8)."""
        return {
            name: str(self.repo.references[name].target)
            for name in self.repo.references
            if name.startswith(("refs/brat", SNAPSHOT_PREFIX)) and self._name_fits(name)
        }

    def _name_fits(self, ref: str) -> bool:
        """Whether the ref's name is what its folder needs; a warning (once) when not."""
        for prefix, what, (valid, needs) in self.folders:
            if ref.startswith(prefix):
                name = ref[len(prefix) :]
                if valid(name):
                    return True
                self._skip(ref, f"{what} {name[:80]!r} ignored: {needs}")
                return False
        return True

    def _skip(self, ref: str, warning: str) -> None:
        """Warn of an ignored ref once a sync: the first NAMED_SKIPS by name, then one line."""
        if ref in self.skipped:
            return
        self.skipped.add(ref)
        if len(self.skipped) <= NAMED_SKIPS:
            self.report.warnings.append(warning)
        elif len(self.skipped) == NAMED_SKIPS + 1:
            self.report.warnings.append(
                f"more leases or outputs ignored for their names (the first {NAMED_SKIPS} named)"
            )

    @staticmethod
    def _under(refs: dict[str, str], prefix: str) -> dict[str, str]:
        return {name[len(prefix) :]: oid for name, oid in refs.items() if name.startswith(prefix)}

    # the log -----------------------------------------------------------
    def merge_log(self) -> str | None:
        """Bring the local log to contain the remote's; returns the new local head."""
        local = self.wal.head()
        remote = self._ref(self.prefix + "grite/wal")
        if remote is None or remote == local:
            return local
        kind = self._kind(remote)
        if kind != "a commit":
            raise EnvironmentProblem(
                f"{self.remote}'s {WAL_REF} points at {kind}, not a commit: there is no log to "
                "merge (someone pushed it there; the remote's owner must put the log back)"
            )
        # along first parents only: a merge commit whose first parent starts a new log would
        # otherwise pass for a fast-forward and hide ours behind its second parent
        # (descendant_of first: it rules most cases out in C; the walks are then short)
        if local is not None and self.repo.descendant_of(local, remote) and self.wal.on_chain(local, remote):
            return local  # we are ahead: only a push is needed
        if local is None or (self.repo.descendant_of(remote, local) and self.wal.on_chain(remote, local)):
            new, marked = remote, False  # fast-forward
            self.report.fetched_commits += len(self.wal.commit_ids(remote, local))
        else:
            new, marked = self._reappend(local, remote)
        if marked:  # the index folded events the log will no longer hold: anew
            self.ws.index.mark_for_rebuild()
        if not self.wal.move_head(local, new, "brat sync"):
            if marked:
                self.ws.index.mark_for_rebuild(-1)  # (the log did not move: no longer due)
            raise _LostRace()
        return new

    def _kind(self, oid: str) -> str:
        try:
            obj = self.repo.get(oid)
        except (ValueError, pygit2.GitError):
            return "an object this clone cannot read"
        return "nothing" if obj is None else f"a {obj.type_str}"

    def _reappend(self, local: str, remote: str) -> tuple[str, bool]:
        """Our commits since the chains met, copied on top of the remote's: each event once,
        and without the exits of our reap passes whose sessions the remote saw end (the
        reaper's re-check, at the head its commit now lands on). The new head, and whether
        such exits were left out (the index folded them)."""
        since = self.wal.chain_base(local, remote)
        seen: set[bytes] = set()
        reaped, _ = self.reaper_record.read()
        watched = set().union(*reaped.values()) if reaped else set()
        ended: set[str] = set()  # watched sessions whose exit the remote's new commits hold
        for item in self.wal.replay(remote, since):
            self.report.fetched_commits += 1
            if isinstance(item, WalCommit):
                seen.update(e.event_id for e in item.events)
                if watched:  # (our own exits, arrived there another way, end nothing new)
                    ended |= self._exits_among([e for e in item.events if e.event_id not in reaped], watched)
        taken = {eid for eid, sids in reaped.items() if sids <= ended}
        dropped: set[str] = set()
        parent = remote
        for commit in self.wal.commit_ids(local, since):
            try:
                item = self.wal.read_commit(commit)
            except CorruptCommit as exc:
                copied = self.wal.carry_over(commit, parent) if exc.oversize else None
                if copied is not None:  # too large to read here, maybe not for grite: kept as is
                    parent = copied
                    self.report.reappended_commits += 1
                    self.report.warnings.append(f"{exc.message}; carried over unread")
                    continue
                self.report.warnings.append(f"{exc.message}; not carried over (nothing in it is readable)")
                continue
            events = [e for e in item.events if e.event_id not in seen and e.event_id not in taken]
            dropped.update(sid for e in item.events if e.event_id in taken for sid in reaped[e.event_id])
            if not events:
                continue
            data = item.chunk if len(events) == len(item.events) else encode_chunk(events)
            parent = self.wal.write_commit(parent, item.actor or self.ws.actor, events, data)
            seen.update(e.event_id for e in events)
            self.report.reappended_commits += 1
        self.report.exits_dropped = sorted({*self.report.exits_dropped, *dropped})
        return parent, bool(dropped)

    def _exits_among(self, events: list[Event], watched: set[str]) -> set[str]:
        """The watched sessions that these events end: an exit block on the session's issue,
        in an event the index folds (a remote's bad event ends nothing)."""
        ended = set()
        for ev in events:
            body = ev.payload[0] if ev.kind == COMMENT_ADDED and ev.payload else None
            if not isinstance(body, str) or not has_block(body):
                continue
            try:
                check_event(ev)
            except (TypeError, ValueError, IndexError):
                continue
            for parsed in parse_blocks(body):
                sid = parsed.fields.get("session_id") if not parsed.error else None
                if sid in watched and parsed.fields.get("state") == "exit":
                    session = _session(self.ws.index, sid)
                    if session is not None and session.grite_issue_id == ev.issue_id.hex():
                        ended.add(sid)
        return ended

    # leases and outputs ------------------------------------------------
    def merge_leases(self) -> None:
        """Take the remote's lease where it is newer; drop the leases of exited sessions."""
        refs = self._refs()
        local_leases = self._under(refs, LEASE_PREFIX)
        index = self.ws.index  # refreshed by run() after merge_log
        unknown = 0
        for sid, oid in self._under(refs, self.prefix + "sessions/leases/").items():
            session = _session(index, sid)
            if session is None:  # (its start is in the log before its lease is made)
                unknown += 1
                continue
            mine = local_leases.get(sid)
            theirs = self._lease_ts(sid, oid)
            if theirs > now_ms() + int(self.ws.config.clock_skew * 1000):
                self.report.warnings.append(f"remote lease of {sid} ignored: its time is in the future")
                continue
            newer = mine is None or theirs > self._lease_ts(sid, mine)
            if newer and not session.exited and self._take_lease(sid, oid, mine):
                local_leases[sid] = oid
                self.report.leases_fetched += 1
        if unknown:
            self.report.warnings.append(f"{unknown} remote lease(s) of sessions not in the log ignored")
        for sid in local_leases:
            if _exited(index, sid) and self.repo.references.get(LEASE_PREFIX + sid) is not None:
                # (tried again while a heartbeat holds its lock; counted once it is gone)
                self.report.leases_dropped += drop_lease(self.repo, sid)

    def _take_lease(self, sid: str, oid: str, mine: str | None) -> bool:
        """Move the lease here to the remote's `oid` by compare-and-swap against `mine`, the
        one it was compared with: a heartbeat here meanwhile (or one holding the ref's lock)
        wins, and the next sync compares again."""
        ref = self.repo.references.get(LEASE_PREFIX + sid)
        try:
            if ref is None:
                if mine is not None:
                    return False
                self.repo.references.create(LEASE_PREFIX + sid, oid)  # (fails if one appeared)
            elif str(ref.target) != mine:
                return False
            else:
                ref.set_target(pygit2.Oid(hex=oid), "brat sync")
            return True
        except (ValueError, pygit2.GitError, OSError):  # (AlreadyExistsError is a ValueError)
            return False

    def _named_after(self, head: str | None) -> set[str]:
        """The sessions named in blocks of commits appended here after `head` (another
        process of this clone, meanwhile): the index may hold them, the log pushed does
        not, and their leases would reach other clones before their start."""
        now = self.wal.head()
        if head is None or now is None or now == head:
            return set()
        named: set[str] = set()
        for oid in self.wal.commit_ids(now, head):
            try:
                events = self.wal.read_commit(oid).events
            except CorruptCommit:
                continue
            for ev in events:
                body = ev.payload[0] if ev.kind == COMMENT_ADDED and ev.payload else None
                if isinstance(body, str) and has_block(body):
                    blocks = parse_blocks(body)
                    named.update(b.fields.get("session_id") or b.session_hint or "" for b in blocks)
        return named

    def _lease_ts(self, session_id: str, oid: str) -> int:
        return decode_lease(self.repo, session_id, pygit2.Oid(hex=oid)).ts or 0

    def merge_outputs(self) -> None:
        refs = self._refs()
        local = self._under(refs, OUTPUT_PREFIX)
        # outputs refused once are not read again while their ref is unchanged
        refused = NameLog(self.ws.ctx.data_dir / "outputs_refused", valid_output_name)
        known_bad = refused.entries()
        for name, oid in self._under(refs, self.prefix + "sessions/outputs/").items():
            if name not in local:
                if known_bad.get(name) == oid:
                    continue  # refused at an earlier sync, and unchanged since
                verdict = verified_output(self.repo, name, oid)
                if not verdict:
                    self.report.warnings.append(
                        f"remote output {name[:80]!r} ignored: not a blob of at most 256 MiB "
                        "whose sha256 is its name"
                        if verdict is False
                        else f"remote output {name[:80]!r} not taken: its object cannot be read here"
                    )
                    if verdict is False and refused.valid_name(name):
                        refused.add(name, oid)
                    continue
                put_output_ref(self.repo, name, oid)
                self.report.outputs_fetched += 1

    # snapshots ---------------------------------------------------------
    def _snapshots(self, refs: dict[str, str], prefix: str) -> dict[str, str]:
        return {name: oid for name, oid in self._under(refs, prefix).items() if is_snapshot_name(name)}

    def merge_snapshots(self, head: str | None) -> None:
        """Take the remote's newest snapshots, when newer than the newest here on this log's
        chain that passes the checks short of reading its chunks (refs are never rewritten):
        at most FETCH_SNAPSHOTS, none named after a future time, none taken before (one
        deleted here since, as gc deletes junk, is not taken again). One taken from this
        remote earlier that it no longer has (deleted there, as the CI check deletes a bad
        one) is deleted here too. Snapshots are checked in full only when used."""
        refs = self._refs()
        remote = self._snapshots(refs, self.prefix + "grite/snapshots/")
        made = made_snapshots(self.ws.ctx.data_dir).names()
        for name in self.fetched.names() - remote.keys() - made:
            try:
                self.repo.references.delete(SNAPSHOT_PREFIX + name)
                self.report.snapshots_pruned += 1
            except (KeyError, pygit2.GitError):
                pass  # (deleted here already)
        ours = latest_on_chain(self.wal, head) if head is not None else None
        newest_here = ours.created_ts if ours is not None else -1
        newer = sorted(((int(name), name, oid) for name, oid in remote.items()), reverse=True)
        before = self.fetched.entries()  # (one taken before and deleted here since, by gc, stays deleted)
        taken = [
            (name, oid)
            for n, name, oid in newer
            if newest_here < n and not from_the_future(n) and before.get(name) != oid
        ]
        for name, oid in taken[:FETCH_SNAPSHOTS]:
            if SNAPSHOT_PREFIX + name not in self.repo.references:
                self.repo.references.create(SNAPSHOT_PREFIX + name, oid)
                self.fetched.add(name, oid)
                self.report.snapshots_fetched += 1

    def maybe_snapshot(self, head: str | None) -> None:
        """Make a snapshot when the configured thresholds are passed (spec: more than
        10,000 events since the newest one, or the newest older than 7 days)."""
        config = self.ws.config
        if head is None or config.snapshot_events <= 0:
            return
        latest = latest_on_chain(self.wal, head)  # only ours to trust: on this log's chain
        limit = int(config.snapshot_events)
        events = self.wal.count_events(head, latest.wal_head if latest else None, limit)
        if not snapshot_due(self.wal, latest, events, now_ms(), limit, config.snapshot_days):
            return
        try:
            made = create_snapshot(self.wal, head)
        except EnvironmentProblem as exc:
            self.report.warnings.append(f"no snapshot made: {exc.message}")
            return
        if made is not None:
            self.report.snapshot_created = made.ref

    # push --------------------------------------------------------------
    def push(self, local_head: str | None) -> None:
        remote_head = self._ref(self.prefix + "grite/wal")
        specs = []
        if local_head is not None and local_head != remote_head:
            specs.append(f"{local_head}:{WAL_REF}")
            self.report.pushed_commits = len(self.wal.commit_ids(local_head, remote_head))
        refs = self._refs()
        remote_leases = self._under(refs, self.prefix + "sessions/leases/")
        local_leases = self._under(refs, LEASE_PREFIX)
        index = self.ws.index  # refreshed by run() after merge_log
        later = self._named_after(local_head)
        for sid, oid in local_leases.items():
            # (merge_leases left ours at least as new; a lease of a session the log does not
            # hold is nobody's to share, nor one whose block the pushed log does not hold yet)
            if remote_leases.get(sid) != oid and sid not in later and _session(index, sid) is not None:
                specs.append(f"+{oid}:{LEASE_PREFIX}{sid}")
                self.report.leases_pushed += 1
        for sid in remote_leases:  # (nor for an exit the pushed log does not hold yet)
            if sid not in local_leases and sid not in later and _exited(index, sid):
                specs.append(f":{LEASE_PREFIX}{sid}")
        remote_outputs = self._under(refs, self.prefix + "sessions/outputs/")
        for name, oid in self._under(refs, OUTPUT_PREFIX).items():
            theirs = remote_outputs.get(name)
            if theirs == oid:
                continue
            # an output's name is its content's hash: another object under it there is
            # not that output (pushed first to squat the name), and ours, checked, replaces it
            if theirs is not None and not verified_output(self.repo, name, oid):
                continue
            specs.append(f"+{oid}:{OUTPUT_PREFIX}{name}")
            self.report.outputs_pushed += 1
            if theirs is not None:
                self.report.warnings.append(
                    f"remote output {name[:80]!r} was not that output; replaced with this clone's"
                )
        # the log alone first: no lease is dropped on the remote for a log it refused, and
        # a remote that refuses leases (a hook) still takes the log; then batches of the
        # rest (a command line has a limit)
        first = specs[:1] if specs and specs[0].endswith(f":{WAL_REF}") else []
        rest = specs[len(first) :]
        batches = [first] if first else []
        batches += [rest[i : i + PUSH_BATCH] for i in range(0, len(rest), PUSH_BATCH)]
        for batch in batches:
            result = self._git("push", "--porcelain", self.remote, *batch)
            if result.returncode == 0:
                continue
            refused = [ln for ln in result.stdout.splitlines() if ln.startswith("!")]
            said = _remote_says(result.stderr)
            if batch is first or not refused:  # the log itself, or nothing pushed at all
                if refused and _is_race(refused[0]):
                    raise _LostRace()  # another sync moved the log
                detail = _refusal(refused[0]) if refused else _last_line(result.stderr or result.stdout)
                raise EnvironmentProblem(f"git push {self.remote} failed: {detail}{said}")
            # a lease or an output the remote refused: the log is there, the next sync tries
            # again (a deletion that lost a race to another sync's is no news)
            for line in refused:
                ref, deletion = _pushed_ref(line)
                if ref.startswith(OUTPUT_PREFIX) and not deletion:
                    self.report.outputs_pushed -= 1
                elif ref.startswith(LEASE_PREFIX) and not deletion:
                    self.report.leases_pushed -= 1
            kept = [ln for ln in refused if not (_pushed_ref(ln)[1] and _is_race(ln))]
            if kept:
                self.report.warnings.append(
                    f"{len(kept)} ref(s) not pushed, tried again at the next sync: {_refusal(kept[0])}{said}"
                )
        self._push_snapshots(refs, local_head)

    def _push_snapshots(self, refs: dict[str, str], head: str | None) -> None:
        """Push the snapshots of the log the remote now has (after it took the log: a
        snapshot of commits that lost a race is of no use to anyone); a failure is a warning."""
        snapshots = self._snapshots_to_push(refs, head)
        if not snapshots:
            return
        specs = [f"{oid}:{SNAPSHOT_PREFIX}{name}" for name, oid in snapshots.items()]
        result = self._git("push", "--porcelain", self.remote, *specs)
        refused = {
            name: line
            for line in result.stdout.splitlines()
            if line.startswith("!")
            for name in snapshots
            if f":{SNAPSHOT_PREFIX}{name}\t" in line
        }
        # "[rejected]": the remote has another snapshot by that name (theirs stays), so it
        # counts as sent; anything else (a hook, a full disk) is tried again at the next sync
        theirs = [n for n, line in refused.items() if "[rejected]" in line]
        other = {n: line.split("\t")[-1] for n, line in refused.items() if n not in theirs}
        if result.returncode == 0 or refused:
            for name, oid in snapshots.items():
                if name not in other:
                    self.pushed.add(name, oid)
            self.report.snapshots_pushed += len(snapshots) - len(refused)
        if theirs:
            self.report.warnings.append(
                f"{len(theirs)} snapshot(s) not pushed: the remote has others under the same names"
            )
        for name in other:  # (a hook, a full disk): tried at the next syncs, REFUSALS times
            self.refused.add(name, snapshots[name])
            if self.refused.times(name) >= REFUSALS:
                self.pushed.add(name, snapshots[name])
        if other or (result.returncode != 0 and not refused):
            reason = next(iter(other.values())) if other else _last_line(result.stderr or result.stdout)
            self.report.warnings.append(
                f"snapshots not pushed ({reason}): tried again at the next syncs, {REFUSALS} times in all"
            )

    def _snapshots_to_push(self, refs: dict[str, str], head: str | None) -> dict[str, str]:
        """The snapshots this clone made (still at the commit it made), that the remote lacks
        and was never sent, of the log being pushed (wal_head on its chain): name -> commit.
        Never another clone's, however it came here, and never one the remote deleted."""
        if head is None:
            return {}
        made = made_snapshots(self.ws.ctx.data_dir).entries()
        sent = self.pushed.names()
        remote = self._snapshots(refs, self.prefix + "grite/snapshots/")
        wanted = {
            name: oid
            for name, oid in self._snapshots(refs, SNAPSHOT_PREFIX).items()
            if made.get(name) == oid and name not in remote and name not in sent
        }
        return {name: wanted[name] for name in on_chain(self.wal, head, set(wanted))}

    def run(self) -> SyncReport:
        locked: list[str] = []  # git's line for each fetch that lost a ref lock
        for attempt in range(MAX_ATTEMPTS):
            self.report.attempts = attempt + 1
            self.report.pushed_commits = self.report.leases_pushed = self.report.outputs_pushed = 0
            self.report.snapshots_pushed = self.report.reappended_commits = 0  # (this attempt's)
            _, record = self.reaper_record.read()  # (what the push below will have settled)
            try:
                self.fetch()
                head = self.merge_log()
                self.ws.fresh_index()
                self.merge_leases()
                self.merge_outputs()
                self.merge_snapshots(head)
                self.maybe_snapshot(head)
                self.push(head)
                if self.shared:  # (where reapers meet)
                    self.reaper_record.forget(record)
                self.report.head = head
                return self.report
            except _LostRace as race:
                if race.args:
                    locked.append(race.args[0])
                time.sleep(random.uniform(0.05, 0.2) * (2**attempt))
        if len(locked) == MAX_ATTEMPTS:  # a lock that stays is no race: a stale lock file
            raise EnvironmentProblem(f"git fetch {self.remote} failed {MAX_ATTEMPTS} times: {locked[-1]}")
        raise Conflict(
            f"sync with {self.remote}: lost the race to update {WAL_REF} (or its copy of the "
            f"remote's refs) {MAX_ATTEMPTS} times; try again"
        )


class _LostRace(Exception):
    """Someone moved a head between our read and our write."""


def _session(index: Index, session_id: str) -> Session | None:
    """The session as the log has it; None when the log does not hold it (nor can: a name
    that is no session id, from a ref)."""
    if not valid_id(session_id):
        return None
    try:
        return index.session(session_id)
    except NotFound:
        return None


def _exited(index: Index, session_id: str) -> bool:
    session = _session(index, session_id)
    return session is not None and session.exited  # (unknown here: keep its lease)


_RACE_REASONS = (
    "[rejected]",
    "failed to update ref",
    "failed to lock",
    "cannot lock",
    "incorrect old value",
    "stale info",
    "unable to resolve reference",
)


def _is_race(line: str) -> bool:
    """Was a ref refused because another push got there first (not by policy)?"""
    return any(reason in line for reason in _RACE_REASONS)


def _remote_says(stderr: str) -> str:
    """What the remote's hook said (its first `remote:` line), as `: <text>`, or ""."""
    for line in (stderr or "").splitlines():
        text = line.removeprefix("remote:").strip() if line.startswith("remote:") else ""
        if text:
            return f": the remote says {' '.join(text.split())[:200]!r}"
    return ""


def _pushed_ref(line: str) -> tuple[str, bool]:
    """The ref a `git push --porcelain` line ("!\t<from>:<ref>\t<why>") is about, and whether
    it deletes it."""
    fields = line.split("\t")
    spec = fields[1] if len(fields) >= 2 else ""
    return spec.rpartition(":")[2], spec.startswith(":")


def _refusal(line: str) -> str:
    """`<ref>: <why>` from a refused line of `git push --porcelain`."""
    fields = line.split("\t")
    return f"{_pushed_ref(line)[0]}: {fields[2]}" if len(fields) >= 3 else ""


def _first_line(text: str) -> str:
    """git's first line says what went wrong ("'x' does not appear to be a git repository")."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0].removeprefix("fatal: ") if lines else "no output from git"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output from git"


def _start_push(ws: Workspace, remote: str, session_id: str) -> subprocess.Popen[str] | str:
    """`git push` of one session's lease, started in its own session (no terminal for ssh
    or git to prompt on, and one process group to stop); why not, when it cannot start."""
    if remote.startswith("-") or not valid_text(remote, 4096):
        return "not a remote name or URL (UTF-8 text, not starting with -)"
    ref = ws.repo.references.get(LEASE_PREFIX + session_id)
    if ref is None:
        return "no lease here"
    spec = f"+{ref.target}:{LEASE_PREFIX}{session_id}"
    try:
        return subprocess.Popen(
            ["git", "--git-dir", str(ws.ctx.common_dir), "push", "--porcelain", "--quiet", remote, spec],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError:
        return "git is not installed"


def _stop_push(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # (the group git leads: git, ssh, their children)
    except ProcessLookupError:
        pass
    proc.communicate()


def _push_result(proc: subprocess.Popen[str], out: str, err: str) -> str | None:
    if proc.returncode == 0:
        return None
    refused = [ln for ln in out.splitlines() if ln.startswith("!")]
    return (_refusal(refused[0]) if refused else "") or _first_line(err)


def push_lease(ws: Workspace, remote: str, session_id: str) -> str | None:
    """Push one session's lease to `remote` (a heartbeat a reaper elsewhere can see);
    None when it landed, else why not in one line. Never a prompt, and at most
    LEASE_PUSH_TIMEOUT_S: a heartbeat must not hang on a remote."""
    proc = _start_push(ws, remote, session_id)
    if isinstance(proc, str):
        return proc
    try:
        out, err = proc.communicate(timeout=LEASE_PUSH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop_push(proc)
        return f"no answer within {LEASE_PUSH_TIMEOUT_S} s"
    return _push_result(proc, out, err)


class LeasePusher:
    """Pushes one worker's leases in the background (a heartbeat thread): the lease is
    renewed on time whatever the remote does; never two pushes at once, none past
    LEASE_PUSH_TIMEOUT_S, and none left running by `close`."""

    def __init__(self, ws: Workspace, remote: str) -> None:
        self.ws, self.remote = ws, remote
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0

    def push(self, session_id: str) -> str | None:
        """Start a push of the lease unless one is under way; how the last one ended
        (None: it landed, or there is nothing to tell yet)."""
        why = None
        if self.proc is not None:
            if self.proc.poll() is None:
                if time.monotonic() - self.started < LEASE_PUSH_TIMEOUT_S:
                    return None  # (still under way: this heartbeat's lease goes with the next)
                _stop_push(self.proc)
                why = f"no answer within {LEASE_PUSH_TIMEOUT_S} s"
            else:
                why = _push_result(self.proc, *self.proc.communicate())
            self.proc = None
        started = _start_push(self.ws, self.remote, session_id)
        if isinstance(started, str):
            return started
        self.proc, self.started = started, time.monotonic()
        return why

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop_push(self.proc)
        self.proc = None


def sync(ws: Workspace, remote: str | None = None) -> SyncReport:
    return Syncer(ws, remote).run()
