"""Facts about local processes: alive or not, and when they started."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def exists(pid: int) -> bool:
    """True while `pid` names a process here, a zombie (not yet waited for) included."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(pid: int) -> bool:
    """True when `pid` is a running (not zombie) process on this host."""
    if not exists(pid):
        return False
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (exact; /proc/<pid>/stat field 22)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot of this machine (start ticks are only comparable within one boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def group_members(pgid: int, min_ticks: int | None = None) -> list[int]:
    """Live (not zombie) processes of process group `pgid` started at or after `min_ticks`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        try:
            if (
                fields
                and int(fields[2]) == pgid
                and fields[0] not in ("Z", "X")
                and (min_ticks is None or int(fields[19]) >= min_ticks)
            ):
                found.append(int(entry.name))
        except (ValueError, IndexError):
            continue
    return found


def wait_until(done: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `done` until it is true or `timeout_s` has passed; its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return done()
