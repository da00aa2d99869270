"""The process between `brat sessions run` and the worker command.

It starts the command in its own process group (in a pseudo-terminal with `pty`),
tees its output to the terminal and to the session's log file, and, when the
command ends, writes how it ended to the session's status file. If the supervisor
(`brat sessions run`, process SUPERVISOR) dies, it stops the command's group
(SIGTERM, then SIGKILL after GRACE seconds) and still writes the status file, from
which the next reap on this machine records the exit. Usage (internal):

    python -m brat_sessions.worker.shim LOG STATUS PID_FD tee|stderr|quiet pipe|pty SUPERVISOR GRACE -- CMD...
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

DRAIN_IDLE_S = 0.05  # after the command ends: stop at the first pause this long ...
DRAIN_MAX_S = 1.0  # ... or after this long at most, whoever still holds the pipes


def _write_all(fd: int, data: bytes) -> bool:
    """Write it all; False when the reader has gone (a closed pipe)."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BrokenPipeError:
        return False
    except OSError:
        pass  # the terminal went away; the log still gets everything
    return True


def _write_status(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)  # replaces a link itself, never writes through it


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
        # it may have read the terminal before it was in the foreground and been stopped
        # by SIGTTIN: continue it now that the terminal is its own
        os.killpg(pgid, signal.SIGCONT)
        return os.getpgrp()
    except OSError:
        return None


def _child_setup(controlling_tty: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if controlling_tty:
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is the new session's terminal


class Pty:
    """A pseudo-terminal for the command: our terminal's size, raw input passed through."""

    def __init__(self) -> None:
        import pty

        self.master, self.slave = pty.openpty()
        self.saved: list[Any] | None = None
        self.copy_size()

    def copy_size(self, *_: object) -> None:
        import fcntl
        import termios

        for fd in (0, 1, 2):
            try:
                size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
                return
            except OSError:
                continue

    def raw_input(self) -> bool:
        """Pass our terminal's keys straight through (the pty does the line discipline)."""
        import termios
        import tty

        if not os.isatty(0):
            return False
        try:
            self.saved = termios.tcgetattr(0)
            tty.setraw(0)
        except termios.error:
            return False
        signal.signal(signal.SIGWINCH, self.copy_size)
        return True

    def restore(self) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(0, termios.TCSAFLUSH, self.saved)


def _spawn(command: list[str], terminal: Pty | None) -> subprocess.Popen[bytes]:
    def setup() -> None:
        _child_setup(terminal is not None)

    if terminal is None:
        # its own process group: stop, fencing and forwarded signals reach all it starts
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            restore_signals=True,
            process_group=0,
            preexec_fn=setup,
        )
    # its own session (so its own group too), with the pty as its controlling terminal
    return subprocess.Popen(
        command,
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        restore_signals=True,
        start_new_session=True,
        preexec_fn=setup,
    )


