"""Hostile names: refs and tree entries named by an attacker, pushed through a bare remote.

Git lets anyone push a ref whose name is not UTF-8 (`leases/x\\xff\\xfe`) or a snapshot
whose tree names its files with escape sequences. The victim's `brat sync`, `brat sessions
reap --remote` and `brat snapshot verify` go on: each such name is skipped with a warning
that shows it escaped, every other ref still syncs, and nothing raw reaches the terminal.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from brat_sessions.render import safe
from brat_sessions.storage.chunk import encode_chunk
from brat_sessions.storage.events import make_event
from brat_sessions.storage.snapshot import SNAPSHOT_PREFIX

from .grite_writer import now_ms
from .helpers import brat, brat_json, git, git_blob, make_repo

LEASES = "refs/brat/sessions/leases/"
OUTPUTS = "refs/brat/sessions/outputs/"
# names as Python holds the bytes of a ref name that are not UTF-8 (git passes them on as they are)
NOT_UTF8_LEASE = "x\udcff\udcfe"  # b"x\xff\xfe"
NOT_UTF8_OUTPUT = "y\udcff"  # b"y\xff"
BIDI_OUTPUT = "\u202eevil"  # UTF-8, and no session id or hex either: it reverses what follows
HOSTILE_REFS = (LEASES + NOT_UTF8_LEASE, OUTPUTS + NOT_UTF8_OUTPUT, OUTPUTS + BIDI_OUTPUT)


def _clone(remote: Path, path: Path) -> Path:
    repo = make_repo(path)
    git(repo, "remote", "add", "origin", str(remote))
    return repo


def _task(repo: Path) -> str:
    tasks = brat_json("task", "list", cwd=repo)["tasks"]
    return tasks[0]["task_id"] if tasks else brat_json("task", "create", "Shared", cwd=repo)["task_id"]


@pytest.fixture
def world(tmp_path):
    """A victim that synced a task and a session; an attacker clone of the same remote."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    victim = _clone(remote, tmp_path / "victim")
    session = brat_json("sessions", "start", "--task", _task(victim), cwd=victim)["session_id"]
    brat_json("sync", cwd=victim)
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(remote), str(attacker))
    return SimpleNamespace(tmp=tmp_path, remote=remote, victim=victim, attacker=attacker, session=session)


def _push_hostile_refs(attacker: Path) -> None:
    junk = git_blob(attacker, b"junk\n")
    git(attacker, "push", "-q", "origin", *(f"{junk}:{ref}" for ref in HOSTILE_REFS))


def _refs(repo: Path, prefix: str) -> set[str]:
    """The refs under `prefix`, as Python holds names that are not UTF-8."""
    listed = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", prefix], cwd=repo, capture_output=True, check=True
    )
    return set(listed.stdout.decode("utf-8", "surrogateescape").split())


def _no_raw_controls(text: str) -> None:
    for raw in ("\x1b", "\x07", "\u202e", "\udcff", "\ufffd"):
        assert raw not in text, (raw, text)


def test_refs_not_utf8_on_the_remote_break_no_sync_and_the_others_still_sync(world):
    _push_hostile_refs(world.attacker)
    # another clone's live session and stored output arrive; the victim's new session leaves
    other = _clone(world.remote, world.tmp / "other")
    brat_json("sync", cwd=other)  # (its sync meets the hostile refs too)
    task = _task(other)
    theirs = brat_json("sessions", "start", "--task", task, cwd=other)["session_id"]
    assert (
        brat("sessions", "run", "--task", task, "--", "sh", "-c", "echo made-there", cwd=other).returncode
        == 0
    )
    out = brat("sync", "--json", cwd=other)
    assert out.returncode == 0, out.stderr
    mine = brat_json("sessions", "start", "--task", _task(world.victim), cwd=world.victim)["session_id"]

    out = brat("sync", "--json", cwd=world.victim)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["data"]
    assert report["leases_fetched"] == 1 and report["outputs_fetched"] == 1
    assert report["leases_pushed"] == 1 and report["fetched_commits"] > 0
    assert LEASES + theirs in _refs(world.victim, LEASES)
    assert LEASES + mine in _refs(world.remote, LEASES)
    warned = [w for w in report["warnings"] if "ignored" in w]
    assert warned == [
        "remote lease 'x\\udcff\\udcfe' ignored: not a valid session id",
        "remote output 'y\\udcff' ignored: its name is not 64 lowercase hex digits",
        "remote output '\\u202eevil' ignored: its name is not 64 lowercase hex digits",
    ]
    # the log came whole: the other clone's sessions are listed here, its output readable
    listed = {s["session_id"] for s in brat_json("sessions", "list", "--all", cwd=world.victim)["sessions"]}
    assert {world.session, theirs, mine} <= listed and len(listed) == 4
    ran = next(s for s in listed if s not in {world.session, theirs, mine})
    assert brat("sessions", "log", ran, cwd=world.victim).stdout == "made-there\n"

    people = brat("sync", cwd=world.victim)  # for people: one line each, shown escaped
    assert people.returncode == 0, people.stderr
    _no_raw_controls(people.stdout + people.stderr)
    assert people.stderr.count("ignored") == 3 and "'x\\udcff\\udcfe'" in people.stderr
    kept = {LEASES + NOT_UTF8_LEASE, *(LEASES + sid for sid in (world.session, theirs, mine))}
    assert _refs(world.remote, LEASES) == kept  # (the remote's owner deletes what is not brat's)


