"""The `brat` command: parse arguments, call the library, print. Nothing else lives here.

One module per command group: `root` (brat, help, init, demo, sync, config, completion),
`tasks`, `sessions` (reading: list, show, log, doctor, tree...) and `worker` (writing:
start, heartbeat, transition, exit, stop, run, reap); `output` holds what they share.
`fast` answers the hottest command line (`sessions list --json`) before click loads.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any


def main(argv: list[str] | None = None) -> Any:
    """Entry point for a caller in this process: the hot path when it can answer, else
    the full command line. Returns (or raises SystemExit) like any function; the
    caller's working directory is left as it was (`-C` moves into PATH meanwhile)."""
    import os

    try:
        here = os.open(".", os.O_RDONLY)
    except OSError:
        return _main(argv, end_process=False)
    try:
        return _main(argv, end_process=False)
    finally:
        os.fchdir(here)
        os.close(here)


def run() -> Any:
    """The `brat` command itself (its console script, `python -m brat_sessions[.cli]`):
    as `main()`, but a command the hot path answered ends the process at once
    (`fast.finish`)."""
    return _main(None, end_process=True)


def _main(argv: list[str] | None, end_process: bool) -> Any:
    from .fast import answered, finish

    if answered(sys.argv[1:] if argv is None else argv):
        if end_process:
            finish()
        return None
    from .root import main as full

    return full(argv)


def __getattr__(name: str) -> Any:
    if name == "cli":  # the click command tree, loaded on first use
        from .root import cli

        return cli
    raise AttributeError(name)


__all__ = ["cli", "main", "run"]
