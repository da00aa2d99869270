"""Measure brat_sessions on a synthetic repository and print a table.

    python benchmarks/bench.py                      # 10,000 tasks, 50,000 sessions (minutes)
    python benchmarks/bench.py --tasks 200 --sessions 1000 --stale 500   # a quick look

Targets (docs/performance.md): warm `list --json` within 1.5x the floor (opening
the repository with pygit2 in a fresh Python), `list` after one new event within
floor + 100 ms, cold `list` within 30 s at the default size, memory under 500 MB,
a heartbeat within 10 ms at p50 (at 1,000 and at 50,000 sessions), a reap pass
over 10,000 stale sessions within 20 s writing one WAL commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic

from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal
from brat_sessions.worker.api import Tracker

FLOOR = "import pygit2; pygit2.Repository('.').references.get('refs/grite/wal')"
BRAT = [sys.executable, "-m", "brat_sessions.cli"]


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one real process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss


def median_of(cmd: list[str], cwd: Path, runs: int) -> float:
    return statistics.median(timed(cmd, cwd)[0] for _ in range(runs))


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def heartbeat_times(repo: Path, session_id: str, n: int) -> list[float]:
    tracker = Tracker(repo)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        tracker.heartbeat(session_id)
        out.append(time.perf_counter() - start)
    return out


APPENDER = """
import sys
from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal
wal = Wal(open_repo(sys.argv[1])); issue = bytes.fromhex(sys.argv[2]); actor = "ab" * 16
for i in range(int(sys.argv[3])):
    e = make_event(issue, bytes.fromhex(actor), 1700000000000 + i, COMMENT_ADDED, [f"{sys.argv[4]}-{i}"])
    wal.append(actor, lambda head: [e])
