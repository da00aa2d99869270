import pytest

from brat_sessions.storage import events as ev
from brat_sessions.storage.chunk import ChunkError, decode_chunk, encode_chunk
from brat_sessions.storage.events import make_event

from ..helpers import FIXTURES

ISSUE = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ACTOR = bytes.fromhex("101112131415161718191a1b1c1d1e1f")


def fixture_chunk() -> bytes:
    return bytes.fromhex((FIXTURES / "grite" / "check_vector_chunk.hex").read_text().strip())


def test_hand_built_chunk_decodes_and_reencodes_byte_for_byte():
    data = fixture_chunk()
    (event,) = decode_chunk(data)
    assert event.event_id.hex() == "9c2aee7924bf7482dd3842c6ec32fd5103883b9d2354f63df2075ac61fe3d827"
    assert event.payload == ["Test", "Body", ["bug", "p0"]]
    assert event.sig is None
    assert encode_chunk([event]) == data


def test_header_layout():
    data = encode_chunk([make_event(ISSUE, ACTOR, 1, ev.COMMENT_ADDED, ["x"])])
    assert data[:8] == b"GRITECNK"
    assert data[8:10] == b"\x01\x00"
    assert data[10] == 7 and data[11:18] == b"cbor-v1"


def test_old_magic_is_read():
    data = fixture_chunk()
    assert decode_chunk(b"GRITCHNK" + data[8:])[0].kind == 1


def test_all_kinds_survive_a_round_trip():
    target = bytes(16)
    payloads = {
        1: ["t", "b", ["a"]],
        2: [None, "b"],
        3: ["c"],
        4: ["l"],
        5: ["l"],
        6: ["closed"],
        7: ["https://x", None],
        8: ["u"],
        9: ["u"],
        10: ["f", bytes(32), "text/plain"],
        11: [target, "blocks"],
        12: [target, "related_to"],
        13: ["a.py", "python", ["f"], "sum", bytes(32)],
        14: ["k", "v"],
    }
    events = [make_event(ISSUE, ACTOR, 10 + k, k, p) for k, p in payloads.items()]
    assert decode_chunk(encode_chunk(events)) == events


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: b"NOTGRITE" + d[8:], "bad magic"),
        (lambda d: d[:8] + b"\x02\x00" + d[10:], "version"),
        (lambda d: d[:11] + b"json-v1" + d[18:], "codec"),
        (lambda d: d[:18] + b"\xff\xff\xff", "not an array"),
        (lambda d: d[:18] + b"\x01", "not an array"),
        (lambda d: d[:-5], "bad CBOR"),
    ],
)
def test_corrupt_chunks_are_rejected(mutate, message):
    with pytest.raises(ChunkError, match=message):
        decode_chunk(mutate(fixture_chunk()))


def _raw_chunk(payload: bytes, kind: int = ev.COMMENT_ADDED) -> bytes:
    """A chunk of one event whose payload is the CBOR bytes given, its id a placeholder."""
    import cbor2

    record = (
        b"\x88" + cbor2.dumps(bytes(32)) + cbor2.dumps(ISSUE) + cbor2.dumps(ACTOR) + cbor2.dumps(1)
        + b"\xf6" + cbor2.dumps(kind) + payload + b"\xf6"
    )  # fmt: skip
    return encode_chunk([])[:-1] + b"\x81" + record


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x81\xd8\x1c\x81\xd8\x1d\x00", id="a list holding itself (shared refs, tags 28/29)"),
        pytest.param(b"\x81\xd9\x01\x02\x81\x61x", id="a set (tag 258)"),
        pytest.param(b"\x81\xc4\x82\x21\x19\x6a\xb3", id="a decimal (tag 4)"),
        pytest.param(b"\x81\xd8\x24\x61x", id="a MIME message (tag 36)"),
        pytest.param(b"\x81\xc2\x41\x01", id="a bignum (tag 2)"),
        pytest.param(b"\x81\xd8\x63\x00", id="a tag cbor2 does not know (99)"),
        pytest.param(b"\x81\xdb" + (2**63).to_bytes(8, "big") + b"\x00", id="a 64-bit tag"),
    ],
)
def test_a_tag_anywhere_is_refused_as_it_is_read(payload):
    # cbor2 turns tags into Python objects: big numbers, decimals (time quadratic in their
    # size), sets, shared or referenced values (gigabytes from a few kilobytes); grite
    # writes none, so the first one ends the decoding
    with pytest.raises(ChunkError, match=r"semantic tag|grite writes no CBOR tags"):
        decode_chunk(_raw_chunk(payload))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x81\xf7", id="undefined"),
        pytest.param(b"\x81\xf0", id="a simple value"),
        pytest.param(b"\x81" * 40 + b"\x80", id="nested 40 deep"),
    ],
)
def test_a_payload_beyond_plain_cbor_is_refused_by_name(payload):
    with pytest.raises(ChunkError, match="CBOR tag, a shared value or nests too deep"):
        decode_chunk(_raw_chunk(payload))


