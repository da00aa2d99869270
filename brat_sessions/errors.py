"""Errors that carry the exit code and the JSON error code the CLI reports."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_ARGS = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_ENVIRONMENT = 5


class BratError(Exception):
    """Base of every error the tool reports as one line and an exit code."""

    exit_code = EXIT_FAILURE
    code = "failure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(BratError):
    exit_code = EXIT_BAD_ARGS
    code = "bad_arguments"


class NotFound(BratError):
    exit_code = EXIT_NOT_FOUND
    code = "not_found"


class Conflict(BratError):
    exit_code = EXIT_CONFLICT
    code = "conflict"


class Fenced(Conflict):
    """The session has already exited: the worker must stop."""

    code = "session_exited"


class EnvironmentProblem(BratError):
    exit_code = EXIT_ENVIRONMENT
    code = "environment"


class UnwritableBlock(BratError):
    """A session whose fields (as read from the log) no `[session]` block can hold."""

    code = "unwritable_block"


class CorruptCommit(BratError):
    """A WAL commit that cannot be read; readers skip it and report it."""

    code = "corrupt_commit"

    def __init__(self, commit: str, reason: str, unreadable: bool = False, oversize: bool = False) -> None:
        super().__init__(f"corrupt WAL commit {commit}: {reason}")
        self.commit = commit
        self.reason = reason
        # an object of it is missing or damaged here (a local problem: other clones may
        # read it), not content that every clone rejects alike
        self.unreadable = unreadable
        self.oversize = oversize  # larger than this reader reads: grite may still read it


# what libgit2 and the system say when trying again cannot help (libgit2 gives them as an
# OSError with no errno, the reason in its text)
_REFUSALS = (
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "no space left on device",
    "file too large",
    "disk quota exceeded",
)


def system_refusal(exc: BaseException) -> str | None:
    """The reason, when an error writing a file or a ref is the system refusing it (a full
    disk, a read-only file system, no permission) rather than another process holding a
    lock for a moment; None otherwise."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (
        errno.EPERM,
        errno.EACCES,
        errno.EROFS,
        errno.ENOSPC,
        errno.EFBIG,
        errno.EDQUOT,
    ):
        return exc.strerror or str(exc)
    text = str(exc).lower()
    return next((reason for reason in _REFUSALS if reason in text), None)


def refused(exc: BaseException, what: str) -> None:
    """Raise EnvironmentProblem (exit 5) when writing `what` failed because the system
    refused it: such an error is not a lost race, and waiting does not help."""
    if system_refusal(exc) is not None:
        raise EnvironmentProblem(f"cannot write {what}: {exc}") from None
