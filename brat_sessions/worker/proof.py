"""Local proof that brat started (or adopted) a process: the only licence to signal it.

A pid and a host read from the log are never enough to send a signal: anyone can
write them. `run` (and `start --pid`, which adopts a process) leave a small file
in this clone's data dir, `<git common dir>/brat_sessions/procs/<session_id>.json`,
with the pid, its exact start time (clock ticks since boot) and the boot id. A
signal is sent only when a live process still matches all three, checked again
right before the signal. The file never travels with sync.
"""

from __future__ import annotations

import json
import os
import signal as signals
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..rules import valid_id, valid_pid
from . import procs


@dataclass(frozen=True)
class ProcessProof:
    """What identifies a session's process beyond its pid."""

    session_id: str
    pid: int
    start_ticks: int | None
    boot_id: str | None
    group: bool  # the process leads its own process group (`run`): signal the whole group
    # `run`'s shim, the command's supervisor (pid and start ticks), and `run --grace`
    supervisor: int | None = None
    supervisor_ticks: int | None = None
    grace_s: float | None = None

    def _unchanged(self) -> bool:
        """The pid still names the very process recorded (same boot, same start)."""
        return self._same(self.pid, self.start_ticks)

    def _same(self, pid: int, ticks: int | None) -> bool:
        """`pid` names the process that started at `ticks`, in the boot recorded."""
        return self.boot_id == procs.boot_id() and ticks is not None and procs.start_ticks(pid) == ticks

    def matches(self) -> bool:
        """True while the recorded process itself is alive (not a zombie) and unchanged."""
        return procs.alive(self.pid) and self._unchanged()

    def supervised(self) -> bool:
        """True while the recorded supervisor (`run`'s shim) still runs, unchanged."""
        return (
            self.supervisor is not None
            and procs.alive(self.supervisor)  # (a zombie supervises nothing)
            and self._same(self.supervisor, self.supervisor_ticks)
        )

    def leader_exists(self) -> bool:
        """True while the recorded process exists here, a zombie not yet waited for included."""
        return procs.exists(self.pid) and self._unchanged()

    def live_members(self) -> list[int]:
        """The processes this proof covers that are still running (for a group: all of it)."""
        if self.boot_id != procs.boot_id() or self.start_ticks is None:
            return []
        if not self.group:
            return [self.pid] if self.matches() else []
        if procs.exists(self.pid) and procs.start_ticks(self.pid) != self.start_ticks:
            return []  # the pid, and so the group id, now belongs to another process
        # A process group id cannot be reused while any member lives, and members started
        # after the leader belong to it: the group is ours as long as it has such members.
        return procs.group_members(self.pid, self.start_ticks)

    def send(self, signum: int) -> bool:
        """Signal what the proof covers, checked right before; False when nothing matched."""
        if self.pid <= 1 or self.pid == os.getpid() or (self.group and self.pid == os.getpgrp()):
            return False  # never init, never ourselves (a scope stopping its own session)
        members = self.live_members()
        if not members:
            return False
        try:
            if self.group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, grace_s: float) -> bool:
        """SIGTERM, then SIGKILL after `grace_s` if anything is left; True if a signal went out."""
        if not self.send(signals.SIGTERM):
            return False
        if not procs.wait_until(lambda: not self.live_members(), grace_s):
            self.send(signals.SIGKILL)
            procs.wait_until(lambda: not self.live_members(), 5.0)
        return True


def _path(data_dir: Path, session_id: str) -> Path:
    if not valid_id(session_id):
        raise ValueError(f"not a valid session id: {session_id!r}")
    return data_dir / "procs" / f"{session_id}.json"


def record(
    data_dir: Path,
    session_id: str,
    pid: int,
    group: bool = False,
    supervisor: int | None = None,
    grace_s: float | None = None,
) -> ProcessProof | None:
    """Remember that this session's process is `pid` (it must live here), and for `run`
    its supervisor and grace; None if it does not live here."""
    # never init (pid 1): signalling it would take the machine down
    ticks = procs.start_ticks(pid) if valid_pid(pid) and pid > 1 else None
    if ticks is None:
        return None
    supervisor_ticks = procs.start_ticks(supervisor) if supervisor is not None else None
    proof = ProcessProof(
        session_id, pid, ticks, procs.boot_id(), group, supervisor, supervisor_ticks, grace_s
    )
    path = _path(data_dir, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(proof)))
    os.replace(tmp, path)
    return proof


def load(data_dir: Path, session_id: str) -> ProcessProof | None:
    try:
        data = json.loads(_path(data_dir, session_id).read_text())
        proof = ProcessProof(**data)
    except (OSError, ValueError, TypeError):
        return None
    if proof.session_id != session_id or not valid_pid(proof.pid):
        return None
    if proof.supervisor is not None and not (valid_pid(proof.supervisor) and proof.supervisor > 1):
        return None
    grace = proof.grace_s
    if grace is not None and (type(grace) not in (int, float) or not 0 <= grace < float("inf")):
        return None  # (any grace `run --grace` takes)
    return proof


def session_ids(data_dir: Path) -> list[str]:
    """The sessions that have a proof here."""
    try:
        names = os.listdir(data_dir / "procs")
    except OSError:
        return []
    found = [n.removesuffix(".json") for n in names if n.endswith(".json")]
    return [sid for sid in found if valid_id(sid)]


def record_parent(data_dir: Path, session_id: str, parent: str) -> None:
    """Remember that this clone started `session_id` as a child of `parent` (an empty file
    `procs/children/<parent>/<child>`): the log's lineage can be written by anyone, and only
    links recorded here let a stop of the parent's tree reach the child, or the child's
    tokens count against the parent's `run` budget."""
    if not (valid_id(session_id) and valid_id(parent)):
        raise ValueError(f"not valid session ids: {session_id!r}, {parent!r}")
    folder = data_dir / "procs" / "children" / parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / session_id).touch()


def local_tree(data_dir: Path, session_id: str, limit: int = 100_000) -> list[tuple[str, int]]:
    """The sessions this clone started below `session_id`, by the links recorded here:
    (session id, depth below it), parents before children."""
    found: list[tuple[str, int]] = []
    seen = {session_id}
    frontier = deque([(session_id, 0)])
    while frontier and len(found) < limit:
        parent, depth = frontier.popleft()
        try:
            names = sorted(os.listdir(data_dir / "procs" / "children" / parent))
        except OSError:
            continue
        for child in names:
            if valid_id(child) and child not in seen:
                seen.add(child)
                found.append((child, depth + 1))
                frontier.append((child, depth + 1))
    return found


def prune_children(data_dir: Path, exited: Callable[[str], bool]) -> int:
    """Forget the recorded links of trees that have ended: `children/<parent>/` goes once
    the parent and every session below it have exited (a budget or a recursive stop has
    nothing left to reach there). Returns the folders removed."""
    import shutil

    here = data_dir / "procs" / "children"
    try:
        parents = [p for p in os.listdir(here) if valid_id(p)]
    except OSError:
        return 0
    removed = 0
    for parent in parents:
        if exited(parent) and all(exited(sid) for sid, _ in local_tree(data_dir, parent)):
            shutil.rmtree(here / parent, ignore_errors=True)
            removed += 1
    return removed


def drop(data_dir: Path, session_id: str) -> None:
    """Forget the session's process (its recorded links stay: `prune_children` forgets
    them once its whole tree has exited)."""
    try:
        _path(data_dir, session_id).unlink()
    except (FileNotFoundError, ValueError):
        pass
