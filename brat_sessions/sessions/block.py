"""The `[session] ... [/session]` block, read and written as brat does."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

OPEN = "[session]"
CLOSE = "[/session]"

# brat's field order; every field on its own line, `null` for an absent optional.
FIELD_ORDER = ("state", "session_id", "role", "session_type", "engine", "worktree", "pid",
               "started_ts", "last_heartbeat_ts", "exit_code", "exit_reason", "last_output_ref")
REQUIRED = ("state", "session_id", "role", "session_type", "engine", "worktree", "started_ts")
INT_FIELDS = ("pid", "started_ts", "last_heartbeat_ts", "exit_code")
STR_FIELDS = ("state", "session_id", "role", "session_type", "engine", "worktree",
              "exit_reason", "last_output_ref")
STATES = ("spawned", "ready", "running", "handoff", "exit")
SESSION_TYPES = ("polecat", "crew")
EXIT_REASONS = ("completed", "signal", "timeout", "crash", "user-stop")
OUTPUT_REF = re.compile(r"^sha256:[0-9a-f]{64}$")

# A plain value is written as brat writes it; anything else as a TOML basic string.
_NEEDS_ESCAPE = re.compile(r'["\\\[\]\x00-\x1f\x7f]')
_INT = re.compile(r"^[+-]?\d+$")


class BlockError(ValueError):
    """A block that is not well formed or lacks a required field."""


@dataclass
class ParsedBlock:
    fields: dict[str, Any]   # the known and unknown keys, values decoded
    error: str | None = None  # set when the block is malformed


def _encode_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        raise TypeError("booleans are not block values")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if not _NEEDS_ESCAPE.search(text):
        return f'"{text}"'
    escaped = json.dumps(text, ensure_ascii=False)  # JSON escapes are valid TOML escapes
    return (escaped.replace("[", "\\u005B").replace("]", "\\u005D").replace("\x7f", "\\u007F"))


def format_block(fields: dict[str, Any]) -> str:
    """One block: brat's fields in brat's order, then any extra keys (e.g. `host`)."""
    lines = [OPEN]
    for key in FIELD_ORDER:
        lines.append(f"{key} = {_encode_value(fields.get(key))}")
    for key, value in fields.items():
        if key not in FIELD_ORDER and value is not None:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                raise ValueError(f"invalid block key {key!r}")
            lines.append(f"{key} = {_encode_value(value)}")
    lines.append(CLOSE)
    return "\n".join(lines)


def _decode_value(raw: str) -> Any:
    if raw[:1] == '"' and raw[-1:] == '"' and len(raw) >= 2:
        inner = raw[1:-1]
        if "\\" not in inner and '"' not in inner:
            return inner  # brat's plain form, the common case
        try:
            return tomllib.loads("v = " + raw)["v"]
        except tomllib.TOMLDecodeError:
            return inner  # brat wrote it raw, backslashes and all
    if raw == "null":
        return None
    if _INT.match(raw):
        return int(raw)
    raise BlockError(f"value {raw!r} is neither a quoted string, an integer nor null")


def _validate(fields: dict[str, Any]) -> None:
    for key in REQUIRED:
        if fields.get(key) is None:
            raise BlockError(f"missing required field {key}")
    for key in INT_FIELDS:
        if key in fields and fields[key] is not None and not isinstance(fields[key], int):
            raise BlockError(f"{key} must be an integer")
    for key in STR_FIELDS:
        if key in fields and fields[key] is not None and not isinstance(fields[key], str):
            raise BlockError(f"{key} must be a string")
    if fields["state"] not in STATES:
        raise BlockError(f"unknown state {fields['state']!r}")
    if fields["session_type"] not in SESSION_TYPES:
        raise BlockError(f"unknown session_type {fields['session_type']!r}")
    if not fields["session_id"]:
        raise BlockError("empty session_id")


def _parse_body(lines: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in lines:
        key, sep, raw = line.partition("=")
        if not sep:
            raise BlockError(f"line {line[:40]!r} is not key = value")
        fields[key.strip()] = _decode_value(raw.strip())
    _validate(fields)
    return fields


def _finish(body: list[str]) -> ParsedBlock:
    try:
        return ParsedBlock(_parse_body(body))
    except BlockError as exc:
        return ParsedBlock({}, str(exc))


def parse_blocks(text: str) -> list[ParsedBlock]:
    """Every block in a comment, well formed or not, in order.

    A block runs from a `[session]` line to the next `[/session]` line; lines are
    split on LF only (a CR before it is dropped), so no other character ends a line.
    A `[session]` line inside an open block starts a new block and reports the
    unclosed one.
    """
    blocks: list[ParsedBlock] = []
    body: list[str] | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if line == OPEN:
            if body is not None:
                blocks.append(ParsedBlock({}, "no closing [/session] before the next [session]"))
            body = []
        elif body is None:
            continue
        elif line == CLOSE:
            blocks.append(_finish(body))
            body = None
        elif line:
            body.append(line)
    if body is not None:
        blocks.append(ParsedBlock({}, "no closing [/session]"))
    return blocks


def has_block(text: str) -> bool:
    return OPEN in text
