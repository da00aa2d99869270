import pytest

from brat_sessions.storage import events as ev
from brat_sessions.storage.events import compute_event_id, event_from_record, make_event, preimage

ISSUE = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ACTOR = bytes.fromhex("101112131415161718191a1b1c1d1e1f")


def test_spec_check_vector():
    payload = ["Test", "Body", ["bug", "p0"]]
    assert preimage(ISSUE, ACTOR, 1700000000000, None, 1, payload).hex() == (
        "870150000102030405060708090a0b0c0d0e0f50101112131415161718191a1b1c1d1e1f1b0000018bcfe56800"
        "f60183645465737464426f64798263627567627030"
    )
    assert compute_event_id(ISSUE, ACTOR, 1700000000000, None, 1, payload).hex() == (
        "9c2aee7924bf7482dd3842c6ec32fd5103883b9d2354f63df2075ac61fe3d827"
    )


def test_issue_created_labels_are_sorted_before_hashing_and_stored_sorted():
    a = make_event(ISSUE, ACTOR, 1700000000000, ev.ISSUE_CREATED, ["Test", "Body", ["p0", "bug"]])
    assert a.payload[2] == ["bug", "p0"]
    assert a.event_id.hex().startswith("9c2aee79")


def test_record_with_wrong_event_id_is_rejected():
    e = make_event(ISSUE, ACTOR, 1, ev.COMMENT_ADDED, ["hi"])
    record = e.to_record()
    record[6] = ["changed"]
    with pytest.raises(ValueError, match="does not match"):
        event_from_record(record)


@pytest.mark.parametrize(
    "index,value,message",
    [
        (0, b"short", "event_id"),
        (1, b"x" * 15, "issue_id"),
        (2, "text", "actor"),
        (3, -1, "ts_unix_ms"),
        (4, b"p", "parent"),
        (5, "1", "kind_tag"),
        (6, "nope", "kind_payload"),
    ],
)
def test_record_shape_is_checked(index, value, message):
    record = make_event(ISSUE, ACTOR, 1, ev.COMMENT_ADDED, ["hi"]).to_record()
    record[index] = value
    with pytest.raises(ValueError, match=message):
        event_from_record(record)


def test_unknown_kind_round_trips():
    e = make_event(ISSUE, ACTOR, 5, 99, [1, "x", None])
    assert event_from_record(e.to_record()) == e
