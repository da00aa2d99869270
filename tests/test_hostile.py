"""Hostile input: whatever anyone with push access writes into refs/grite/wal.

A victim clone holds a real task and a real session; an attacker clone appends
hostile events with the independent `tests/grite_writer.py` and pushes them;
the victim syncs and then runs every command. For every call:

- the exit code is a documented one (0-5), never a traceback or "internal error";
- no process the test started (the canaries) is signalled;
- the content of a file outside the repository (the canary file) never shows up
  in any output, in any stored output blob, or in the remote;
- printed text holds no raw ESC/BEL; the legitimate session is still listed.

A command about an invalid id exits 2 or 3 with one line on stderr; an invalid
block is ignored and reported by `brat sessions doctor`; `stop` of a session with
no local proof of its process records the exit without signalling anything.

Safety: we run as root. pids 0 and -1 (and pids beyond the pid range) appear in
blocks only for reading commands and the reaper (which only probes with signal
0); `stop` is only ever pointed at sessions whose pid is a canary started here.
A canary that is killed is left a zombie until teardown, so its pid cannot be
reused by an unrelated process while the module runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .grite_writer import Ev, GriteWriter, Raw, encode_chunk, event_id, now_ms, raw_block, task_labels
from .helpers import brat, git, make_repo

HOST = "victim-host"
ENV = {"BRAT_HOST": HOST}
EXIT_CODES = {0, 1, 2, 3, 4, 5}
OUTPUTS = "refs/brat/sessions/outputs/"


# helpers ----------------------------------------------------------------------------
def run(world, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return brat(*args, cwd=world.victim, env=ENV, timeout=timeout)


def ok_json(world, *args: str) -> dict:
    out = run(world, *args, "--json")
    assert out.returncode == 0, f"brat {' '.join(args)} --json: {out.stderr}"
    return json.loads(out.stdout)["data"]


def short(text: str, n: int = 48) -> str:
    text = repr(text)[1:-1]
    return text if len(text) <= n else f"{text[:n]}...({len(text)} chars)"


def describe(args, out) -> str:
    err = out.stderr.strip().splitlines()
    return (
        f"`brat {' '.join(short(a) for a in args)}` exited {out.returncode}; "
        f"stderr: {short(err[0], 300) if err else '(empty)'}"
        f"{f' (+{len(err) - 1} more lines)' if len(err) > 1 else ''}"
    )


def proc_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()[0]


def canary_alive(proc: subprocess.Popen) -> bool:
    """Still running (not a zombie). Never waits for it: a killed canary stays a zombie
    until teardown, so its pid cannot be reused by some other process meanwhile."""
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    return proc_state(proc.pid) not in (None, "Z", "X")


def git_bytes(repo: Path, *args: str) -> bytes:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def leaked_outputs(repo: Path, secret: bytes) -> set[str]:
    """The stored outputs (refs/brat/sessions/outputs/*) whose bytes hold the secret."""
    refs = git_bytes(repo, "for-each-ref", "--format=%(refname)", OUTPUTS).decode().split()
    return {ref for ref in refs if secret in git_bytes(repo, "cat-file", "-p", ref)}


def objects_holding(repo: Path, secret: bytes) -> bool:
    """Does any object of the repository (any blob, any ref or none) hold the secret?"""
    return secret in git_bytes(repo, "cat-file", "--batch-all-objects", "--batch")


def listed(world) -> dict:
    out = run(world, "sessions", "list", "--all", "--json")
    assert out.returncode == 0, describe(("sessions", "list", "--all", "--json"), out)
    return json.loads(out.stdout)["data"]


# the world: a remote, a victim, an attacker -----------------------------------------------
BAD_IDS = ("dotdot", "space", "long", "traversal", "slash", "nul", "escape")
PID_IDS = ("pid_zero", "pid_minus_one", "pid_2g", "pid_huge", "pid_canary")
TS_IDS = ("ts_1e18", "ts_1e30", "ts_negative", "heartbeat_2058")
OTHER_IDS = ("engine_escapes", "engine_raw_controls", "big_comment")
ARGV_SAFE_BAD_IDS = tuple(n for n in BAD_IDS if n != "nul")  # a NUL cannot be passed in argv


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    secret_text = f"CANARY-SECRET-{uuid.uuid4().hex}"
    outside = base / "outside"
    outside.mkdir()
    secret_file = outside / "secret.log"
    secret_file.write_text(secret_text + "\n")

    canaries = {"legit": subprocess.Popen(["sleep", "600"]), "hostile": subprocess.Popen(["sleep", "600"])}
    try:
        seed = make_repo(base / "seed")
        remote = base / "remote.git"
        git(base, "clone", "-q", "--bare", str(seed), str(remote))
        victim = base / "victim"
        git(base, "clone", "-q", str(remote), str(victim))
        w = SimpleNamespace(
            victim=victim,
            remote=remote,
            secret=secret_text.encode(),
            secret_file=secret_file,
            canaries=canaries,
        )

        # the victim's real work
        task = ok_json(w, "task", "create", "Legit task", "--body", "Paths: a.py")
        w.task, w.task_issue = task["task_id"], task["grite_issue_id"]
        w.legit = ok_json(w, "sessions", "start", "--task", w.task, "--engine", "codex")["session_id"]
        legit = ok_json(w, "sessions", "show", w.legit)["session"]
        ok_json(w, "sync")

        # the attacker
        attacker = base / "attacker"
        git(base, "clone", "-q", str(remote), str(attacker))
        git(attacker, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
        gw = GriteWriter(attacker)
        logs_dir = victim / ".grite" / "logs"
        traversal = "../" * (len(logs_dir.resolve().parts) + 3) + str(outside / "secret").lstrip("/")
        assert Path(os.path.normpath(logs_dir / f"{traversal}.log")) == secret_file
        ids = {
            "dotdot": "..",
            "space": "a b",
            "long": "s-20250114-" + "f" * 9989,
            "traversal": traversal,
            "slash": "s-../../..-../.",
            "nul": "s-20250114-\x00bad",
            "escape": "s-20250114-\x1b[2J\x1b]0;pwned\x07\nfake",
            "pid_zero": "s-20250114-0a00",
            "pid_minus_one": "s-20250114-0a01",
            "pid_2g": "s-20250114-0a02",
            "pid_huge": "s-20250114-0a03",
            "pid_canary": "s-20250114-0a04",
            "ts_1e18": "s-20250114-0b00",
            "ts_1e30": "s-20250114-0b01",
            "ts_negative": "s-20250114-0b02",
            "heartbeat_2058": "s-20250114-0b03",
            "engine_escapes": "s-20250114-0c00",
            "engine_raw_controls": "s-20250114-0c01",
            "big_comment": "s-20250114-0d00",
        }
        assert len(ids["long"]) == 10_000
        rendered_id = {
            "nul": Raw(r'"s-20250114-\u0000bad"'),
            "escape": Raw(r'"s-20250114-\u001b[2J\u001b]0;pwned\u0007\nfake"'),
        }
        now = now_ms()

        def block(name: str, **fields) -> str:
            values = dict(
                state="running",
                session_id=rendered_id.get(name, ids[name]),
                role="witness",
                session_type="polecat",
                engine="codex",
                worktree="",
                pid=None,
                started_ts=now,
                host=HOST,
            )
            values.update(fields)
            return raw_block(**values)

        comments: dict[str, str] = {}  # name -> event id of the comment that carries it
        with gw.batch():
            evil = gw.create_issue("Attacker task", "", task_labels("t-20990101-0bad"))
            on = {"dotdot": w.task_issue, "traversal": w.task_issue}  # the rest on the attacker's task
            for name in BAD_IDS:
                comments[name] = gw.comment(on.get(name, evil), f"note\n{block(name)}\n")
            for name, pid in (
                ("pid_zero", 0),
                ("pid_minus_one", -1),
                ("pid_2g", 2147483648),
                ("pid_huge", 10**30),
                ("pid_canary", canaries["hostile"].pid),
            ):
                comments[name] = gw.comment(evil, block(name, pid=pid))
            # the legitimate session, rewritten to claim the canary is its process
            comments["legit_rewrite"] = gw.comment(
                w.task_issue,
                raw_block(
                    state="running",
                    session_id=w.legit,
                    role=legit["role"],
                    session_type=legit["session_type"],
                    engine=legit["engine"],
                    worktree=legit["worktree"],
                    pid=canaries["legit"].pid,
                    started_ts=legit["started_ts"],
                    host=HOST,
                ),
            )
            comments["legit_conflict"] = gw.comment(
                evil, block("pid_canary", session_id=w.legit, pid=canaries["legit"].pid)
            )
            for name, extra in (
                ("ts_1e18", dict(started_ts=10**18)),
                ("ts_1e30", dict(started_ts=10**30)),
                ("ts_negative", dict(started_ts=-(10**15))),
                (
                    "heartbeat_2058",
                    dict(last_heartbeat_ts=int(datetime(2058, 1, 1, tzinfo=UTC).timestamp() * 1000)),
                ),
            ):
                comments[name] = gw.comment(evil, block(name, host="elsewhere", **extra))
            comments["engine_escapes"] = gw.comment(
                evil,
                block(
                    "engine_escapes",
                    engine=Raw(
                        r'"codex\u001b]0;pwned\u0007\ns-20990101-fake  t-fake  mayor/crew  x  running  1  0s"'
                    ),
                ),
            )
            comments["engine_raw_controls"] = gw.comment(
                evil, block("engine_raw_controls", engine="codex\x1b[31mRED\x07\x1b]0;pwned\x07")
            )
            comments["evil_label"] = gw.label(evil, "task:../../evil")
        # several MB in one comment, with many blocks, good and bad
        parts = ["x" * 2_000_000]
        for i in range(1500):
            parts.append(block("big_comment", last_heartbeat_ts=now + i))
            parts.append(f"[session]\nthis line is not key = value {i}\nnor this one\n[/session]")
            parts.append("filler " * 200)
        comments["big_comment"] = gw.comment(evil, "\n".join(parts))
        git(attacker, "push", "-q", "origin", "refs/grite/wal:refs/grite/wal")
        w.attacker_head = git(attacker, "rev-parse", "refs/grite/wal")
        w.ids, w.comments, w.evil_issue = ids, comments, evil

        # the victim syncs (if brat cannot, the events still arrive: test_sync_takes_... fails)
        w.first_sync = run(w, "sync")
        if git(victim, "rev-parse", "refs/grite/wal") != w.attacker_head:
            git(victim, "fetch", "-q", "origin", "+refs/grite/wal:refs/grite/wal")
        yield w
    finally:
        for proc in canaries.values():
            proc.kill()
            proc.wait()


# the contract, per call ---------------------------------------------------------------
def check_call(
    world, args: tuple[str, ...], expect: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    alive_before = {n: canary_alive(p) for n, p in world.canaries.items()}
    leaked_before = leaked_outputs(world.victim, world.secret)
    out = run(world, *args, timeout=timeout)
    what = describe(args, out)
    problems = []
    if out.returncode not in EXIT_CODES:
        problems.append("undocumented exit code")
    if "Traceback" in out.stderr or "internal error" in out.stderr:
        problems.append("traceback / internal error on stderr")
    for name, proc in world.canaries.items():
        if alive_before[name] and not canary_alive(proc):
            problems.append(f"the {name} canary process {proc.pid} was killed")
    secret = world.secret.decode()
    if secret in out.stdout or secret in out.stderr:
        problems.append("the canary file's content was printed")
    new_leaks = leaked_outputs(world.victim, world.secret) - leaked_before
    if new_leaks:
        problems.append(f"the canary file's content was stored as output {sorted(new_leaks)}")
    for ch, name in (("\x1b", "ESC"), ("\x07", "BEL")):
        if ch in out.stdout or ch in out.stderr:
            problems.append(f"raw {name} printed")
    if "--json" in args and out.returncode == 0:
        try:
            assert json.loads(out.stdout)["ok"] is True
        except (ValueError, KeyError, AssertionError):
            problems.append("stdout is not one JSON envelope")
    if expect == "bad_id":
        if out.returncode not in (2, 3):
            problems.append("a command about an invalid id must exit 2 or 3")
        if len(out.stderr.strip().splitlines()) != 1:
            problems.append("a command about an invalid id must print exactly one line on stderr")
    elif expect == "ok" and out.returncode != 0:
        problems.append("expected exit 0")
    listing = run(world, "sessions", "list", "--all", "--json")
    sessions = json.loads(listing.stdout)["data"] if listing.returncode == 0 else None
    if sessions is None:
        problems.append(
            "then `list --all --json` failed: " + describe(("sessions", "list", "--all", "--json"), listing)
        )
    elif world.legit not in [s["session_id"] for s in sessions["sessions"]]:
        problems.append("the legitimate session is no longer listed by `list --all --json`")
    if (
        args[:3] == ("sessions", "list", "--all")
        and "--json" not in args
        and out.returncode == 0
        and sessions is not None
    ):
        lines = out.stdout.rstrip("\n").split("\n")
        rows = sessions["total"] + len(sessions.get("unreadable", []))  # bare rows count too
        if len(lines) != rows + 1:
            problems.append(f"`list --all` printed {len(lines)} lines for {rows} sessions + 1 header")
    assert not problems, f"{what}: " + "; ".join(problems)
    return out


# set-up sanity and what the victim sees before any command -------------------------------
def test_sync_takes_the_hostile_log_in_its_stride(world):
    out = world.first_sync
    assert out.returncode == 0, describe(("sync",), out)
    assert "Traceback" not in out.stderr
    assert git(world.victim, "rev-parse", "refs/grite/wal") == world.attacker_head


def test_doctor_reports_every_invalid_block(world):
    data = ok_json(world, "sessions", "doctor")
    problems = data["problems"]
    assert all(isinstance(p.get("kind"), str) and isinstance(p.get("message"), str) for p in problems)

    def reported(eid: str) -> bool:
        return any(p.get("event_id") == eid or eid in p["message"] for p in problems)

    missing = [n for n in BAD_IDS if not reported(world.comments[n])]
    assert not missing, f"invalid blocks not reported by doctor: {missing}"
    assert reported(world.comments["big_comment"])  # its 1500 malformed blocks
    assert reported(world.comments["legit_conflict"])  # the legit id on another issue


def test_invalid_ids_never_become_sessions(world):
    shown = {s["session_id"] for s in listed(world)["sessions"]}
    found = [n for n in BAD_IDS if world.ids[n] in shown]
    assert not found, f"blocks with invalid session ids are listed as sessions: {found}"


# every command ------------------------------------------------------------------------
def _cmds() -> list:
    c = []

    def add(test_id, *args, expect=None):
        c.append(pytest.param(args, expect, id=test_id))

    add("list", "sessions", "list")
    add("list-all", "sessions", "list", "--all")
    add("list-json", "sessions", "list", "--json")
    add("list-all-json", "sessions", "list", "--all", "--json")
    add("show-legit", "sessions", "show", "{legit}", expect="ok")
    add("show-legit-json", "sessions", "show", "{legit}", "--json", expect="ok")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"show-{n}", "sessions", "show", f"{{{n}}}", expect="bad_id")
    for n in PID_IDS + TS_IDS + OTHER_IDS:
        add(f"show-{n}", "sessions", "show", f"{{{n}}}")
    for n in TS_IDS:
        add(f"show-{n}-json", "sessions", "show", f"{{{n}}}", "--json")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"log-{n}", "sessions", "log", f"{{{n}}}", expect="bad_id")
    add("log-legit", "sessions", "log", "{legit}")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"heartbeat-{n}", "sessions", "heartbeat", f"{{{n}}}", expect="bad_id")
    add("heartbeat-legit", "sessions", "heartbeat", "{legit}", expect="ok")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"transition-{n}", "sessions", "transition", f"{{{n}}}", "ready", expect="bad_id")
    # stop: only where the pid is a canary of ours; neither may be signalled (no local proof)
    add("stop-pid_canary", "sessions", "stop", "{pid_canary}", "--grace", "1", expect="ok")
    add("stop-legit", "sessions", "stop", "{legit}", "--grace", "1", expect="ok")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"stop-{n}", "sessions", "stop", f"{{{n}}}", "--grace", "1", expect="bad_id")
    add("transition-legit", "sessions", "transition", "{legit}", "handoff")
    for n in ARGV_SAFE_BAD_IDS:
        add(f"exit-{n}", "sessions", "exit", f"{{{n}}}", "--code", "0", expect="bad_id")
    add("exit-legit", "sessions", "exit", "{legit}", "--code", "0")
    add("reap-dry-run", "sessions", "reap", "--dry-run")
    add("reap-dry-run-json", "sessions", "reap", "--dry-run", "--json")
    add("reap", "sessions", "reap")
    add("doctor", "sessions", "doctor", expect="ok")
    add("doctor-json", "sessions", "doctor", "--json", expect="ok")
    add("task-list", "task", "list", expect="ok")
    add("task-list-json", "task", "list", "--json", expect="ok")
    add("task-show-legit", "task", "show", "{task}", expect="ok")
    add("task-show-legit-json", "task", "show", "{task}", "--json", expect="ok")
    add("task-show-evil", "task", "show", "../../evil")
    add("list-all-after", "sessions", "list", "--all")
    add("sync", "sync", expect="ok")
    return c


def _resolve(world, arg: str) -> str:
    m = re.fullmatch(r"\{(\w+)\}", arg)
    if not m:
        return arg
    name = m.group(1)
    return {"legit": world.legit, "task": world.task}.get(name) or world.ids[name]


@pytest.mark.parametrize("args, expect", _cmds())
def test_command(world, args, expect):
    check_call(world, tuple(_resolve(world, a) for a in args), expect)


# after every command --------------------------------------------------------------------
def test_no_secret_anywhere_after_everything(world):
    found = []
    if leaked_outputs(world.victim, world.secret):
        found.append("the victim stored the canary file's content under " + OUTPUTS)
    if objects_holding(world.remote, world.secret):
        found.append("the remote holds an object with the canary file's content")
    if world.secret_file.read_bytes() != world.secret + b"\n":
        found.append("the canary file was changed")
    assert not found, "; ".join(found)


def test_canaries_survived_everything(world):
    dead = [f"{n} ({p.pid})" for n, p in world.canaries.items() if not canary_alive(p)]
    assert not dead, f"canary processes killed: {dead}"


# fuzzing the decoders -------------------------------------------------------------------
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(milliseconds=750),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = (
    "state",
    "session_id",
    "role",
    "session_type",
    "engine",
    "worktree",
    "pid",
    "started_ts",
    "last_heartbeat_ts",
    "exit_code",
    "exit_reason",
    "last_output_ref",
    "host",
)
VALUES = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.text(alphabet="0123456789", min_size=4200, max_size=6000),  # beyond int()'s digit limit
    st.text(alphabet="+-0123456789", max_size=30),
    st.text().map(lambda t: f'"{t}"'),
    st.text().map(json.dumps),  # with escapes
    st.sampled_from(
        [
            "null",
            '"',
            '""',
            '"\\"',
            r'"\u0000"',
            r'"\uD800"',
            r'"\U0010FFFF"',
            r'"\U00110000"',
            r'"\x41"',
            r'"a\q"',
            "true",
            "1e3",
            "0x10",
            '"a" "b"',
            "[]",
            "{}",
            '"""x"""',
            "'x'",
            "nan",
            "inf",
            "-0",
            "+" + "9" * 4300,
        ]
    ),
    st.text(),
)
LINE = st.one_of(
    st.sampled_from(["[session]", "[/session]", "  [session]  ", "[/session]\r", "", "=", " = "]),
    st.builds(
        lambda k, sp, v: f"{k}{sp}={sp}{v}",
        st.sampled_from(FIELDS) | st.text(max_size=6),
        st.sampled_from(["", " ", "\t", "   "]),
        VALUES,
    ),
    st.text(),
)
VALID = {
    "state": '"running"',
    "session_id": '"s-20250114-7b3d"',
    "role": '"witness"',
    "session_type": '"polecat"',
    "engine": '"codex"',
    "worktree": '""',
    "pid": "12345",
    "started_ts": "1700000000000",
    "last_heartbeat_ts": "null",
    "exit_code": "null",
    "exit_reason": "null",
    "last_output_ref": "null",
}


@st.composite
def near_valid_blocks(draw) -> str:
    fields = dict(VALID)
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.booleans()):
            fields[key] = draw(VALUES)
        else:
            fields.pop(key, None)
    lines = ["[session]"] + [f"{k} = {v}" for k, v in fields.items()] + ["[/session]"]
    lines = draw(st.permutations(lines)) if draw(st.integers(0, 9)) == 0 else lines
    sep = draw(st.sampled_from(["\n", "\r\n", "\n\n", "\r"]))
    return draw(st.text(max_size=20)) + sep + sep.join(lines) + sep + draw(st.text(max_size=20))


COMMENTS = st.one_of(
    st.text(max_size=2000),
    st.lists(LINE, max_size=40).flatmap(
        lambda ls: st.sampled_from(["\n", "\r\n"]).map(lambda sep: sep.join(ls))
    ),
    st.lists(near_valid_blocks(), min_size=1, max_size=4).map("\n".join),
)


@FUZZ
@given(COMMENTS)
def test_parse_blocks_never_raises(text):
    from brat_sessions.sessions.block import parse_blocks

    blocks = parse_blocks(text)  # documented: never raises
    assert isinstance(blocks, list)
    for b in blocks:
        assert (b.error is None) == bool(b.fields)
        assert b.error is None or isinstance(b.error, str)


HEADER = b"GRITECNK\x01\x00\x07cbor-v1"
TAGS = [
    0,
    1,
    2,
    3,
    4,
    5,
    21,
    22,
    23,
    24,
    25,
    28,
    29,
    30,
    32,
    33,
    34,
    35,
    36,
    37,
    256,
    258,
    260,
    261,
    55799,
    2**32,
    2**64 - 1,
]
CBOR_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=40),
    st.sampled_from([cbor2.undefined, 10**40, -(10**40)]),
)
CBOR_VALUES = st.recursive(
    CBOR_ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=4)), inner, max_size=4
        ),
        st.builds(cbor2.CBORTag, st.sampled_from(TAGS), inner),
    ),
    max_leaves=20,
)


def _dumps(value) -> bytes:
    try:
        return cbor2.dumps(value)
    except Exception:
        return cbor2.dumps(None)


@st.composite
def records(draw):
    def pick(good, *bad):
        return draw(st.one_of(st.just(good), *bad)) if draw(st.integers(0, 4)) == 0 else good

    issue = pick(draw(st.binary(min_size=16, max_size=16)), st.binary(max_size=20), CBOR_VALUES)
    actor = pick(draw(st.binary(min_size=16, max_size=16)), st.binary(max_size=20), CBOR_VALUES)
    ts = pick(draw(st.integers(0, 2**63)), st.integers(-(2**65), 2**70), CBOR_VALUES)
    parent = pick(None, st.binary(min_size=32, max_size=32), CBOR_VALUES)
    kind = pick(draw(st.integers(0, 20)), st.integers(-5, 2**64), CBOR_VALUES)
    payload = draw(st.one_of(st.lists(CBOR_VALUES, max_size=4), CBOR_VALUES))
    sig = pick(None, st.binary(max_size=64), CBOR_VALUES)
    try:
        eid = event_id(issue, actor, ts, parent, kind, payload)  # the right one, when it can be
    except Exception:
        eid = draw(st.binary(min_size=32, max_size=32))
    eid = pick(eid, st.binary(max_size=40), CBOR_VALUES)
    record = [eid, issue, actor, ts, parent, kind, payload, sig]
    return record if draw(st.integers(0, 9)) else record[: draw(st.integers(0, 9))]


def _deeply_nested_payload(depth: int) -> bytes:
    """A well-formed record whose payload is `depth` nested arrays (hand-encoded CBOR)."""
    head = cbor2.dumps([b"\0" * 32, b"\1" * 16, b"\2" * 16, 1700000000000, None, 3])
    return HEADER + b"\x81\x88" + head[1:] + b"\x81" * depth + b"\x80" + b"\xf6"


def _valid_chunk() -> bytes:
    ev = Ev(b"\1" * 16, b"\2" * 16, 1700000000000, 3, ['[session]\nstate = "x"\n[/session]'])
    return encode_chunk([ev])


CHUNKS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: HEADER + b),
    st.binary(max_size=40).map(lambda b: b"GRITECNK" + b),
    CBOR_VALUES.map(lambda v: HEADER + _dumps(v)),
    st.lists(records(), max_size=3).map(lambda rs: HEADER + _dumps(rs)),
    st.integers(1, 2000).map(_deeply_nested_payload),
    st.tuples(st.integers(0, 200), st.integers(0, 255)).map(
        lambda t: (lambda c: c[: t[0]] + bytes([t[1]]) + c[t[0] + 1 :])(_valid_chunk())
    ),
    st.integers(0, 200).map(lambda n: _valid_chunk()[:n]),
    st.sampled_from(
        [
            HEADER + b"\x9b" + b"\xff" * 8,
            HEADER + b"\x5b" + b"\xff" * 8,
            HEADER + b"\x7b" + b"\x7f" + b"\xff" * 7,
            HEADER + b"\x9f" * 100_000,
            HEADER + b"\xc2\x5a\x00\x10\x00\x00" + b"\xff" * 0x100000,
            b"GRITCHNK\x01\x00\x07cbor-v1\x80",
            HEADER[:10] + b"\xff" + b"cbor-v1",
        ]
    ),
)


@FUZZ
@given(CHUNKS)
def test_decode_chunk_raises_only_chunk_error(data):
    from brat_sessions.storage.chunk import ChunkError, decode_chunk

    try:
        events = decode_chunk(data)
    except ChunkError:
        return
    assert isinstance(events, list)
