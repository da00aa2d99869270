"""The process between `brat sessions run` and the worker command.

It starts the command, tees its stdout and stderr to the terminal and to the
session's log file, and, when the command ends, writes how it ended to the
session's status file. It outlives a supervisor that dies, so the reaper can
still learn the real exit code. Usage (internal):

    python -m brat_sessions.worker.shim LOG STATUS PID_FD tee|stderr|quiet -- CMD [ARGS...]
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the terminal went away; the log still gets everything


def _write_status(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


DRAIN_IDLE_S = 0.05  # after the command ends: stop at the first pause this long ...
DRAIN_MAX_S = 1.0    # ... or after this long at most, whoever still holds the pipes


def _exited(pid: int) -> bool:
    """Has the command ended? (It stays a zombie: we reap it only after the status.)"""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None and info.si_pid == pid


def _take_terminal(pgid: int) -> int | None:
    """Make `pgid` the terminal's foreground group, as a shell does for a job, if we are
    in the foreground now; returns our own group to give the terminal back to."""
    try:
        if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
            return None
        os.tcsetpgrp(0, pgid)
        return os.getpgrp()
    except OSError:
        return None


def main(argv: list[str]) -> int:
    log_path, status_path, pid_fd, mode = argv[0], argv[1], int(argv[2]), argv[3]
    command = argv[5:]
    tee = mode != "quiet"
    to_stderr = mode == "stderr"  # `run --json`: stdout carries only the envelope
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command's group
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # so we may hand the terminal back
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "ab", buffering=0)
    try:
        # its own process group: stop, fencing and forwarded signals reach all it starts
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 restore_signals=True, process_group=0,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    except OSError as exc:
        message = f"brat: cannot run {command[0] if command else '(nothing)'}: {exc.strerror}\n".encode()
        _write_all(2, message)
        log.write(message)
        os.close(pid_fd)
        _write_status(status_path, {"returncode": 127, "error": str(exc)})
        return 127
    own_group = _take_terminal(child.pid)
    os.write(pid_fd, str(child.pid).encode())
    os.close(pid_fd)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ, 1)
    sel.register(child.stderr, selectors.EVENT_READ, 2)
    drain_until = None
    while sel.get_map():
        ready = sel.select(DRAIN_IDLE_S if drain_until else 0.2)
        for key, _ in ready:
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                sel.unregister(key.fileobj)
                continue
            log.write(data)
            if tee:
                _write_all(2 if to_stderr else key.data, data)
        if drain_until is None and _exited(child.pid):
            # The command is over: what is already in the pipes still counts, but a
            # background descendant that keeps them open is not waited for.
            drain_until = time.monotonic() + DRAIN_MAX_S
        elif drain_until is not None and (not ready or time.monotonic() > drain_until):
            break
    # Learn how it ended without reaping it, record that, then reap: the pid stays
    # visible (a zombie) until the status file exists, so a reaper never sees a gap.
    info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    log.close()
    if info.si_code == os.CLD_EXITED:
        status, code = {"returncode": info.si_status}, info.si_status
    else:
        status, code = {"signal": info.si_status}, 128 + info.si_status
    _write_status(status_path, status)
    child.wait()
    if own_group is not None:
        try:
            os.tcsetpgrp(0, own_group)
        except OSError:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
