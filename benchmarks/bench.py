"""Measure brat_sessions on a synthetic repository and print a table.

    python benchmarks/bench.py                      # 10,000 tasks, 50,000 sessions (minutes)
    python benchmarks/bench.py --tasks 200 --sessions 1000 --stale 500   # a quick look

Every target is a ratio to a floor measured in the same run (docs/performance.md):

- cold `list` with no index and no snapshot: <= 2x the cat-file floor (a fresh
  Python that lists the log's chunk blobs with one `git rev-list --objects
  --first-parent` and reads all their bytes through ONE `git cat-file --batch`);
- cold `list` from a snapshot at the head: <= 1x the cat-file floor;
- peak memory of a cold `list`, summed over the main process and its reader
  children: <= 300 MB;
- warm `list --json`: <= 0.5x the pygit2 floor (a fresh Python opening the
  repository with pygit2); `list --all --json`: <= 4x a warm `list --json`;
- the index on disk: <= 0.5x the repository's pack;
- a heartbeat within 10 ms at p50, flat from 1,000 to 50,000 sessions; a reap of
  10,000 stale sessions writes one WAL commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

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


# The cat-file floor: every WAL chunk's bytes into one fresh Python process, through one
# `git rev-list --objects --first-parent` (commits, trees, blobs with their paths) and ONE
# `git cat-file --batch`. The blobs are read whole into Python bytes, never decoded.
CAT_FILE_FLOOR = r"""
import subprocess, sys, threading
listed = subprocess.run(
    ["git", "rev-list", "--objects", "--first-parent", "refs/grite/wal"],
    capture_output=True, check=True,
).stdout
ids = [line.split(b" ", 1)[0] for line in listed.splitlines() if line.endswith(b".bin")]
cat = subprocess.Popen(["git", "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def feed():
    cat.stdin.write(b"\n".join(ids) + b"\n")
    cat.stdin.close()
threading.Thread(target=feed, daemon=True).start()
out, total = cat.stdout, 0
for _ in ids:
    oid, kind, size = out.readline().split()
    data = out.read(int(size))  # the blob's bytes, as a Python bytes object
    out.read(1)  # its newline
    total += len(data)
if cat.wait() != 0:
    sys.exit("git cat-file failed")
print(len(ids), total)
"""


class Run(NamedTuple):
    """One process tree, measured: wall seconds, memory in KiB, its stdout."""

    seconds: float
    tree_rss: int  # the largest sum of VmRSS over the live processes of the tree, sampled
    hwm_sum: int  # the sum of each process's own peak (VmHWM): an upper bound of tree_rss
    main_maxrss: int  # wait4's ru_maxrss: max(main, its reaped children), not a sum
    processes: int
    stdout: str


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/<pid>/task/*/children."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:  # gone meanwhile
            pass
    return found


def _memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM")))
    if "VmRSS" not in fields:
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def measured(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, every: float = 0.02) -> Run:
    """Run `cmd`, sampling the RSS of its whole process tree every `every` seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        peak, hwm = 0, {}
        while True:
            total = 0
            for pid in _tree(proc.pid):
                mem = _memory(pid)
                if mem is not None:
                    total += mem[0]
                    hwm[pid] = max(hwm.get(pid, 0), mem[1])
            peak = max(peak, total)
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            time.sleep(every)
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd} failed: {err.read().decode()[-2000:]}")
        return Run(elapsed, peak, sum(hwm.values()), usage.ru_maxrss, len(hwm), out.read().decode())


def index_files(repo: Path) -> list[Path]:
    base = repo / ".git" / "brat_sessions" / "index.sqlite"
    return [base, Path(f"{base}-wal")]


def index_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in index_files(repo) if p.exists())


def pack_state(repo: Path) -> tuple[int, int, int]:
    """Bytes of .git/objects/pack/*.pack, the number of packs, and of loose objects."""
    packs = list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    out = subprocess.run(["git", "count-objects", "-v"], cwd=repo, capture_output=True, text=True).stdout
    loose = int(dict(line.split(": ") for line in out.splitlines())["count"])
    return sum(p.stat().st_size for p in packs), len(packs), loose


