"""`brat demo`: a throwaway repository with tasks and real sessions, reaped and listed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pygit2

from .clock import now_ms
from .errors import BadInput
from .issues.tasks import create_task
from .reaper import reap
from .render import sessions_table
from .worker.api import Tracker
from .worker.run import run_command


def run_demo(target: str | None = None) -> dict[str, Any]:
    path = Path(target) if target else Path(tempfile.mkdtemp(prefix="brat-demo-"))
    if path.exists() and any(path.iterdir()):
        raise BadInput(
            f"{path} is not empty: the demo makes its own repository (give a new "
            f"or empty directory, or no --dir)"
        )
    path.mkdir(parents=True, exist_ok=True)
    pygit2.init_repository(str(path))
    tracker = Tracker(path)
    ws = tracker.ws
    parse = create_task(ws, "Parse brat's [session] blocks", "Paths: brat_sessions/sessions/block.py")
    reap_task = create_task(ws, "Reap stale sessions in CI", "Acceptance: one commit per pass")
    review = create_task(ws, "Review the sync design", status="needs-review")

    # 1. a polecat that runs a real command to the end, output stored in git
    code, finished = run_command(
        tracker,
        parse.issue_id,
        [sys.executable, "-c", "print('parsed 42 blocks')"],
        engine="shell",
        tee="quiet",
    )
    # 2. a polecat that is alive and heartbeating while the demo runs (this process: once
    #    the demo has ended it goes stale, and a later `reap` calls it a crash)
    alive = tracker.start(reap_task.issue_id, engine="codex", pid=os.getpid())
    tracker.transition(alive.session_id, "ready")
    tracker.heartbeat(alive.session_id)
    # 3. a person's crew session
    crew = tracker.start(review.issue_id, session_type="crew", engine="claude", state="running")
    tracker.heartbeat(crew.session_id)
    # 4. a polecat whose process died without an exit record: the reaper calls it a crash
    #    (this machine adopted that process at start, so the reaper may judge it)
    doomed = subprocess.Popen(["sleep", "60"])
    tracker.start(reap_task.issue_id, engine="codex", pid=doomed.pid, state="running")
    doomed.kill()
    doomed.wait()

    report = reap(ws, ws.config)
    sessions = tracker.sessions(include_exited=True)
    now = now_ms()
    text = "\n".join(
        [
            f"demo repository: {path}",
            f"3 tasks; 4 sessions; `run` exited {code}; the reaper recorded "
            + ", ".join(f"{v.session_id} {v.exit_reason}" for v in report.reaped),
            "",
            sessions_table(sessions, now),
            "",
            f"try: brat -C {path} sessions show {finished}",
            f"     brat -C {path} sessions log {finished}",
            f"     brat -C {path} task list",
        ]
    )
    data = {
        "repository": str(path),
        "sessions": [s.to_json(now) for s in sessions],
        "reaped": [v.to_json() for v in report.reaped],
    }
    return {"data": data, "text": text}
