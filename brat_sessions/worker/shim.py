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


def main(argv: list[str]) -> int:
    log_path, status_path, pid_fd, mode = argv[0], argv[1], int(argv[2]), argv[3]
    command = argv[5:]
    tee = mode != "quiet"
    to_stderr = mode == "stderr"  # `run --json`: stdout carries only the envelope
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command directly
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "ab", buffering=0)
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 restore_signals=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    except OSError as exc:
        message = f"brat: cannot run {command[0] if command else '(nothing)'}: {exc.strerror}\n".encode()
        _write_all(2, message)
        log.write(message)
        os.close(pid_fd)
        _write_status(status_path, {"returncode": 127, "error": str(exc)})
        return 127
    os.write(pid_fd, str(child.pid).encode())
    os.close(pid_fd)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: child.send_signal(s))
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ, 1)
    sel.register(child.stderr, selectors.EVENT_READ, 2)
    open_streams = 2
    while open_streams:
        for key, _ in sel.select():
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            log.write(data)
            if tee:
                _write_all(2 if to_stderr else key.data, data)
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
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
