"""What a value read from the log must look like before anything uses it.

Everything in `refs/grite/wal`, leases and outputs arrives from other clones, so it
is checked once, here, where blocks are decoded. An id that passes `valid_id` is
safe as a file name and as a ref name component; numbers are bounded; strings are
bounded in length. The rules are documented in docs/format.md and docs/security.md.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

# ids: brat writes `s-YYYYMMDD-<4 hex>`; we accept any short token of a safe character
# set, so that no id can name a path outside its folder or an invalid ref.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ID_RULE = "1-64 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"

PID_MIN, PID_MAX = 1, 4_194_304  # Linux's pid_max ceiling
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
TS_MIN = 946_684_800_000  # 2000-01-01T00:00:00Z, in ms
TS_MAX = 7_258_118_400_000  # 2200-01-01T00:00:00Z, in ms
MAX_TEXT = 4096  # characters in one string field

# Bounded work: beyond these a comment is reported, not parsed.
MAX_COMMENT_CHARS = 1_000_000
MAX_BLOCKS_PER_COMMENT = 100
MAX_LINE_CHARS = 8192

OUTPUT_REF = re.compile(r"sha256:[0-9a-f]{64}")
OUTPUT_NAME = re.compile(r"[0-9a-f]{64}")  # an output's ref name: the SHA-256 of its bytes


def valid_id(value: Any) -> bool:
    """A session, task or convoy id that is safe to use as a file or ref name."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def valid_ts(value: Any) -> bool:
    return type(value) is int and TS_MIN <= value <= TS_MAX


def valid_pid(value: Any) -> bool:
    return type(value) is int and PID_MIN <= value <= PID_MAX


def valid_exit_code(value: Any) -> bool:
    return type(value) is int and I32_MIN <= value <= I32_MAX


def valid_text(value: Any, limit: int = MAX_TEXT) -> bool:
    """A string of at most `limit` characters, without NUL, that UTF-8 can hold (Python
    keeps undecodable bytes of arguments and paths as lone surrogates: not text)."""
    return isinstance(value, str) and len(value) <= limit and "\x00" not in value and is_utf8(value)


def is_utf8(text: str) -> bool:
    """Whether UTF-8 can hold `text` (not when it holds lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_int(value: Any) -> bool:
    return type(value) is int and I64_MIN <= value <= I64_MAX


def valid_count(value: Any) -> bool:
    """A count (tokens, calls, iterations, micro-dollars): an integer in 0..2**53."""
    return type(value) is int and 0 <= value <= 2**53


def valid_output_ref(value: Any) -> bool:
    return isinstance(value, str) and OUTPUT_REF.fullmatch(value) is not None


def valid_output_name(value: Any) -> bool:
    """The last part of `refs/brat/sessions/outputs/<name>`: 64 lowercase hex digits."""
    return isinstance(value, str) and OUTPUT_NAME.fullmatch(value) is not None


def valid_seconds(value: Any) -> bool:
    """A finite number of seconds, 0 or more (NaN and infinity would make every comparison
    false; a bool is no number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
