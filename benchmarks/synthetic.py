"""Build a synthetic brat_sessions repository of a given size, fast.

Events, blocks and chunks are made by brat_sessions itself (the same code that
writes real ones); only the writing of git objects goes through
`git fast-import` instead of libgit2, because a benchmark repository holds
hundreds of thousands of commits. Every append is one commit, as real writers
make them, with `meta.json.prev_wal` naming the parent (fast-import tells us
each commit's id as it goes, through `get-mark`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pygit2

from brat_sessions.sessions.block import format_block
from brat_sessions.sessions.lease import create_lease
from brat_sessions.storage import events as ev
from brat_sessions.storage.chunk import chunk_hash, encode_chunk
from brat_sessions.storage.events import make_event

ACTOR = "be" * 16
DAY_MS = 86_400_000


class LogWriter:
    """Appends chunks as WAL commits through one `git fast-import` process."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "fast-import", "--quiet", "--done", "--force"],
            cwd=repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        head = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "refs/grite/wal"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        self.head = head or None
        self.commits = 0

    def append(self, events: list[ev.Event]) -> str:
        data = encode_chunk(events)
        digest = chunk_hash(data)
        day = datetime.fromtimestamp(events[0].ts_unix_ms / 1000, tz=UTC)
        meta = json.dumps(
            {"schema_version": 1, "actor_id": ACTOR, "chunk_hash": digest, "prev_wal": self.head}
        ).encode()
        message = f"WAL: {len(events)} events from {ACTOR[:8]}".encode()
        secs = events[0].ts_unix_ms // 1000
        mark = self.commits + 1
        out = [
            b"commit refs/grite/wal\nmark :%d\n" % mark,
            f"committer grite <grit@local> {secs} +0000\n".encode(),
            b"data %d\n" % len(message),
            message,
            b"\n",
        ]
        if self.commits:
            out.append(b"from :%d\n" % self.commits)  # a commit of this import
        elif self.head:
            out.append(f"from {self.head}\n".encode())  # the log as it was before
        out += [
            b"deleteall\n",
            f"M 100644 inline events/{day:%Y/%m/%d}/{digest}.bin\n".encode(),
            b"data %d\n" % len(data),
            data,
            b"\n",
            b"M 100644 inline meta.json\n",
            b"data %d\n" % len(meta),
            meta,
            b"\n\n",
            b"get-mark :%d\n" % mark,
        ]
        self.proc.stdin.write(b"".join(out))
        self.proc.stdin.flush()
        self.head = self.proc.stdout.readline().decode().strip()
        self.commits += 1
        return self.head

    def close(self) -> None:
        self.proc.stdin.write(b"done\n")
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise RuntimeError("git fast-import failed")


def _ids(prefix: str, count: int, start_ms: int, span_days: int, rnd: random.Random) -> list[tuple[str, int]]:
    seen: set[str] = set()
    found = []
    while len(found) < count:
        ts = start_ms + rnd.randrange(span_days * DAY_MS)
        day = datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y%m%d")
        sid = f"{prefix}-{day}-{rnd.randrange(65536):04x}"
        if sid not in seen:
            seen.add(sid)
            found.append((sid, ts))
    return sorted(found, key=lambda x: x[1])


def _block(sid: str, state: str, started: int, hb: int | None, host: str, **extra) -> str:
    fields = {
        "state": state,
        "session_id": sid,
        "role": "witness",
        "session_type": "polecat",
        "engine": "codex",
        "worktree": f".grite/worktrees/{sid}",
        "pid": 4242,
        "started_ts": started,
        "last_heartbeat_ts": hb,
        "host": host,
    }
    fields.update(extra)
    return format_block(fields)


