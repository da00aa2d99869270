"""A session's local files under `.grite/logs/`: output log, exit status, stop request."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BadInput, BratError
from ..kinds import ExitReason
from ..rules import ID_RULE, valid_id


@dataclass
class SessionFiles:
    """Paths are built only from a session id that passed the id rule: they never leave
    `logs_dir`."""

    logs_dir: Path
    session_id: str
    # is a path there a file git tracks (committed by someone, pulled here)? Not ours then
    committed: Callable[[Path], bool] | None = None

    def _ours(self, path: Path) -> bool:
        return self.committed is None or not self.committed(path)

    def log_committed(self) -> bool:
        """Is the log's file one that git tracks (someone's, pulled over the session's own)?"""
        return not self._ours(self.log)

    def __post_init__(self) -> None:
        if not valid_id(self.session_id):
            raise BadInput(f"not a valid session id: {self.session_id[:80]!r} ({ID_RULE})")

    @property
    def log(self) -> Path:
        return self.logs_dir / f"{self.session_id}.log"

    @property
    def status(self) -> Path:
        """Written by the `run` shim when the command ends: how it ended."""
        return self.logs_dir / f"{self.session_id}.status.json"

    @property
    def stop_request(self) -> Path:
        """Left by `brat sessions stop` so the supervisor records `user-stop`."""
        return self.logs_dir / f"{self.session_id}.stop"

    def how_it_ended(self) -> tuple[int, ExitReason] | None:
        """(exit_code, exit_reason) from the status file; `user-stop` when `brat sessions
        stop` asked for the end. None while nothing says how it ended."""
        status = self.read_status()
        if status is None:
            return None
        code, reason = code_and_reason(status)
        return code, self.reason_for(reason)

    def reason_for(self, reason: ExitReason) -> ExitReason:
        """`user-stop` when `brat sessions stop` asked for the end, else `reason`."""
        return "user-stop" if self.stop_request.exists() and self._ours(self.stop_request) else reason

    def read_status(self) -> dict[str, Any] | None:
        if not self._ours(self.status):
            return None
        try:
            raw = read_own(self.status)
            data = json.loads(raw) if raw is not None else None
            return data if isinstance(data, dict) else None
        except (BratError, ValueError):
            return None

    def read_log(self) -> bytes | None:
        """The session's output log here, None when there is none (never through a link)."""
        self._refuse_committed_log()
        return read_own(self.log)

    def open_log(self) -> BinaryIO | None:
        """The session's output log opened for reading (`read_log` without reading it)."""
        self._refuse_committed_log()
        return open_own(self.log)

    def _refuse_committed_log(self) -> None:
        if self.log_committed():
            raise BratError(f"{self.log} is a file committed to git, not this session's own log: not stored")

    def ensure_dir(self) -> None:
        check_not_linked(self.logs_dir)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        check_not_linked(self.logs_dir)

    def append_log(self, data: bytes) -> None:
        self.ensure_dir()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def forget_stop_request(self) -> None:
        """Remove the stop request once the exit is recorded (never through a link)."""
        try:
            check_not_linked(self.logs_dir)
            self.stop_request.unlink(missing_ok=True)
        except (BratError, OSError):
            pass  # (a request left behind names an exited session: nothing reads it again)

    def request_stop(self, reason: str) -> None:
        """Leave the stop request for `run` (never written through a link)."""
        self.ensure_dir()
        fd = os.open(self.stop_request, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, reason.encode())
        finally:
            os.close(fd)


def check_not_linked(logs_dir: Path) -> None:
    """`.grite/logs` lies in the working tree, which a commit can fill with symbolic links:
    brat never reads or writes a session's files through one."""
    for folder in (logs_dir.parent, logs_dir):
        if folder.is_symlink():
            raise BratError(f"{folder} is a symbolic link; brat does not follow it for session files")


def read_own(path: Path) -> bytes | None:
    """A session file's bytes, or None if missing; a symbolic link is refused (BratError)."""
    fh = open_own(path)
    if fh is None:
        return None
    with fh:
        return fh.read()


def open_own(path: Path) -> BinaryIO | None:
    """A session file opened for reading, or None if missing; a symbolic link is refused
    (BratError)."""
    check_not_linked(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BratError(f"{path} is a symbolic link; brat does not follow it") from None
        raise BratError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # (a folder opens, then fails to read)
        os.close(fd)
        raise BratError(f"{path} is not a file; brat reads only files there")
    return os.fdopen(fd, "rb")


def code_and_reason(status: dict[str, Any]) -> tuple[int, ExitReason]:
    """The spec's (exit_code, exit_reason) for how the command ended."""
    if isinstance(status.get("signal"), int):
        return 128 + status["signal"], "signal"
    code = status.get("returncode")
    return (code if isinstance(code, int) else -1), "completed"


class CommittedFiles:
    """Tells whether a path in the main worktree is tracked in its git index: a file under
    `.grite/logs/` that someone committed, and a pull wrote over a session's own (git
    overwrites files it ignores). Asked of git (`git ls-files`, which reads any index
    layout, split or huge, and only lists that folder); asked again when the index changes."""

    def __init__(self, main_worktree: Path | None, common_dir: Path) -> None:
        self.main_worktree = main_worktree
        self.common_dir = common_dir
        self._seen: tuple[int, int] | None = None
        self._paths: frozenset[str] = frozenset()

    def __call__(self, path: Path) -> bool:
        if self.main_worktree is None:
            return False
        try:
            relative = path.relative_to(self.main_worktree).as_posix()
            st = (self.common_dir / "index").stat()
        except ValueError:
            return False
        except OSError:
            return False  # no index: nothing is tracked
        if self._seen != (st.st_mtime_ns, st.st_size):
            self._paths = self._tracked_under(".grite/")
            self._seen = (st.st_mtime_ns, st.st_size)
        return relative in self._paths

    def _tracked_under(self, folder: str) -> frozenset[str]:
        import subprocess

        from ..storage.stream import git_env

        assert self.main_worktree is not None
        try:
            out = subprocess.run(
                ["git", "-C", str(self.main_worktree), "ls-files", "-z", "--", folder],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                env=git_env(),
                check=False,
            )
        except OSError:
            return frozenset()
        if out.returncode != 0:
            return frozenset()
        return frozenset(os.fsdecode(p) for p in out.stdout.split(b"\0") if p)
