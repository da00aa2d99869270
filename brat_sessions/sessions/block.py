"""The `[session] ... [/session]` block, read and written as brat does."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import rules
from ..kinds import EXIT_REASONS, SESSION_TYPES, STATES
from .fields import BRAT_FIELDS

OPEN = "[session]"
CLOSE = "[/session]"

# brat's field order; every field on its own line, `null` for an absent optional.
FIELD_ORDER = BRAT_FIELDS
REQUIRED = ("state", "session_id", "role", "session_type", "engine", "worktree", "started_ts")

# A plain value is written as brat writes it; anything else as a TOML basic string.
_NEEDS_ESCAPE = re.compile(r'["\\\[\]\x00-\x1f\x7f]')
_INT = re.compile(r"[+-]?[0-9]+")


class BlockError(ValueError):
    """A block that is not well formed or lacks a required field."""


@dataclass
class ParsedBlock:
    """A `[session]` block as read: its fields, or why it cannot be used."""

    fields: dict[str, Any]  # the known and unknown keys, values decoded and validated
    error: str | None = None  # set when the block is malformed (and then not used)
    warnings: list[str] = field(default_factory=list)  # optional fields dropped as invalid
    session_hint: str | None = None  # a malformed block's session id, if one can be read


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
    return escaped.replace("[", "\\u005B").replace("]", "\\u005D").replace("\x7f", "\\u007F")


def format_block(fields: dict[str, Any]) -> str:
    """One block: brat's fields in brat's order, then any extra keys (e.g. `host`).

    Raises BlockError (a ValueError) rather than write a block that a reader would
    call malformed or whose fields it would drop.
    """
    checked = {k: v for k, v in fields.items() if v is not None}
    problems = _validate(checked)
    if problems:
        raise BlockError(problems[0])
    lines = [OPEN]
    for key in FIELD_ORDER:
        lines.append(f"{key} = {_encode_value(fields.get(key))}")
    for key, value in fields.items():
        if key not in FIELD_ORDER and value is not None:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                raise ValueError(f"invalid block key {key!r}")
            lines.append(f"{key} = {_encode_value(value)}")
    lines.append(CLOSE)
    for line in lines:
        if len(line) > rules.MAX_LINE_CHARS:  # (escapes make a value up to 6 times longer)
            key = line.partition(" = ")[0]
            raise BlockError(
                f"field {key} is {len(line)} characters once written "
                f"(a block's line holds at most {rules.MAX_LINE_CHARS})"
            )
    return "\n".join(lines)


def line_fits(key: str, value: Any) -> bool:
    """Does `key = value` fit in a block's line once the value is escaped?"""
    return len(key) + 3 + len(_encode_value(value)) <= rules.MAX_LINE_CHARS


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
    if _INT.fullmatch(raw):
        if len(raw) > 20:
            raise BlockError(f"integer {raw[:24]}... is out of range")
        return int(raw)
    raise BlockError(f"value {raw[:40]!r} is neither a quoted string, an integer nor null")


# Required fields: a bad one makes the whole block invalid.
_REQUIRED_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "state": (lambda v: v in STATES, f"one of {', '.join(STATES)}"),
    "session_id": (rules.valid_id, rules.ID_RULE),
    "role": (lambda v: rules.valid_text(v, 64) and v != "", "a name of at most 64 characters"),
    "session_type": (lambda v: v in SESSION_TYPES, "polecat or crew"),
    "engine": (lambda v: rules.valid_text(v, 128), "a name of at most 128 characters"),
    "worktree": (rules.valid_text, "a path of at most 4096 characters"),
    "started_ts": (rules.valid_ts, "ms since the epoch between 2000 and 2200"),
}
# Optional fields: a bad one is dropped (reported), the rest of the block is used.
_OPTIONAL_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "pid": (rules.valid_pid, f"an integer in {rules.PID_MIN}..{rules.PID_MAX}"),
    "last_heartbeat_ts": (rules.valid_ts, "ms since the epoch between 2000 and 2200"),
    "exit_code": (rules.valid_exit_code, "a 32-bit integer"),
    "exit_reason": (lambda v: v in EXIT_REASONS, f"one of {', '.join(EXIT_REASONS)}"),
    "last_output_ref": (rules.valid_output_ref, "sha256:<64 hex>"),
    "host": (lambda v: rules.valid_text(v, 255), "a name of at most 255 characters"),
    # brat_sessions' extension keys (brat ignores unknown keys): lineage, progress, usage
    "parent_session_id": (rules.valid_id, rules.ID_RULE),
    "root_session_id": (rules.valid_id, rules.ID_RULE),
    "resumed_from": (rules.valid_id, rules.ID_RULE),
    "spawn_depth": (lambda v: type(v) is int and 0 <= v <= 1000, "an integer in 0..1000"),
    "git_head": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", v) is not None,
        "40 or 64 lowercase hex",
    ),
    "phase": (lambda v: rules.valid_text(v, 128), "text of at most 128 characters"),
    "iteration": (rules.valid_count, "an integer in 0..2^53"),
    "iterations": (rules.valid_count, "an integer in 0..2^53"),
    "last_activity_ts": (rules.valid_ts, "ms since the epoch between 2000 and 2200"),
    "budget_tokens": (rules.valid_count, "an integer in 0..2^53"),
    "stop_cause": (lambda v: rules.valid_text(v, 64), "text of at most 64 characters"),
    "llm_calls": (rules.valid_count, "an integer in 0..2^53"),
    "input_tokens": (rules.valid_count, "an integer in 0..2^53"),
    "output_tokens": (rules.valid_count, "an integer in 0..2^53"),
    "cache_read_tokens": (rules.valid_count, "an integer in 0..2^53"),
    "cost_usd_micros": (rules.valid_count, "an integer in 0..2^53 (millionths of a USD)"),
    "usage_ref": (rules.valid_output_ref, "sha256:<64 hex>"),
}
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ANY_RULE: tuple[Callable[[Any], bool], str] = (
    lambda v: rules.valid_int(v) or rules.valid_text(v),
    "a bounded integer or string",
)