def test_reap_with_a_remote_that_holds_refs_not_utf8(world):
    _push_hostile_refs(world.attacker)
    brat_json("sessions", "exit", world.session, "--code", "0", cwd=world.victim)
    out = brat("sessions", "reap", "--remote", "origin", cwd=world.victim)
    assert out.returncode == 0, out.stderr
    _no_raw_controls(out.stdout + out.stderr)
    data = brat_json("sessions", "reap", "--remote", "origin", cwd=world.victim)
    assert data["checked"] == 0  # (its one session exited: the remote has its exit)
    assert LEASES + world.session not in _refs(world.remote, LEASES)  # the exit's drop pushed


def test_hostile_local_refs_break_no_reap_nor_sync(world):
    """Refs fetched by hand into the victim's own folders (`git fetch origin
    'refs/brat/*:refs/brat/*'`) are no session's lease and no output: skipped, never pushed."""
    _push_hostile_refs(world.attacker)
    lease = git(world.victim, "rev-parse", LEASES + world.session)
    brat_json("sessions", "exit", world.session, "--code", "0", cwd=world.victim)
    git(world.victim, "fetch", "-q", "origin", "+refs/brat/*:refs/brat/*")
    git(world.victim, "update-ref", LEASES + world.session, lease)  # left by a killed process
    assert _refs(world.victim, LEASES) == {LEASES + world.session, LEASES + NOT_UTF8_LEASE}

    out = brat("sessions", "reap", cwd=world.victim)
    assert out.returncode == 0, out.stderr
    assert _refs(world.victim, LEASES) == {LEASES + NOT_UTF8_LEASE}
    listed = brat("sessions", "list", "--all", cwd=world.victim)
    assert listed.returncode == 0 and world.session in listed.stdout, listed.stderr

    git(world.remote, "update-ref", "-d", LEASES + NOT_UTF8_LEASE)  # (the remote's owner cleans up)
    for ref in HOSTILE_REFS[1:]:
        git(world.remote, "update-ref", "-d", ref)
    out = brat("sync", "--json", cwd=world.victim)
    assert out.returncode == 0, out.stderr
    warnings = json.loads(out.stdout)["data"]["warnings"]
    assert "lease 'x\\udcff\\udcfe' ignored: not a valid session id" in warnings
    assert "output 'y\\udcff' ignored: its name is not 64 lowercase hex digits" in warnings
    assert _refs(world.remote, "refs/brat/") == set()  # none pushed back, the lease dropped


def test_many_hostile_names_are_named_ten_times_then_counted(world):
    junk = git_blob(world.attacker, b"junk\n")
    refs = [f"{junk}:{LEASES}x\udcff{n:02d}" for n in range(30)]
    git(world.attacker, "push", "-q", "origin", *refs)
    out = brat("sync", "--json", cwd=world.victim)
    assert out.returncode == 0, out.stderr
    warnings = json.loads(out.stdout)["data"]["warnings"]
    assert len(warnings) == 11 and warnings[-1].startswith("more leases or outputs ignored")


# snapshot verify --------------------------------------------------------------------------
def _mktree(repo: Path, entries: list[tuple[str, str, str, bytes]]) -> str:
    """A tree of (mode, type, id, name) entries: names of any bytes but NUL and `/`."""
    text = b"".join(f"{mode} {kind} {oid}\t".encode() + name + b"\0" for mode, kind, oid, name in entries)
    made = subprocess.run(["git", "mktree", "-z"], cwd=repo, input=text, capture_output=True, check=True)
    return made.stdout.decode().strip()