def session_appends(issue: bytes, sid: str, started: int, host: str, finish: bool) -> list[list[ev.Event]]:
    """The appends one session lifecycle makes: spawn, running, and (if finish) exit."""
    a = bytes.fromhex(ACTOR)
    spawn = [
        make_event(issue, a, started, ev.COMMENT_ADDED, [_block(sid, "spawned", started, None, host)]),
        make_event(issue, a, started, ev.LABEL_ADDED, ["session:spawned"]),
    ]
    t1 = started + 2_000
    running = [
        make_event(issue, a, t1, ev.COMMENT_ADDED, [_block(sid, "running", started, t1, host)]),
        make_event(issue, a, t1, ev.LABEL_REMOVED, ["session:spawned"]),
        make_event(issue, a, t1, ev.LABEL_ADDED, ["session:running"]),
    ]
    appends = [spawn, running]
    if finish:
        t2 = t1 + 600_000
        exit_block = _block(
            sid,
            "exit",
            started,
            t2 - 10_000,
            host,
            exit_code=0,
            exit_reason="completed",
            last_output_ref="sha256:" + "0" * 64,
        )
        appends.append(
            [
                make_event(issue, a, t2, ev.COMMENT_ADDED, [exit_block]),
                make_event(issue, a, t2, ev.LABEL_REMOVED, ["session:running"]),
                make_event(issue, a, t2, ev.LABEL_ADDED, ["session:exit"]),
            ]
        )
    return appends


def build(path: Path, tasks: int, sessions: int, live: int, seed: int = 7, now_ms: int | None = None) -> dict:
    """A repository with `tasks` task issues and `sessions` sessions, `live` of them alive."""
    rnd = random.Random(seed)
    now_ms = now_ms or int(datetime.now(tz=UTC).timestamp() * 1000)
    start = now_ms - 30 * DAY_MS
    path.mkdir(parents=True, exist_ok=True)
    repo = pygit2.init_repository(str(path))
    grite = path / ".git" / "grite"
    (grite / "actors" / ACTOR).mkdir(parents=True, exist_ok=True)
    (grite / "config.toml").write_text(f'default_actor = "{ACTOR}"\n')
    (grite / "actors" / ACTOR / "config.toml").write_text(f'actor_id = "{ACTOR}"\ncreated_ts = {start}\n')
    writer = LogWriter(path)
    a = bytes.fromhex(ACTOR)
    task_issues = []
    for tid, ts in _ids("t", tasks, start - DAY_MS, 1, rnd):
        issue = os.urandom(16)
        writer.append(
            [
                make_event(
                    issue,
                    a,
                    ts,
                    ev.ISSUE_CREATED,
                    [f"Task {tid}", "Paths: src/", ["type:task", f"task:{tid}", "status:queued"]],
                )
            ]
        )
        task_issues.append(issue)
    live_ids = []
    session_ids = _ids("s", sessions, start, 29, rnd)
    for n, (sid, ts) in enumerate(session_ids):
        is_live = n >= sessions - live
        issue = task_issues[n % len(task_issues)]
        started = now_ms - rnd.randrange(60_000) if is_live else ts
        for append in session_appends(issue, sid, started, "bench-host", finish=not is_live):
            writer.append(append)
        if is_live:
            live_ids.append(sid)
    writer.close()
    for sid in live_ids:
        create_lease(repo, sid, "bench-host")
    return {"commits": writer.commits, "live": live_ids, "tasks": task_issues}


def add_stale(
    path: Path, task_issues: list[bytes], count: int, seed: int = 11, now_ms: int | None = None
) -> list[str]:
    """Append `count` sessions that stopped heartbeating an hour ago, on a host that is gone."""
    rnd = random.Random(seed)
    now_ms = now_ms or int(datetime.now(tz=UTC).timestamp() * 1000)
    writer = LogWriter(path)
    ids = []
    for n, (raw_sid, _) in enumerate(_ids("s", count, now_ms, 1, rnd)):
        sid = raw_sid.replace("s-", "s-stale", 1)
        for append in session_appends(
            task_issues[n % len(task_issues)], sid, now_ms - 3_600_000, "host-that-is-gone", finish=False
        ):
            writer.append(append)
        ids.append(sid)
    writer.close()
    return ids