def _verdict(key: str, value: Any) -> str | None:
    """The rule a field's value breaks, or None (an absent value breaks none)."""
    if value is None:
        return None
    if not _KEY.fullmatch(key):
        return "a key of A-Z a-z 0-9 _ -"
    ok, rule = _REQUIRED_RULES.get(key) or _OPTIONAL_RULES.get(key) or _ANY_RULE
    return None if ok(value) else rule


def _validate(fields: dict[str, Any], broken: dict[str, str] | None = None) -> list[str]:
    """Raise BlockError for a bad required field; drop bad optional ones, returning why.

    `broken` holds the verdicts already known (key -> rule broken); without it every
    field is checked here."""
    for key in REQUIRED:
        if fields.get(key) is None:
            raise BlockError(f"missing required field {key}")
    if broken is None:
        broken = {k: rule for k, v in fields.items() if (rule := _verdict(k, v)) is not None}
    if not broken:
        return []
    for key in _REQUIRED_RULES:
        if key in broken:
            raise BlockError(f"{key} {_show(fields[key])} is invalid (must be {broken[key]})")
    warnings = []
    for key in [k for k in fields if k in broken]:
        warnings.append(f"field {_show(key)} = {_show(fields.pop(key))} ignored (must be {broken[key]})")
    return warnings


# Parsed lines: most lines of a log repeat (`state = "running"`, `role = "polecat"`, ...),
# and a line's key, value and verdict depend on nothing else.
_LINES: dict[str, tuple[str, Any, str | None]] = {}
_LINES_KEPT = 20_000
_LINE_CACHED_CHARS = 200  # at most about 20,000 x 200 characters twice


def _parse_line(line: str) -> tuple[str, Any, str | None]:
    hit = _LINES.get(line)
    if hit is not None:
        return hit
    if len(line) > rules.MAX_LINE_CHARS:
        raise BlockError(f"a line of {len(line)} characters (limit {rules.MAX_LINE_CHARS})")
    key, sep, raw = line.partition("=")
    if not sep:
        raise BlockError(f"line {line[:40]!r} is not key = value")
    key = key.strip()
    value = _decode_value(raw.strip())
    hit = (key, value, _verdict(key, value))
    if len(line) <= _LINE_CACHED_CHARS:  # long lines are rare, and would make the cache big
        if len(_LINES) >= _LINES_KEPT:
            _LINES.clear()
        _LINES[line] = hit
    return hit


def _parse_body(lines: list[str]) -> tuple[dict[str, Any], list[str]]:
    fields: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for line in lines:
        key, value, rule = _parse_line(line)
        fields[key] = value
        if rule is not None:
            broken[key] = rule
        elif broken:
            broken.pop(key, None)  # a later line for the same key wins
    return fields, _validate(fields, broken)


def _finish(body: list[str]) -> ParsedBlock:
    try:
        fields, warnings = _parse_body(body)
        return ParsedBlock(fields, None, warnings)
    except BlockError as exc:
        return ParsedBlock({}, str(exc), session_hint=_session_hint(body))


_HINT = re.compile(r'session_id\s*=\s*"([A-Za-z0-9][A-Za-z0-9_-]{0,63})"')


def _session_hint(body: list[str]) -> str | None:
    """The session id of a block that cannot be read, when its line can (for a bare row)."""
    for line in body[:64]:
        m = _HINT.fullmatch(line.strip()) if len(line) <= 200 else None
        if m:
            return m.group(1)
    return None


def parse_blocks(text: str) -> list[ParsedBlock]:
    """Every block in a comment, well formed or not, in order.

    A block runs from a `[session]` line to the next `[/session]` line; lines are
    split on LF only (a CR before it is dropped), so no other character ends a line.
    A `[session]` line inside an open block starts a new block and reports the
    unclosed one. Work is bounded: a comment over MAX_COMMENT_CHARS is not parsed,
    and parsing stops after MAX_BLOCKS_PER_COMMENT blocks (each reported).
    """
    if len(text) > rules.MAX_COMMENT_CHARS:
        return [
            ParsedBlock({}, f"comment of {len(text)} characters not parsed (limit {rules.MAX_COMMENT_CHARS})")
        ]
    blocks: list[ParsedBlock] = []
    body: list[str] | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if line == OPEN:
            if len(blocks) >= rules.MAX_BLOCKS_PER_COMMENT:
                blocks.append(
                    ParsedBlock(
                        {},
                        f"more than {rules.MAX_BLOCKS_PER_COMMENT} blocks "
                        "in one comment; the rest not parsed",
                    )
                )
                return blocks
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
