import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from brat_sessions import rules
from brat_sessions.sessions.block import EXIT_REASONS, FIELD_ORDER, format_block, parse_blocks

from ..helpers import FIXTURES


def read(name: str) -> str:
    return (FIXTURES / "blocks" / name).read_bytes().decode()


def test_parses_brat_block_with_text_around_it():
    (block,) = parse_blocks(read("brat_running.txt"))
    assert block.error is None
    assert block.fields == {
        "state": "running",
        "session_id": "s-20250114-7b3d",
        "role": "witness",
        "session_type": "polecat",
        "engine": "codex",
        "worktree": ".grite/worktrees/s-20250114-7b3d",
        "pid": 12345,
        "started_ts": 1700000000000,
        "last_heartbeat_ts": 1700000005000,
        "exit_code": None,
        "exit_reason": None,
        "last_output_ref": None,
    }


def test_parses_crlf_exit_block():
    (block,) = parse_blocks(read("brat_exit_crlf.txt"))
    assert block.fields["state"] == "exit" and block.fields["exit_code"] == 0
    assert block.fields["last_output_ref"].startswith("sha256:e3b0")


def test_several_blocks_blank_lines_spaces_and_unknown_keys():
    first, second = parse_blocks(read("two_blocks_spacing.txt"))
    assert first.error is None and second.error is None
    assert first.fields["state"] == "spawned" and first.fields["future_key"] == "brat may add keys"
    assert first.fields["worktree"] == "" and "pid" not in first.fields
    assert second.fields["session_id"] == "s-20250114-bbbb" and second.fields["pid"] is None


def test_malformed_blocks_are_reported_not_fatal():
    blocks = parse_blocks(read("malformed.txt"))
    assert [b.error.split(" (")[0] for b in blocks] == [
        "missing required field session_id",
        "state 'flying' is invalid",
        "no closing [/session]",
    ]


def test_written_block_is_in_brats_exact_form():
    fields = {
        "state": "running",
        "session_id": "s-20250114-7b3d",
        "role": "witness",
        "session_type": "polecat",
        "engine": "codex",
        "worktree": ".grite/worktrees/s-20250114-7b3d",
        "pid": 12345,
        "started_ts": 1700000000000,
        "last_heartbeat_ts": 1700000005000,
    }
    text = format_block(fields)
    expected = read("brat_running.txt").split("\n\n")[1]
    assert text == expected


def brats_parser(text: str) -> list[dict]:
    """brat's own reading rule, literally: split at the first '=', trim, strip quotes."""
    found, current = [], None
    for line in text.split("\n"):
        if line.strip() == "[session]":
            current = {}
        elif line.strip() == "[/session]" and current is not None:
            found.append(current)
            current = None
        elif current is not None and "=" in line:
            k, v = line.split("=", 1)
            v = v.strip()
            current[k.strip()] = (
                None if v == "null" else (int(v) if re.fullmatch(r"-?\d+", v) else v.strip('"'))
            )
    return found


def test_brats_parser_reads_our_plain_blocks():
    fields = {
        "state": "exit",
        "session_id": "s-20261123-0a0b",
        "role": "user",
        "session_type": "crew",
        "engine": "claude",
        "worktree": "",
        "pid": None,
        "started_ts": 1700000000005,
        "last_heartbeat_ts": 1700000000007,
        "exit_code": -1,
        "exit_reason": "timeout",
        "last_output_ref": None,
        "host": "ci-runner-3",
    }
    (parsed,) = brats_parser(format_block(fields))
    assert parsed == fields


text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
ints = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
ids = st.from_regex(rules.ID_PATTERN, fullmatch=True)
times = st.integers(min_value=rules.TS_MIN, max_value=rules.TS_MAX)


