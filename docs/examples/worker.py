"""A complete worker: one task, a session around the work, heartbeats, progress, exit.

Run it in a repository tracked by brat (`python docs/examples/worker.py`); a test runs
it exactly as it is here (tests/worker/test_api_docs.py).
"""

from __future__ import annotations

import subprocess
import sys

from brat_sessions import BratError, Fenced, Tracker


def main() -> int:
    tracker = Tracker()  # the repository of the current directory
    task = tracker.create_task("Count the Python files", "Acceptance: a number in the log")
    try:
        with tracker.session_scope(task, engine="python") as session:
            session.transition("handoff")  # running -> handoff: the work is done, hand it on
            files = subprocess.run(
                ["git", "ls-files", "*.py"], capture_output=True, text=True, check=True
            ).stdout.split()
            session.log(f"{len(files)} Python files\n")
    except Fenced as exc:  # ended elsewhere (reaped, stopped): stop working
        print(f"stopped: {exc.message}", file=sys.stderr)
        return 4
    except BratError as exc:  # any other refusal: one line and its exit code
        print(f"brat: {exc.message}", file=sys.stderr)
        return exc.exit_code
    done = tracker.session(session.session_id)
    print(done.session_id, done.exit_reason, done.exit_code, done.last_output_ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
