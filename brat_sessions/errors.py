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