"""


def append_throughput(repo: Path, issue: bytes, writers: int, per_writer: int) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(repo), issue.hex(), str(per_writer), f"w{n}"])
        for n in range(writers)
    ]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("an appender failed")
    return writers * per_writer / (time.perf_counter() - start)


def repo_bytes(repo: Path) -> int:
    out = subprocess.run(["git", "count-objects", "-v"], cwd=repo, capture_output=True, text=True).stdout
    fields = dict(line.split(": ") for line in out.splitlines())
    return (int(fields["size"]) + int(fields["size-pack"])) * 1024


def growth(workdir: Path) -> tuple[float, float, float, float]:
    """Bytes per session lifecycle and per 1,000 heartbeats: loose, then after `git gc`."""
    repo = workdir / "growth"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    from brat_sessions.issues.tasks import create_task

    tracker = Tracker(repo)
    task = create_task(tracker.ws, "growth")
    subprocess.run(["git", "gc", "-q"], cwd=repo, check=True)
    base = repo_bytes(repo)
    output = b"x" * 1024
    for _ in range(50):
        s = tracker.start(task.task_id, pid=1)
        tracker.transition(s.session_id, "running", force=True)
        tracker.exit(s.session_id, 0, output=output + s.session_id.encode())
    loose = (repo_bytes(repo) - base) / 50
    subprocess.run(["git", "gc", "-q"], cwd=repo, check=True)
    packed = (repo_bytes(repo) - base) / 50
    s = tracker.start(task.task_id)
    subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=repo, check=True)
    base = repo_bytes(repo)
    for _ in range(1000):
        tracker.heartbeat(s.session_id)
    hb_loose = repo_bytes(repo) - base
    subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=repo, check=True)
    hb_packed = repo_bytes(repo) - base
    return loose, packed, hb_loose, hb_packed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=50_000)
    ap.add_argument("--live", type=int, default=100, help="sessions still running")
    ap.add_argument("--stale", type=int, default=10_000, help="stale sessions for the reap pass")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, help="where to build (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="brat-bench-"))
    repo = work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, float] = {}

    def row(name: str, value: float, unit: str, target: str = "") -> None:
        figures[name] = value
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
        rows.append((name, f"{shown} {unit}", target))

    start = time.perf_counter()
    built = synthetic.build(repo, args.tasks, args.sessions, args.live)
    row("build synthetic repository", time.perf_counter() - start, "s", f"{built['commits']:,} WAL commits")
    floor = median_of([sys.executable, "-c", FLOOR], repo, args.runs)
    row("floor: open repo with pygit2", floor * 1000, "ms")
    index = repo / ".git" / "brat_sessions"
    shutil.rmtree(index, ignore_errors=True)
    cold, rss = timed(BRAT + ["sessions", "list", "--json"], repo)
    row("cold list (no index)", cold, "s", "< 30 s")
    row("cold list peak memory", rss / 1024, "MB", "< 500 MB")
    warm = median_of(BRAT + ["sessions", "list", "--json"], repo, args.runs)
    row("warm list --json", warm * 1000, "ms", f"< {1.5 * floor * 1000:.0f} ms (1.5x floor)")
    row("warm list / floor", warm / floor, "x", "< 1.5")
    warm_all = median_of(BRAT + ["sessions", "list", "--all", "--json"], repo, 3)
    row("warm list --all --json", warm_all * 1000, "ms", f"{args.sessions:,} sessions")
    wal = Wal(open_repo(repo))
    issue = built["tasks"][0]
    after = []
    for n in range(args.runs):
        event = make_event(
            issue, bytes.fromhex(synthetic.ACTOR), int(time.time() * 1000), COMMENT_ADDED, [f"note {n}"]
        )
        wal.append(synthetic.ACTOR, lambda head, e=event: [e])
        after.append(timed(BRAT + ["sessions", "list", "--json"], repo)[0])
    row(
        "list after one new event",
        statistics.median(after) * 1000,
        "ms",
        f"< {(floor + 0.1) * 1000:.0f} ms (floor + 100 ms)",
    )
    live = built["live"][0]
    row("show", median_of(BRAT + ["sessions", "show", live, "--json"], repo, args.runs) * 1000, "ms")
    beats = heartbeat_times(repo, live, 300)
    row(f"heartbeat p50 at {args.sessions:,} sessions", percentile(beats, 50) * 1000, "ms", "< 10 ms")
    row(f"heartbeat p99 at {args.sessions:,} sessions", percentile(beats, 99) * 1000, "ms")
    small = work / "small"
    shutil.rmtree(small, ignore_errors=True)
    small_built = synthetic.build(small, 200, 1000, 10)
    beats = heartbeat_times(small, small_built["live"][0], 300)
    row("heartbeat p50 at 1,000 sessions", percentile(beats, 50) * 1000, "ms", "< 10 ms")
    row("heartbeat p99 at 1,000 sessions", percentile(beats, 99) * 1000, "ms")
    row("append, 1 writer process", append_throughput(repo, issue, 1, 200), "events/s")
    row("append, 8 writer processes", append_throughput(repo, issue, 8, 50), "events/s", "none lost")
    if args.stale:
        synthetic.add_stale(repo, built["tasks"], args.stale)
        timed(BRAT + ["sessions", "list", "--json"], repo)  # index the new sessions first
        before = int(
            subprocess.run(
                ["git", "rev-list", "--count", "refs/grite/wal"], cwd=repo, capture_output=True, text=True
            ).stdout
        )
        start = time.perf_counter()
        out = subprocess.run(BRAT + ["sessions", "reap", "--json"], cwd=repo, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        reaped = len(json.loads(out.stdout)["data"]["reaped"])
        written = (
            int(
                subprocess.run(
                    ["git", "rev-list", "--count", "refs/grite/wal"], cwd=repo, capture_output=True, text=True
                ).stdout
            )
            - before
        )
        row(
            f"reap pass over {args.stale:,} stale sessions",
            elapsed,
            "s",
            f"< 20 s; reaped {reaped:,} in {written} WAL commit(s)",
        )
    loose, packed, hb_loose, hb_packed = growth(work)
    row("repo growth per session lifecycle (loose)", loose / 1024, "KiB", "1 KiB output each")
    row("repo growth per session lifecycle (after gc)", packed / 1024, "KiB")
    row("repo growth per 1,000 heartbeats (loose)", hb_loose / 1024, "KiB", "no WAL commit")
    row("repo growth per 1,000 heartbeats (after gc)", hb_packed / 1024, "KiB")

    print(
        f"brat_sessions benchmark: {args.tasks:,} tasks, {args.sessions:,} sessions, "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value'.rjust(vwidth)}  target / note")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.rjust(vwidth)}  {target}")
    if args.json:
        print(json.dumps(figures))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