def test_every_semantic_tag_of_cbor2_is_refused():
    import cbor2

    from brat_sessions.storage.chunk import CBOR2_SEMANTIC_TAGS

    builtin = []
    for n in range(70_000):  # (cbor2's own tags are all below 2**16 as of 6.3)
        try:
            decoded = cbor2.loads(cbor2.dumps(cbor2.CBORTag(n, 0)))
        except Exception:
            builtin.append(n)
            continue
        if not isinstance(decoded, cbor2.CBORTag):
            builtin.append(n)
    assert tuple(builtin) == CBOR2_SEMANTIC_TAGS


def test_a_payload_sharing_one_list_many_times_is_refused_at_once():
    # 2**24 paths through 24 shared lists (within the depth limit): walking, or re-encoding,
    # each path would take minutes and gigabytes for a chunk of a few hundred bytes
    import cbor2

    shared: list = ["leaf"]
    for _ in range(24):
        shared = [shared, shared]
    assert ev.payload_size([shared]) == -1  # built in Python: the payload check
    data = _raw_chunk(cbor2.dumps([shared], value_sharing=True))
    assert len(data) < 400
    with pytest.raises(ChunkError, match="semantic tag"):  # read from a chunk: the tag
        decode_chunk(data)
    assert ev.payload_size([["a"], ["a"]]) == 2  # equal values, two lists: fine


def test_string_references_are_refused_before_they_are_expanded():
    # one 100 KB string referenced 30,000 times (tags 256 and 25): a 190 KB chunk that
    # re-encoding would turn into 3 GB (cbor2 aborts the process when it cannot allocate)
    import cbor2

    text = "x" * 100_000
    data = _raw_chunk(b"\x81" + cbor2.dumps([text] * 30_000, string_referencing=True))
    assert len(data) < 200_000
    with pytest.raises(ChunkError, match="semantic tag"):
        decode_chunk(data)


def test_plain_payloads_of_any_kind_are_kept():
    payload = ["text", b"bytes", 1, -2, 1.5, True, None, ["a", [1]], {"k": [1, {"n": None}]}]
    event = make_event(ISSUE, ACTOR, 1, 99, payload)
    assert decode_chunk(encode_chunk([event])) == [event]


def test_map_keys_that_python_would_hash_alike_are_refused_at_once():
    # arrays as map keys become tuples, whose hashes can be made to collide: decoding such a
    # map takes time quadratic in its size; grite writes no maps in a chunk, cbor2 may refuse
    # every key that is not a string
    import cbor2

    data = _raw_chunk(b"\x81" + cbor2.dumps({(i, i): 0 for i in range(1000)}))
    with pytest.raises(ChunkError, match="bad CBOR"):
        decode_chunk(data)


def test_a_chunk_whose_array_promises_more_events_than_its_bytes_is_refused_unread():
    from brat_sessions.storage.chunk import MAGIC, ChunkError, decode_chunk

    header = MAGIC + b"\x01\x00\x07cbor-v1"
    empties = b"\x9a" + (4_000_000).to_bytes(4, "big") + b"\x80" * 4_000_000  # 4 M empty arrays
    with pytest.raises(ChunkError, match="promises 4000000 events"):
        decode_chunk(header + empties)


def test_a_large_chunk_is_checked_event_by_event_and_reads_the_same():
    import cbor2

    from brat_sessions.storage import chunk as chunk_module
    from brat_sessions.storage.chunk import ChunkError, ChunkTooCostly, decode_chunk, encode_chunk
    from brat_sessions.storage.events import COMMENT_ADDED, CONTEXT_UPDATED, make_event

    events = [
        make_event(bytes(16), bytes(16), 1_700_000_000_000 + n, COMMENT_ADDED, ["x" * 400])
        for n in range(3000)
    ]
    data = encode_chunk(events)
    assert len(data) > chunk_module.CHECK_AS_DECODED and decode_chunk(data) == events
    # honest and dense: grite's symbols of a large generated file, 5 small items each
    symbols = [[f"F{n}", "type", n % 500, n % 500 + 2] for n in range(5000)]
    context = [
        make_event(
            bytes(16), bytes(16), 1_700_000_000_000 + n, CONTEXT_UPDATED, [f"gen{n}.go", "go", symbols]
        )
        for n in range(40)
    ]
    dense = encode_chunk(context)
    assert len(dense) > chunk_module.CHECK_AS_DECODED and decode_chunk(dense) == context
    junk = cbor2.dumps([[[]] * 73] * 20_000)  # each "event" an array of 73 empty arrays: 1.5 MB
    with pytest.raises(ChunkError, match="not an array of 8 items"):  # the first one fails, at once
        decode_chunk(data[:18] + junk)
    record = [bytes(32), bytes(16), bytes(16), 1, None, COMMENT_ADDED, [[]] * 2_100_000, None]
    with pytest.raises(ChunkTooCostly):  # the same inside one event: counted, never decoded
        decode_chunk(data[:18] + cbor2.dumps([record]))
    with pytest.raises(ChunkError, match="not an array"):  # not even an array: never decoded
        decode_chunk(data[:18] + b"\xa1\x60" + cbor2.dumps([[]] * 2_000_000))
