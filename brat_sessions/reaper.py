"""`brat sessions reap`: give every session that is over an honest exit record.

One pass judges every session that has not exited:

- exited: this machine started or adopted its process (local proof), the process is
  gone, and `run`'s shim left how it ended;
- crash: the same, with nothing saying how it ended;
- timeout: its last sign of life is older than the timeout (the spawn timeout if it
  never heartbeated), allowing for clock skew; a time in the future is no sign of life.

All exits of a pass go into one WAL commit. Each is re-checked at the head the
commit lands on, so concurrent reapers never give a session two exits: here by the
compare-and-swap of the append, and when `brat sync` re-appends the commit on top of a
remote that another reaper reached first, by the record of what each pass wrote
(`ReaperRecord`): an exit whose session the remote has seen end is dropped there.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clock import now_ms
from .config import Config
from .errors import BadInput, BratError, EnvironmentProblem, NotFound, UnwritableBlock
from .index import Index
from .rules import valid_id
from .sessions.lease import LEASE_PREFIX, drop_lease
from .sessions.model import Session
from .sessions.outputs import store_stream
from .sessions.writer import block_events
from .storage.events import Event
from .worker import proof as proofs
from .worker.files import CommittedFiles, SessionFiles
from .worker.lineage import store_ledger
from .worker.proof import ProcessProof
from .workspace import Workspace


@dataclass
class Verdict:
    """Why one session is reaped, and the exit record it gets."""

    session_id: str
    task_id: str | None
    exit_reason: str
    exit_code: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "task_id": self.task_id,
            "exit_reason": self.exit_reason,
            "exit_code": self.exit_code,
            "why": self.why,
        }


def judge(
    session: Session, now: int, config: Config, files: SessionFiles, proof: ProcessProof | None
) -> Verdict | None:
    """The exit a session deserves now, or None while it is alive.

    Only a local proof (this machine started or adopted the process) can make a
    session `exited` or `crash`; what the log says about pids and hosts cannot.
    """

    def verdict(reason: str, code: int, why: str) -> Verdict:
        return Verdict(session.session_id, session.task_id, reason, code, why)

    skew_ms = int(config.clock_skew * 1000)
    if proof is not None and not proof.leader_exists():
        ended = files.how_it_ended()
        if ended is not None:
            code, reason = ended
            return verdict(reason, code, f"process {proof.pid} ended; its supervisor did not record it")
        return verdict("crash", -1, f"process {proof.pid} is gone from this machine")
    last = session.last_sign_of_life(now, skew_ms)
    if last is None:
        return verdict("timeout", -1, "no start or heartbeat time that is not in the future")
    never_beat = session.last_heartbeat_ts is None
    limit_s = config.spawn_timeout if never_beat else config.effective_timeout
    age = now - last
    if age > limit_s * 1000 + skew_ms:
        what = "started" if never_beat else "last heartbeat"
        skew = f" + {config.clock_skew:g}s clock skew" if skew_ms else ""
        return verdict("timeout", -1, f"{what} {age // 1000}s ago (limit {limit_s:g}s{skew})")
    return None


@dataclass
class ReapReport:
    """What a reap pass did (or, with dry_run, would do)."""

    reaped: list[Verdict]
    alive: int
    checked: int
    dry_run: bool
    # sessions this pass judged over, whose exits another reaper recorded first (sync)
    raced: list[str] = field(default_factory=list)
    # sessions judged over whose exit block could not be made (session id -> why)
    unwritable: dict[str, str] = field(default_factory=dict)
    # reaped sessions whose command, started here by `run`, was still running: stopped
    stopped: list[str] = field(default_factory=list)

    def drop_raced(self, session_ids: list[str]) -> None:
        """Take out the verdicts whose exits a sync dropped (another reaper's came first)."""
        ids = set(session_ids)
        self.raced = sorted(v.session_id for v in self.reaped if v.session_id in ids)
        self.reaped = [v for v in self.reaped if v.session_id not in ids]

    def to_json(self) -> dict[str, Any]:
        return {
            "reaped": [v.to_json() for v in self.reaped],
            "alive": self.alive,
            "checked": self.checked,
            "dry_run": self.dry_run,
            "raced": self.raced,
            "unwritable": [{"session_id": k, "reason": v} for k, v in self.unwritable.items()],
            "stopped": self.stopped,
        }


RECORD_BYTES = 1 << 20  # past this, the older half of the record is dropped


class ReaperRecord:
    """The events of this clone's reap passes not yet synced, each with the sessions it
    ended (`<event id> <session id>` a line in the data dir; lines are appended, the older
    half dropped past RECORD_BYTES, and the file is read leniently: it is local
    bookkeeping)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "reaper_exits"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the record's lock (a reap pass appending, a sync rewriting) where the system
        has one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f"{self.path.name}.lock"), "a") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass  # (no locks here: a line may be lost to a race, then a second exit)
            yield

    def add(self, made: dict[bytes, set[str]]) -> None:
        try:
            with self._locked():
                self._add(made)
        except (OSError, UnicodeDecodeError, ValueError):
            pass  # (then a race with another reaper can leave a second exit, which is ignored)

    def _add(self, made: dict[bytes, set[str]]) -> None:
        with open(self.path, "a") as fh:
            fh.write("".join(f"{eid.hex()} {sid}\n" for eid, sids in made.items() for sid in sorted(sids)))
        if self.path.stat().st_size > RECORD_BYTES:  # a clone that reaps and never syncs
            text = self.path.read_text()
            self._rewrite(text[text.index("\n", len(text) // 2) + 1 :])

    def _rewrite(self, text: str) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def read(self) -> tuple[dict[bytes, set[str]], str]:
        """event id -> the sessions it ended, and the text read (for `forget`)."""
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError):
            return {}, ""
        made: dict[bytes, set[str]] = {}
        for line in text.splitlines():
            eid, _, sid = line.partition(" ")
            if len(eid) == 64 and valid_id(sid):
                try:
                    made.setdefault(bytes.fromhex(eid), set()).add(sid)
                except ValueError:
                    continue
        return made, text

    def forget(self, text: str) -> None:
        """Drop the lines `read` gave (their events reached the remote, or were dropped);
        lines another pass added since are kept."""
        if not text:
            return
        try:
            with self._locked():
                now = self.path.read_text()
                if now.startswith(text):
                    self._rewrite(now[len(text) :])
        except (OSError, UnicodeDecodeError):
            pass


def _stored_log(ws: Workspace, files: SessionFiles) -> str | None:
    """The session's local log stored in git, if there is one (a link is never followed)."""
    try:
        log = files.open_log()
    except BratError:
        return None
    if log is None:
        return None
    with log:
        return store_stream(ws.repo, log)


def _has_exited(index: Index, session_id: str) -> bool:
    """True when the log says so, or does not hold the session (nothing to stop or count)."""
    try:
        return index.session(session_id).exited
    except (NotFound, BadInput):
        return True


def _drop_leases_of_exited(ws: Workspace, index: Index) -> None:
    """Drop the leases of sessions the log says have exited (whatever wrote an exit was
    killed before it dropped the lease): a lease must not keep a session alive."""
    for sid in _lease_names(ws):
        try:
            session = index.session(sid)
        except (NotFound, BadInput):
            continue
        if session.exited:  # (once: a lock left by a killed process is not waited on)
            drop_lease(ws.repo, session.session_id, tries=1)


def _lease_names(ws: Workspace) -> list[str]:
    """The session ids the leases here are named after; a ref there named otherwise (put
    there by hand or by a fetch: it may not even be UTF-8) is no session's lease."""
    names = (name[len(LEASE_PREFIX) :] for name in ws.repo.references if name.startswith(LEASE_PREFIX))
    return [sid for sid in names if valid_id(sid)]


def reap(ws: Workspace, config: Config, *, now: int | None = None, dry_run: bool = False) -> ReapReport:
    """Judge every live session and record one exit for each that is over (one commit)."""
    now = now if now is not None else now_ms()
    if not dry_run:
        ws.actor  # noqa: B018 (a bad BRAT_ACTOR is refused at every pass, not only at one that writes)
    index = ws.fresh_index()
    if index.incomplete and not dry_run:
        raise EnvironmentProblem(f"{index.incomplete}; refusing to reap on a partial view")
    logs, data = ws.ctx.logs_dir, ws.ctx.data_dir
    committed = CommittedFiles(ws.ctx.main_worktree, ws.ctx.common_dir)  # (a pulled file is not ours)

    def files_of(sid: str) -> SessionFiles:
        return SessionFiles(logs, sid, committed)

    if not dry_run:
        _stop_left_behind(index, data)
        proofs.prune_children(data, lambda sid: _has_exited(index, sid))
        _drop_leases_of_exited(ws, index)
    candidates = [ws.with_lease(s, now) for s in index.sessions()]
    verdicts = {}
    for s in candidates:
        v = judge(s, now, config, files_of(s.session_id), proofs.load(data, s.session_id))
        if v is not None:
            verdicts[s.session_id] = v
    if dry_run or not verdicts:
        return ReapReport(list(verdicts.values()), len(candidates) - len(verdicts), len(candidates), dry_run)
    outputs = {sid: _stored_log(ws, files_of(sid)) for sid in verdicts}
    written: list[Verdict] = []
    made: dict[bytes, set[str]] = {}  # event id -> the sessions it ends
    unwritable: dict[str, str] = {}

    def build(index: Index) -> list[Event]:
        written.clear()
        made.clear()
        unwritable.clear()
        ts = now_ms()
        # judged again as of now: a heartbeat since the pass began is later than the pass's
        # `now` (+ skew), and judged at that time it would count as a time in the future
        again = max(now, ts)
        events: dict[bytes, Event] = {}
        for sid, v in verdicts.items():
            try:
                current = ws.with_lease(index.session(sid), again)
            except NotFound:
                continue
            if current.exited:
                continue  # another reaper or the worker got there first
            if (
                v.exit_reason == "timeout"
                and judge(current, again, config, files_of(sid), proofs.load(data, sid)) is None
            ):
                continue  # it heartbeated meanwhile
            fields = current.block_fields()
            fields.update(
                usage_ref=store_ledger(ws.repo, current) or current.usage_ref,
                state="exit",
                exit_code=v.exit_code,
                exit_reason=v.exit_reason,
                last_output_ref=outputs[sid] or current.last_output_ref,
            )
            try:
                session_events = block_events(index, ws.actor, current, fields, ts)
            except UnwritableBlock as exc:  # (one session's data never stops the pass)
                unwritable[sid] = str(exc)
                continue
            for ev in session_events:
                events.setdefault(ev.event_id, ev)  # two sessions of one task share label events
                made.setdefault(ev.event_id, set()).add(sid)
            written.append(v)
        return list(events.values())

    ws.append(build)
    ReaperRecord(data).add(made)
    for v in written:
        drop_lease(ws.repo, v.session_id)
    # (a proof is dropped only once its command is stopped: a pass interrupted meanwhile
    # leaves it for the next, which stops what is left first)
    stopped = _stop_orphans([p for v in written if (p := proofs.load(data, v.session_id)) is not None])
    for v in written:
        proofs.drop(data, v.session_id)
    alive = len(candidates) - len(written) - len(unwritable)
    return ReapReport(written, alive, len(candidates), False, unwritable=dict(unwritable), stopped=stopped)


STOP_GRACE_S = 10.0  # as `brat sessions stop` and `run` give, for a proof without its own


def _stop_orphans(held: list[ProcessProof]) -> list[str]:
    """Stop the commands that `run` started here and that still run, unsupervised, although
    their sessions are now over (`run` and its shim were killed together: nothing else would
    ever stop them): SIGTERM to each group, SIGKILL after the grace `run` was given to what
    is left. Only a command that is itself still the very process recorded (a group whose
    leader is gone may be another program's by now), whose shim is gone (a live `run`
    stops its command itself, with its grace, once it learns the session is over); never
    an adopted process (`start --pid`)."""
    orphans = [p for p in held if p.group and p.supervisor is not None and p.matches() and not p.supervised()]
    sent = [p for p in orphans if p.send(signal.SIGTERM)]
    began = time.monotonic()
    waiting = list(sent)
    while waiting:  # each gets its own grace
        waiting = [p for p in waiting if p.live_members()]
        for p in [p for p in waiting if time.monotonic() - began >= _grace(p)]:
            p.send(signal.SIGKILL)
            waiting.remove(p)
        if waiting:
            time.sleep(0.05)
    return sorted(p.session_id for p in sent)


def _stop_left_behind(index: Index, data: Path) -> None:
    """Commands an earlier pass reaped and began to stop, but was interrupted (Ctrl-C, a CI
    time limit) before it saw them end: their proofs are still here, their sessions over."""
    held = []
    for sid in proofs.session_ids(data):
        try:
            over = index.session(sid).exited
        except NotFound:
            continue
        proof = proofs.load(data, sid) if over else None
        if proof is not None:
            held.append(proof)
    _stop_orphans(held)
    for proof in held:
        if not proof.live_members():
            proofs.drop(data, proof.session_id)


def _grace(proof: ProcessProof) -> float:
    return proof.grace_s if proof.grace_s is not None else STOP_GRACE_S
