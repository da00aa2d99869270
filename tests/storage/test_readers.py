"""The cold read's reader processes: exact frames, and a paused read changes nothing."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from brat_sessions.storage.events import COMMENT_ADDED, ISSUE_CREATED, make_event
from brat_sessions.storage.readers import _pump
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

from ..helpers import T0, WORKTREE_ENV, block_text, brat

SLOW_WRITER = r"""
import struct, sys, time
out = sys.stdout.buffer
frame = struct.pack("<Q", 10) + b"0123456789"
for i in range(0, len(frame), 3):   # a frame in pieces, as a paused writer delivers it
    out.write(frame[i:i + 3]); out.flush(); time.sleep(0.02)
out.write(struct.pack("<Q", 0)); out.flush()
"""


def test_a_frame_split_across_reads_is_read_whole():
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER], stdout=subprocess.PIPE)
    items: queue.Queue = queue.Queue()
    _pump(proc, items)
    proc.wait()
    assert items.get_nowait() == b"0123456789"
    assert items.get_nowait() is None


def _fill(repo, n_commits: int) -> None:
    wal = Wal(open_repo(repo))
    actor = bytes.fromhex("ab" * 16)
    issue = os.urandom(16)
    labels = ["type:task", "task:t-20250101-0001", "status:queued"]
    wal.append(actor.hex(), lambda h: [make_event(issue, actor, T0, ISSUE_CREATED, ["T", "", labels])])
    for i in range(n_commits):
        text = block_text(session_id=f"s-20250101-{i:04x}", started_ts=T0 + i)
        wal.append(
            actor.hex(),
            lambda h, i=i, text=text: [
                make_event(issue, actor, T0 + i, COMMENT_ADDED, [text]),
                make_event(issue, actor, T0 + i, COMMENT_ADDED, [f"plain comment {i}"]),
            ],
        )


def _tables(repo) -> dict:
    db = sqlite3.connect(repo / ".git" / "brat_sessions" / "index.sqlite")
    try:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("issues", "members", "blocks", "sessions", "problems")
        }
    finally:
        db.close()


def _readers_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == parent and b"storage.readers" in cmd:
            found.append(int(entry))
    return found


def test_pausing_the_readers_mid_build_changes_nothing(repo):
    _fill(repo, 300)
    assert brat("sessions", "list", "--all", "--json", cwd=repo).returncode == 0
    clean = _tables(repo)
    (repo / ".git" / "brat_sessions" / "index.sqlite").unlink()
    env = {**os.environ, **WORKTREE_ENV, "BRAT_PARALLEL_FROM": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "list", "--all", "--json"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    paused: list[int] = []
    deadline = time.monotonic() + 20
    while proc.poll() is None and len(paused) < 2 and time.monotonic() < deadline:
        for pid in set(_readers_of(proc.pid)) - set(paused):
            try:
                os.kill(pid, signal.SIGSTOP)  # readers this test's own brat started
                paused.append(pid)
            except ProcessLookupError:
                pass
    time.sleep(0.3)
    for pid in paused:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"parallel read failed" not in err
    assert _tables(repo) == clean