@settings(max_examples=150, deadline=None)
@given(
    state=st.sampled_from(["spawned", "ready", "running", "handoff", "exit"]),
    session_id=ids,
    role=safe_text.filter(bool),
    session_type=st.sampled_from(["polecat", "crew"]),
    engine=safe_text,
    worktree=safe_text,
    pid=st.one_of(st.none(), st.integers(rules.PID_MIN, rules.PID_MAX)),
    started_ts=times,
    hb=st.one_of(st.none(), times),
    code=st.one_of(st.none(), st.integers(rules.I32_MIN, rules.I32_MAX)),
    reason=st.one_of(st.none(), st.sampled_from(EXIT_REASONS)),
    ref=st.one_of(st.none(), st.from_regex(rules.OUTPUT_REF, fullmatch=True)),
    host=st.one_of(st.none(), safe_text.filter(bool)),
    before=text_values,
    after=text_values,
)
@example(
    state="exit",
    session_id="s",
    role="r",
    session_type="crew",
    engine="e",
    worktree="[/session]\n[session]",
    pid=None,
    started_ts=rules.TS_MIN,
    hb=None,
    code=None,
    reason=None,
    ref=None,
    host="\u2028\x85",
    before='[session]\nstate = "x"',
    after="[/session]",
)
def test_any_valid_values_survive_write_then_read(
    state,
    session_id,
    role,
    session_type,
    engine,
    worktree,
    pid,
    started_ts,
    hb,
    code,
    reason,
    ref,
    host,
    before,
    after,
):
    fields = {
        "state": state,
        "session_id": session_id,
        "role": role,
        "session_type": session_type,
        "engine": engine,
        "worktree": worktree,
        "pid": pid,
        "started_ts": started_ts,
        "last_heartbeat_ts": hb,
        "exit_code": code,
        "exit_reason": reason,
        "last_output_ref": ref,
    }
    if host is not None:
        fields["host"] = host
    text = format_block(fields)
    # no value can end the block early or forge another: exactly one open and one close line
    lines = text.split("\n")
    assert [ln.strip() for ln in lines].count("[session]") == 1
    assert [ln.strip() for ln in lines].count("[/session]") == 1
    assert len(lines) == len(FIELD_ORDER) + 2 + (host is not None)
    # and it reads back unchanged, whatever text surrounds it in the comment
    comment = f"{before}\n{text}\n{after}"
    blocks = [b for b in parse_blocks(comment) if b.fields.get("session_id") == session_id]
    assert len(blocks) == 1 and blocks[0].error is None and blocks[0].warnings == []
    assert blocks[0].fields == fields


@settings(max_examples=150, deadline=None)
@given(
    session_id=text_values,
    role=text_values,
    engine=text_values,
    worktree=text_values,
    pid=ints,
    started_ts=ints,
    hb=ints,
    code=ints,
    reason=st.one_of(st.none(), text_values),
    ref=st.one_of(st.none(), text_values),
)
def test_the_writer_refuses_what_the_reader_would_reject(
    session_id, role, engine, worktree, pid, started_ts, hb, code, reason, ref
):
    fields = {
        "state": "running",
        "session_id": session_id,
        "role": role,
        "session_type": "polecat",
        "engine": engine,
        "worktree": worktree,
        "pid": pid,
        "started_ts": started_ts,
        "last_heartbeat_ts": hb,
        "exit_code": code,
        "exit_reason": reason,
        "last_output_ref": ref,
    }
    try:
        text = format_block(fields)
    except ValueError:
        return  # refused: nothing written
    (block,) = parse_blocks(text)
    assert block.error is None and block.warnings == []
    assert block.fields == {k: v for k, v in fields.items()}


def test_the_line_cache_keeps_only_short_lines_and_answers_as_parsing_would():
    from brat_sessions.sessions import block

    block._LINES.clear()
    long_value = "x" * 1000
    body = (
        '[session]\nstate = "running"\nsession_id = "s-1"\nrole = "r"\nsession_type = "polecat"\n'
        f'engine = "e"\nworktree = "{long_value}"\nstarted_ts = 1700000000000\npid = 0\n[/session]'
    )
    first, second = parse_blocks(body), parse_blocks(body)
    assert first == second and first[0].warnings and "pid" not in first[0].fields
    assert all(len(line) <= block._LINE_CACHED_CHARS for line in block._LINES)
    assert any(line.startswith("state") for line in block._LINES)
