"""Where a cold build's time goes, stage by stage, on an existing benchmark repository.

    python benchmarks/bench.py --dir /tmp/b        # builds /tmp/b/repo (keep it)
    python benchmarks/cold_parts.py /tmp/b/repo    # then split its cold build

Each stage reads the whole log once more, in this process, adding one step of the
cold build to the one before:

1. git's plumbing alone: `git log --raw` and `git cat-file --batch` stream every
   commit's two blobs into Python (storage/stream.py), nothing decoded;
2. + each chunk checked against its hash and decoded, its event ids taken on trust;
3. + every event id checked (its canonical CBOR re-encoded and hashed), which is
   how a cold build reads the log;
4. + the `[session]` blocks of every comment parsed (the rows to store);

then the whole cold build (`brat sessions list --json` with no index and snapshots
not read) and the cat-file floor, both as fresh processes, as bench.py runs them.
With a snapshot (`brat snapshot create` first) it also times reading, checking and
decoding the snapshot's chunks alone, against the build that starts from it.

Stages 1 and 2 swap a function of the library for a stub (`decode_files`,
`event_from_record`): this is a measuring tool, never a way to read a log.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CAT_FILE_FLOOR, index_files, set_read_snapshots

import brat_sessions.storage.chunk as chunk_module
import brat_sessions.storage.wal as wal_module
from brat_sessions.sessions.projection import prepare_commit
from brat_sessions.storage.events import Event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.snapshot import snapshot_candidates, stream_snapshot
from brat_sessions.storage.wal import Wal, WalCommit


def _undecoded(oid: str, meta: bytes, name: str, data: bytes) -> WalCommit:
    return WalCommit(oid=oid, prev_wal=None, actor="", events=[], chunk=data)


def _unchecked(record: Any) -> Event:
    return Event(*record)


def read_log(repo: Path, prepare: Callable[[WalCommit], Any]) -> tuple[float, int]:
    """Seconds to stream the whole log (storage/stream.py), and the events seen."""
    wal = Wal(open_repo(repo))
    start = time.perf_counter()
    events = sum(len(getattr(item, "events", ())) for item, _ in wal.replay_prepared(prepare, wal.head()))
    return time.perf_counter() - start, events


def swapped(module: Any, name: str, stub: Any, run: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    original = getattr(module, name)
    setattr(module, name, stub)
    try:
        return run()
    finally:
        setattr(module, name, original)


def read_snapshot(repo: Path) -> tuple[float, int] | None:
    """Seconds to read, check and decode the newest usable snapshot's chunks, and its events."""
    wal = Wal(open_repo(repo))
    start = time.perf_counter()
    for candidate in snapshot_candidates(wal, wal.head()):
        if isinstance(candidate, tuple):
            continue
        events = sum(len(chunk) for chunk in stream_snapshot(wal, candidate))
        return time.perf_counter() - start, events
    return None


def process_seconds(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def cold_build(repo: Path, read_snapshots: bool, keep: Path) -> float:
    """A fresh process's cold `list --json` (the index moved aside, then put back)."""
    for path in index_files(repo):
        if path.exists():
            shutil.move(path, keep / path.name)
    set_read_snapshots(repo, read_snapshots)
    try:
        return process_seconds(
            [sys.executable, "-m", "brat_sessions.cli", "sessions", "list", "--json"], repo
        )
    finally:
        set_read_snapshots(repo, None)
        for path in index_files(repo):
            path.unlink(missing_ok=True)
            if (keep / path.name).exists():
                shutil.move(keep / path.name, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path, help="a repository bench.py built (its --dir, then /repo)")
    repo = ap.parse_args().repo.resolve()
    rows: list[tuple[str, float, str]] = []
    floor = min(process_seconds([sys.executable, "-c", CAT_FILE_FLOOR], repo) for _ in range(3))
    rows.append(("floor: chunk bytes via one git cat-file --batch", floor, "best of 3"))
    stages = [
        ("1 git plumbing alone", lambda: swapped(wal_module, "decode_files", _undecoded, lambda: read_log(repo, lambda c: None))),
        ("2 + chunks decoded, ids on trust", lambda: swapped(chunk_module, "event_from_record", _unchecked, lambda: read_log(repo, lambda c: None))),
        ("3 + every event id checked", lambda: read_log(repo, lambda c: None)),
        ("4 + blocks parsed", lambda: read_log(repo, prepare_commit)),
    ]  # fmt: skip
    for name, run in stages:
        seconds, events = run()
        rows.append((name, seconds, f"{events:,} events" if events else ""))
    with tempfile.TemporaryDirectory(prefix="brat-cold-parts-") as keep:
        rows.append(("whole cold build, no snapshot", cold_build(repo, False, Path(keep)), "fresh process"))
        snapshot = read_snapshot(repo)
        if snapshot is not None:
            rows.append(("snapshot chunks read, checked, decoded", snapshot[0], f"{snapshot[1]:,} events"))
            rows.append(
                ("whole cold build from the snapshot", cold_build(repo, True, Path(keep)), "fresh process")
            )
    print(f"cold build of {repo}, stage by stage (each stage includes those above it)")
    print(f"{'stage':<44} {'seconds':>8} {'x floor':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:<44} {seconds:>8.2f} {seconds / floor:>8.2f}  {note}")


if __name__ == "__main__":
    main()