def index_digest(repo: Path) -> str:
    """What a cold build produced: sessions, blocks, issues, members (to compare two builds)."""
    db = sqlite3.connect(f"file:{index_files(repo)[0]}?mode=ro", uri=True)
    digest = hashlib.blake2b(digest_size=8)
    for sql in (
        "SELECT * FROM sessions ORDER BY session_id",
        "SELECT * FROM blocks ORDER BY session_id, ts, actor, event_id, seq",
        "SELECT issue_id, created, created_ts, updated_ts, title, body, state, task_id FROM issues "
        "ORDER BY issue_id",
        "SELECT * FROM members ORDER BY issue_id, kind, value",
    ):
        for r in db.execute(sql):
            digest.update(repr(r).encode())
    db.close()
    return digest.hexdigest()


def set_read_snapshots(repo: Path, value: bool | None) -> None:
    """Write `.brat/sessions.yaml` with `read_snapshots: value`, or remove it (None)."""
    path = repo / ".brat" / "sessions.yaml"
    if value is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"read_snapshots: {'true' if value else 'false'}\n")


def median_of(cmd: list[str], cwd: Path, runs: int) -> float:
    return statistics.median(timed(cmd, cwd)[0] for _ in range(runs))


def medians_side_by_side(cmds: list[list[str]], cwd: Path, runs: int) -> list[float]:
    """The median of each command, run in turn (one of each, `runs` times): a ratio of two
    of them does not move with whatever else the machine did between two measurements."""
    seconds: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for cmd, times in zip(cmds, seconds):
            times.append(timed(cmd, cwd)[0])
    return [statistics.median(times) for times in seconds]


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
    ap.add_argument("--gc", action="store_true", help="`git gc` the repository before measuring")
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
    if args.gc:
        start = time.perf_counter()
        subprocess.run(["git", "gc", "-q"], cwd=repo, check=True)
        row("git gc of the benchmark repository", time.perf_counter() - start, "s")
    pack, packs, loose = pack_state(repo)
    state = "after git gc" if args.gc else "as git fast-import wrote them, no gc"
    row(
        "pack (.git/objects/pack/*.pack)",
        pack / 2**20,
        "MB",
        f"{packs} pack(s) {state}; {loose} loose objects",
    )

    # floors: both are whole fresh processes, like the brat commands they are compared with
    floor = median_of([sys.executable, "-c", FLOOR], repo, args.runs)
    row("floor: open repo with pygit2", floor * 1000, "ms", f"median of {args.runs}")
    cat_runs = [measured([sys.executable, "-c", CAT_FILE_FLOOR], repo) for _ in range(3)]
    cat = statistics.median(r.seconds for r in cat_runs)
    blobs, chunk_bytes = (int(x) for x in cat_runs[0].stdout.split())
    row(
        "floor: chunk bytes via one git cat-file --batch",
        cat,
        "s",
        f"median of 3; {blobs:,} chunks, {chunk_bytes / 2**20:,.1f} MB",
    )

    # cold list, no snapshot: the whole log replayed (the brat process, git log and git cat-file)
    index = repo / ".git" / "brat_sessions"
    shutil.rmtree(index, ignore_errors=True)
    set_read_snapshots(repo, False)
    cold = measured(BRAT + ["sessions", "list", "--json"], repo)
    set_read_snapshots(repo, None)
    replayed = index_digest(repo)
    row("cold list, no snapshot", cold.seconds, "s", f"{built['commits']:,} commits replayed")
    row("cold list, no snapshot / cat-file floor", cold.seconds / cat, "x", "<= 2")
    row(
        "cold list, no snapshot: peak memory (tree)",
        cold.tree_rss / 1024,
        "MB",
        f"<= 300 MB; max of summed VmRSS of {cold.processes} processes, sampled every 20 ms",
    )
    row(
        "cold list, no snapshot: sum of per-process peaks",
        cold.hwm_sum / 1024,
        "MB",
        "sum of VmHWM: upper bound",
    )
    row("cold list, no snapshot: largest process", cold.main_maxrss / 1024, "MB", "wait4 ru_maxrss")
    size = index_bytes(repo)
    row("index on disk", size / 2**20, "MB", "index.sqlite + index.sqlite-wal")
    row("index on disk / pack", size / pack, "x", "<= 0.5")

    # warm lists, on the index the full replay built
    side_by_side = 2 * args.runs + 1
    warm, beside, warm_all = medians_side_by_side(
        [
            BRAT + ["sessions", "list", "--json"],
            [sys.executable, "-c", FLOOR],
            BRAT + ["sessions", "list", "--all", "--json"],
        ],
        repo,
        side_by_side,
    )
    in_turn = f"median of {side_by_side}, in turn with the pygit2 floor and list --all"
    row("warm list --json", warm * 1000, "ms", in_turn)
    row(
        "warm list --json / pygit2 floor",
        warm / beside,
        "x",
        f"<= 0.5; the floor beside it: {beside * 1000:.1f} ms",
    )
    row(
        "warm list --all --json", warm_all * 1000, "ms", f"{args.sessions:,} sessions; in turn with the above"
    )
    row("list --all --json / warm list --json", warm_all / warm, "x", "<= 4")

    # cold list from a snapshot at the head
    start = time.perf_counter()
    made = subprocess.run(
        BRAT + ["snapshot", "create", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    snap = json.loads(made.stdout)["data"]["snapshot"]
    row("snapshot create", time.perf_counter() - start, "s", f"{snap['event_count']:,} events at the head")
    shutil.rmtree(index, ignore_errors=True)
    snap_cold = measured(BRAT + ["sessions", "list", "--json"], repo)
    same = (
        "same index as the full replay" if index_digest(repo) == replayed else "INDEX DIFFERS from the replay"
    )
    row("cold list, snapshot at head", snap_cold.seconds, "s", same)
    row("cold list, snapshot at head / cat-file floor", snap_cold.seconds / cat, "x", "<= 1")
    row(
        "cold list, snapshot at head: peak memory (tree)",
        snap_cold.tree_rss / 1024,
        "MB",
        f"<= 300 MB; {snap_cold.processes} process(es)",
    )

    wal = Wal(open_repo(repo))
    issue = built["tasks"][0]
    after: list[float] = []
    floors_after: list[float] = []
    for n in range(args.runs):
        event = make_event(
            issue, bytes.fromhex(synthetic.ACTOR), int(time.time() * 1000), COMMENT_ADDED, [f"note {n}"]
        )
        wal.append(synthetic.ACTOR, lambda head, e=event: [e])
        after.append(timed(BRAT + ["sessions", "list", "--json"], repo)[0])
        floors_after.append(timed([sys.executable, "-c", FLOOR], repo)[0])
    row(
        "list after one new event",
        statistics.median(after) * 1000,
        "ms",
        f"{statistics.median(after) / statistics.median(floors_after):.2f}x the pygit2 floor run after each",
    )
    live = built["live"][0]
    row("show", median_of(BRAT + ["sessions", "show", live, "--json"], repo, args.runs) * 1000, "ms")
    beats = heartbeat_times(repo, live, 300)
    p50_big = percentile(beats, 50)
    row(f"heartbeat p50 at {args.sessions:,} sessions", p50_big * 1000, "ms", "<= 10 ms")
    row(f"heartbeat p99 at {args.sessions:,} sessions", percentile(beats, 99) * 1000, "ms")
    small = work / "small"
    shutil.rmtree(small, ignore_errors=True)
    small_built = synthetic.build(small, 200, 1000, 10)
    beats = heartbeat_times(small, small_built["live"][0], 300)
    row("heartbeat p50 at 1,000 sessions (small repo)", percentile(beats, 50) * 1000, "ms", "<= 10 ms")
    row("heartbeat p99 at 1,000 sessions (small repo)", percentile(beats, 99) * 1000, "ms")
    row(
        f"heartbeat p50, {args.sessions:,} / 1,000 sessions",
        p50_big / percentile(beats, 50),
        "x",
        "flat: about 1 or less",
    )
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
            f"reaped {reaped:,} in {written} WAL commit(s) (target: 1)",
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
