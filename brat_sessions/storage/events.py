"""grite events: kinds, the canonical event id, and the 8-item record."""

from __future__ import annotations

import hashlib
import os
from typing import Any, NamedTuple

import cbor2

ISSUE_CREATED = 1
ISSUE_UPDATED = 2
COMMENT_ADDED = 3
LABEL_ADDED = 4
LABEL_REMOVED = 5
STATE_CHANGED = 6
LINK_ADDED = 7
ASSIGNEE_ADDED = 8
ASSIGNEE_REMOVED = 9
ATTACHMENT_ADDED = 10
DEPENDENCY_ADDED = 11
DEPENDENCY_REMOVED = 12
CONTEXT_UPDATED = 13
PROJECT_CONTEXT_UPDATED = 14
U64_MAX = 2**64 - 1
MAX_PAYLOAD_DEPTH = 32
# what a payload may hold: CBOR's plain data model. cbor2 turns semantic tags into other
# Python objects (sets, decimals, addresses, shared references that can make a cycle);
# an event holding one is refused, as grite never writes tags.
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_KEYS = frozenset({str, bytes, int})


class Event(NamedTuple):
    """One grite event, ids kept as raw bytes as they are stored.

    A NamedTuple: immutable, cheap to build, and cheap to send between processes.
    """

    event_id: bytes
    issue_id: bytes
    actor: bytes
    ts_unix_ms: int
    parent: bytes | None
    kind: int
    payload: list[Any]
    sig: bytes | None = None

    @property
    def order_key(self) -> bytes:
        """grite's last-writer-wins order (ts, actor, event_id), as bytes that sort the same way."""
        return self.ts_unix_ms.to_bytes(8, "big") + self.actor + self.event_id

    def to_record(self) -> list[Any]:
        return [
            self.event_id,
            self.issue_id,
            self.actor,
            self.ts_unix_ms,
            self.parent,
            self.kind,
            self.payload,
            self.sig,
        ]


def _normalized_payload(kind: int, payload: list[Any]) -> list[Any]:
    if kind == ISSUE_CREATED and len(payload) == 3 and isinstance(payload[2], list):
        return [payload[0], payload[1], sorted(payload[2])]
    return payload


def preimage(
    issue_id: bytes, actor: bytes, ts: int, parent: bytes | None, kind: int, payload: list[Any]
) -> bytes:
    """The canonical CBOR bytes that the event id hashes."""
    body = [1, issue_id, actor, ts, parent, kind, _normalized_payload(kind, payload)]
    return cbor2.dumps(body, canonical=True)


def compute_event_id(
    issue_id: bytes, actor: bytes, ts: int, parent: bytes | None, kind: int, payload: list[Any]
) -> bytes:
    return hashlib.blake2b(preimage(issue_id, actor, ts, parent, kind, payload), digest_size=32).digest()


def make_event(issue_id: bytes, actor: bytes, ts: int, kind: int, payload: list[Any]) -> Event:
    """A new event with its id computed (parent null, as grite writes)."""
    payload = _normalized_payload(kind, payload)
    eid = compute_event_id(issue_id, actor, ts, None, kind, payload)
    return Event(eid, issue_id, actor, ts, None, kind, payload, None)


def new_issue_id() -> bytes:
    return os.urandom(16)


def payload_size(items: list[Any], depth: int = 0, seen: set[int] | None = None) -> int:
    """The length of all the text and byte strings in a decoded payload, counted each time
    they are reached; -1 when it holds anything but CBOR's plain values, nests deeper than
    MAX_PAYLOAD_DEPTH, or reaches one container twice (a shared value: its paths can be
    exponentially many). A chunk's tags are refused while it is decoded (`chunk.py`), so
    this is the check for payloads built in Python and for what a tag-free chunk may hold
    (undefined, simple values)."""
    if seen is None:
        seen = {id(items)}
    total = 0
    for value in items:
        kind = type(value)
        if kind is str or kind is bytes:
            total += len(value)
            continue
        if kind in _SCALARS:
            continue
        if depth >= MAX_PAYLOAD_DEPTH or id(value) in seen:
            return -1
        seen.add(id(value))
        if kind is list:
            inner = payload_size(value, depth + 1, seen)
        elif kind is dict and all(type(k) in _KEYS for k in value):
            inner = payload_size([*value, *value.values()], depth + 1, seen)
        else:
            return -1
        if inner < 0:
            return -1
        total += inner
    return total


def event_from_record(record: Any) -> Event:
    """Validate one decoded 8-item record; ValueError says what is wrong."""
    if not isinstance(record, list) or len(record) != 8:
        raise ValueError("event record is not an array of 8 items")
    eid, issue, actor, ts, parent, kind, payload, sig = record
    if not (isinstance(eid, bytes) and len(eid) == 32):
        raise ValueError("event_id is not 32 bytes")
    if not (isinstance(issue, bytes) and len(issue) == 16):
        raise ValueError("issue_id is not 16 bytes")
    if not (isinstance(actor, bytes) and len(actor) == 16):
        raise ValueError("actor is not 16 bytes")
    if not (type(ts) is int and 0 <= ts <= U64_MAX):
        raise ValueError("ts_unix_ms is not an unsigned 64-bit integer")
    if parent is not None and not (isinstance(parent, bytes) and len(parent) == 32):
        raise ValueError("parent is neither null nor 32 bytes")
    if not (type(kind) is int and 0 <= kind <= U64_MAX):
        raise ValueError("kind_tag is not an unsigned 64-bit integer")
    if type(payload) is not list:
        raise ValueError("kind_payload is not an array")
    if payload_size(payload) < 0:
        raise ValueError(
            f"kind_payload of event {eid.hex()} holds a CBOR tag, a shared value or nests too deep"
        )
    if sig is not None and not isinstance(sig, bytes):
        raise ValueError("sig is neither null nor bytes")
    try:
        computed = compute_event_id(issue, actor, ts, parent, kind, payload)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"event {eid.hex()} cannot be encoded again: {exc}") from None
    if computed != eid:
        raise ValueError(f"event_id {eid.hex()} does not match its content")
    return Event(eid, issue, actor, ts, parent, kind, payload, sig)
