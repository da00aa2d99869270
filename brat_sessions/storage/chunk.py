"""The `.bin` chunk file: magic, version, codec name, then one CBOR array of events."""

from __future__ import annotations

import hashlib
import io
import struct
from typing import Any

import cbor2

from .events import Event, event_from_record

MAGIC = b"GRITECNK"
OLD_MAGIC = b"GRITCHNK"  # an older grite document's spelling; read, never written
VERSION = 1
CODEC = b"cbor-v1"


# the smallest event record: an 8-item array, three ids of 32, 16 and 16 bytes, and five
# one-byte items (a small time and kind, a null parent, an empty payload, a null sig)
MIN_EVENT_BYTES = 1 + 34 + 17 + 17 + 5
CHECK_AS_DECODED = 1 << 20  # a chunk body larger than this is checked event by event
# CBOR items (a chunk over 1 MiB, counted before decoding): 16 MiB of one-byte items
# would decode to 16 million Python objects, GBs of them; a reap of 10,000 sessions
# writes some 300,000
MAX_CHUNK_ITEMS = 2_000_000


class ChunkError(ValueError):
    """The bytes are not a valid chunk."""


class ChunkTooCostly(ChunkError):
    """A chunk that may be valid but costs more to decode than this reader spends (grite
    may still read it: a sync carries its commit over unread, as one over the size limit)."""


def _refuse_tag(*_: object) -> object:
    raise ValueError("grite writes no CBOR tags")


# cbor2's own semantic tags (6.3), each refused as soon as it is read: they turn into other
# objects (big numbers, decimals, sets, shared or referenced values) that can cost time and
# memory out of all proportion to their bytes; any other tag goes to `tag_hook`, refused too
# (tests/storage/test_chunk.py checks the list against cbor2)
CBOR2_SEMANTIC_TAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)
_NO_TAGS = dict.fromkeys(CBOR2_SEMANTIC_TAGS, _refuse_tag)


def encode_chunk(events: list[Event]) -> bytes:
    header = MAGIC + struct.pack("<H", VERSION) + bytes([len(CODEC)]) + CODEC
    return header + cbor2.dumps([e.to_record() for e in events], canonical=True)


def decode_chunk(data: bytes) -> list[Event]:
    if data[:8] not in (MAGIC, OLD_MAGIC):
        raise ChunkError("bad magic")
    if len(data) < 11:
        raise ChunkError("truncated header")
    (version,) = struct.unpack("<H", data[8:10])
    if version != VERSION:
        raise ChunkError(f"unsupported chunk version {version}")
    n = data[10]
    codec = data[11 : 11 + n]
    if codec != CODEC:
        raise ChunkError(f"unsupported codec {codec!r}")
    body = data[11 + n :]
    if not body or body[0] >> 5 != 4:  # (before decoding: it could be 16 MiB of anything)
        raise ChunkError("CBOR body is not an array")
    count = _array_head(body)[0]
    if count is not None and count * MIN_EVENT_BYTES > len(body):
        raise ChunkError(f"its array promises {count} events, more than {len(body)} bytes can hold")
    # strict_hashable_types: map keys that are arrays (tuples) can be made to collide in
    # Python's hash, which makes decoding quadratic; grite writes no maps in a chunk
    options: dict[str, Any] = {
        "semantic_decoders": _NO_TAGS,
        "tag_hook": _refuse_tag,
        "strict_hashable_types": True,
    }
    if len(body) > CHECK_AS_DECODED:
        if count is None or too_costly(data):
            raise ChunkTooCostly(
                f"its {len(body):,} bytes hold more than {MAX_CHUNK_ITEMS:,} CBOR items "
                "(or an array of no stated length): more than this reader decodes"
            )
        return _decode_one_by_one(body, count, options)
    try:
        records = cbor2.loads(body, **options)
    except Exception as exc:  # noqa: BLE001 (cbor2 raises many types for bad input)
        raise ChunkError(f"bad CBOR: {exc}") from None
    if not isinstance(records, list):
        raise ChunkError("CBOR body is not an array")
    try:
        return [event_from_record(r) for r in records]
    except ValueError as exc:
        raise ChunkError(str(exc)) from None


def _decode_one_by_one(body: bytes, count: int, options: dict[str, Any]) -> list[Event]:
    """A large chunk, each event checked as soon as it is decoded: 16 MiB of nested empty
    arrays would otherwise cost seconds to decode before the first check fails. (Slower
    per event than one `loads`, so only for chunks larger than real writers make.)"""
    fp = io.BytesIO(body)
    fp.seek(_array_head(body)[1])  # past the array's header
    decoder = cbor2.CBORDecoder(fp, **options)
    events = []
    for _ in range(count):
        try:
            record = decoder.decode()
        except Exception as exc:  # noqa: BLE001 (cbor2 raises many types for bad input)
            raise ChunkError(f"bad CBOR: {exc}") from None
        try:
            events.append(event_from_record(record))
        except ValueError as exc:
            raise ChunkError(str(exc)) from None
    return events


def too_many_items(body: bytes, limit: int) -> bool:
    """Does the CBOR value at the start of `body` hold more than `limit` items, strings
    skipped by their length? Stops as soon as it knows, so it costs at most `limit` steps
    and no memory; anything odd (an indefinite length, a reserved code, a cut) is True."""
    pos, items, pending, end = 0, 0, 1, len(body)
    while pending:
        if pos >= end:
            return True
        initial = body[pos]
        pos += 1
        major, info = initial >> 5, initial & 31
        pending -= 1
        items += 1
        if items > limit:
            return True
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            arg = int.from_bytes(body[pos : pos + width], "big")
            pos += width
        else:
            return True  # indefinite lengths and reserved codes: grite writes neither
        if major in (2, 3):
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
    return False


def chunk_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def event_count(data: bytes) -> int | None:
    """How many events a chunk holds, from its CBOR array header alone (no decoding); None
    when the header cannot say (decode_chunk then judges)."""
    return _array_head(data[11 + data[10] :] if len(data) > 10 else b"")[0]


def too_costly(data: bytes) -> bool:
    """Is a chunk's body over 1 MiB and holding more CBOR items than this reader decodes
    (decode_chunk refuses it as ChunkTooCostly; a snapshot's writer cuts it smaller)?"""
    body = data[11 + data[10] :] if len(data) > 10 else b""
    return len(body) > CHECK_AS_DECODED and too_many_items(body, MAX_CHUNK_ITEMS)


def _array_head(body: bytes) -> tuple[int | None, int]:
    """(the length a definite CBOR array at the start of `body` states, the header's size);
    (None, 0) when it states none (not an array, an indefinite length, a cut header)."""
    if not body or body[0] >> 5 != 4:
        return None, 0
    info = body[0] & 31
    if info < 24:
        return info, 1
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or 1 + width > len(body):
        return None, 0
    return int.from_bytes(body[1 : 1 + width], "big"), 1 + width