def main(argv: list[str]) -> int:
    log_path, status_path, pid_fd, mode, kind = argv[0], argv[1], int(argv[2]), argv[3], argv[4]
    supervisor, grace_s = int(argv[5]), float(argv[6])
    command = argv[8:]
    tee = mode != "quiet"
    to_stderr = mode == "stderr"  # `run --json`: stdout carries only the envelope
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command's group
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # so we may hand the terminal back
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    # never through a symbolic link (the logs folder lies in a working tree anyone can commit to)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    log = os.fdopen(os.open(log_path, flags, 0o644), "ab", buffering=0)
    terminal = Pty() if kind == "pty" else None
    try:
        child = _spawn(command, terminal)
    except OSError as exc:
        name = command[0] if command else "(nothing)"
        message = f"brat: cannot run {name}: {exc.strerror}\n".encode("utf-8", "surrogateescape")
        _write_all(2, message)
        log.write(message)
        os.close(pid_fd)
        code = 126 if isinstance(exc, PermissionError) else 127  # (found but not runnable: as a shell)
        _write_status(status_path, {"returncode": code, "error": str(exc)})
        return code
    own_group = _take_terminal(child.pid) if terminal is None else None
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
    if terminal is None:
        assert child.stdout is not None and child.stderr is not None
        sel.register(child.stdout.fileno(), selectors.EVENT_READ, 1)
        sel.register(child.stderr.fileno(), selectors.EVENT_READ, 2)
    else:
        os.close(terminal.slave)
        sel.register(terminal.master, selectors.EVENT_READ, 1)
        if terminal.raw_input():
            sel.register(0, selectors.EVENT_READ, 0)
    orphaned = Orphaned(supervisor, child.pid, grace_s, log)
    try:
        _pump(sel, child.pid, log, tee, to_stderr, terminal, orphaned)
    finally:
        if terminal is not None:
            terminal.restore()
    while not _exited(child.pid):  # (it closed or redirected its output: still watched)
        orphaned.check()
        time.sleep(0.2)
    # Learn how it ended without reaping it, record that, then reap: the pid stays
    # visible (a zombie) until the status file exists, so a reaper never sees a gap.
    info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    log.close()
    number = int(info.si_status) if info is not None else 0
    if info is not None and info.si_code == os.CLD_EXITED:
        status, code = {"returncode": number}, number
    else:
        status, code = {"signal": number}, 128 + number
    _write_status(status_path, status)
    child.wait()
    if own_group is not None:
        try:
            os.tcsetpgrp(0, own_group)
        except OSError:
            pass
    return code


class Orphaned:
    """Stops the command once its supervisor has died (we are then another's child)."""

    def __init__(self, supervisor: int, pgid: int, grace_s: float, log: Any) -> None:
        self.supervisor, self.pgid, self.grace_s, self.log = supervisor, pgid, grace_s, log
        self.kill_at: float | None = None

    def check(self) -> None:
        if self.kill_at is None:
            if os.getppid() == self.supervisor:
                return
            message = b"brat: the supervisor of this session died; stopping the command\n"
            _write_all(2, message)
            self.log.write(message)
            self._signal(signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace_s
        elif time.monotonic() > self.kill_at:
            self._signal(signal.SIGKILL)
            self.kill_at = float("inf")

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _pump(
    sel: selectors.BaseSelector,
    pid: int,
    log: Any,
    tee: bool,
    to_stderr: bool,
    terminal: Pty | None,
    orphaned: Orphaned,
) -> None:
    """Copy output to the log (and our stdout/stderr) until the command ends, then drain
    what is already waiting for at most DRAIN_MAX_S: a background descendant that keeps the
    pipes open is not waited for."""
    outputs = [key.fd for key in sel.get_map().values() if key.data != 0]
    drain_until = None
    while any(fd in sel.get_map() for fd in outputs):
        ready = sel.select(DRAIN_IDLE_S if drain_until else 0.2)
        for key, _ in ready:
            try:
                data = os.read(key.fd, 65536)
            except OSError:  # a pty whose other side is closed reads EIO: its end of file
                data = b""
            if key.data == 0:  # our terminal's keys, for the command's pty
                if data and terminal is not None:
                    _write_all(terminal.master, data)
                elif not data:
                    sel.unregister(key.fd)
                continue
            if not data:
                sel.unregister(key.fd)
                continue
            log.write(data)
            if tee and not _write_all(2 if to_stderr else key.data, data):
                # Whoever read our output has gone (`run -- yes | head -1`): this stream of
                # the command is closed too, so its next write fails as it would without
                # `run` (SIGPIPE) instead of filling the log for ever.
                sel.unregister(key.fd)
                os.close(key.fd)
        if drain_until is None and _exited(pid):
            drain_until = time.monotonic() + DRAIN_MAX_S
        elif drain_until is None:
            orphaned.check()
        elif drain_until is not None and (not ready or time.monotonic() > drain_until):
            break


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