def _forged_snapshot(attacker: Path, number: int, extra: tuple[str, str, str, bytes]) -> None:
    """A snapshot whose one chunk is listed as it should be, and whose events/ folder also
    holds `extra`, pushed as refs/grite/snapshots/<number>."""
    git(attacker, "fetch", "-q", "origin", "+refs/grite/*:refs/grite/*")
    head = git(attacker, "rev-parse", "refs/grite/wal")
    chunk = encode_chunk([make_event(bytes(16), bytes(16), 1, 3, ["x"])])
    events = _mktree(attacker, [("100644", "blob", git_blob(attacker, chunk), b"0000.bin"), extra])
    meta = {
        "schema_version": 1,
        "created_ts": 1,
        "wal_head": head,
        "event_count": 1,
        "chunks": [
            {
                "path": "events/0000.bin",
                "chunk_hash": hashlib.blake2b(chunk, digest_size=32).hexdigest(),
                "event_count": 1,
            }
        ],
    }
    top = _mktree(
        attacker,
        [
            ("040000", "tree", events, b"events"),
            ("100644", "blob", git_blob(attacker, json.dumps(meta).encode()), b"snapshot.json"),
        ],
    )
    commit = git(attacker, "commit-tree", top, "-m", "Snapshot")
    git(attacker, "push", "-q", "origin", f"{commit}:{SNAPSHOT_PREFIX}{number}")


ESCAPES = b"\x1b]0;pwned\x07\x1b[2J\xe2\x80\xae\xff"  # a title, a cleared screen, U+202E, no UTF-8


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("blob", "events/ holds files that snapshot.json does not list: '\\x1b]0;pwned\\x07\\x1b[2J"),
        ("tree", "events/'\\x1b]0;pwned\\x07\\x1b[2J"),
    ],
)
def test_snapshot_verify_shows_hostile_entry_names_escaped(world, kind, expected):
    mode = "100644" if kind == "blob" else "040000"
    oid = git_blob(world.attacker, b"x") if kind == "blob" else _mktree(world.attacker, [])
    number = now_ms()
    _forged_snapshot(world.attacker, number, (mode, kind, oid, ESCAPES))
    assert brat_json("sync", cwd=world.victim)["snapshots_fetched"] == 1

    out = brat("snapshot", "verify", str(number), cwd=world.victim)
    assert out.returncode == 1, out.stderr
    _no_raw_controls(out.stdout + out.stderr)
    assert expected in out.stdout and "\\u202e\\udcff'" in out.stdout
    assert "is not a file" in out.stdout if kind == "tree" else "does not list" in out.stdout

    out = brat("snapshot", "verify", str(number), "--json", cwd=world.victim)
    problem = json.loads(out.stdout)["data"]["verdict"]["problem"]
    assert out.returncode == 1 and expected in problem and safe(problem) == problem
    listed = brat("snapshot", "list", cwd=world.victim)
    assert listed.returncode == 0, listed.stderr
    _no_raw_controls(listed.stdout + listed.stderr)


# invisible characters --------------------------------------------------------------------
INVISIBLE = (
    "\xad\u034f\u17b4\u17b5\U0001d173\U0001d17a\u061c\u115f\u1160\u180e\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2064\u2066\u2069\u206a\u206b\u206f\u3164\ufeff\uffa0\ufff9\ufffa\ufffb"
    "\U000e0000\U000e0001\U000e0041\U000e007f"
)


@pytest.mark.parametrize("ch", list(INVISIBLE), ids=lambda ch: f"U+{ord(ch):04X}")
def test_every_invisible_character_is_shown_escaped(ch):
    code = ord(ch)
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    assert safe(f"pay{ch}ee") == f"pay{escape}ee"


def test_a_title_of_invisible_characters_from_another_clone_is_shown_escaped(world):
    evil = _clone(world.remote, world.tmp / "evil")
    title = "pay\u3164\U000e0041\u061c\u206e\ufff9me"  # looks like "payme" where shown raw
    brat_json("sync", cwd=evil)
    task = brat_json("task", "create", title, cwd=evil)["task_id"]
    brat_json("sync", cwd=evil)
    brat_json("sync", cwd=world.victim)
    for args in (("task", "list"), ("task", "show", task)):
        out = brat(*args, cwd=world.victim)
        assert out.returncode == 0, out.stderr
        assert not set(INVISIBLE) & set(out.stdout)
        assert "pay\\u3164\\U000e0041\\u061c\\u206e\\ufff9me" in out.stdout
    shown = brat_json("task", "show", task, cwd=world.victim)  # (JSON: the title exactly)
    assert title in json.dumps(shown, ensure_ascii=False)
