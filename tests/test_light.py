"""The warm path reads git's files directly (no pygit2) and falls back whenever it must."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brat_sessions.light import LightWorkspace
from brat_sessions.storage.plain_git import Unsupported, find, read_ref, refs_under
from brat_sessions.worker.api import Tracker

from .helpers import WORKTREE_ENV, brat_json, git, git_blob, make_repo


def _imports(repo, *args: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "brat_sessions.cli", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def test_a_warm_list_show_and_task_list_never_import_pygit2(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    t.heartbeat(s.session_id)
    cold = brat_json("sessions", "list", cwd=repo)
    for args in (
        ("sessions", "list", "--json"),
        ("sessions", "show", s.session_id, "--json"),
        ("task", "list", "--json"),
        ("task", "show", task.task_id, "--json"),
    ):
        _, imports = _imports(repo, *args)
        assert "pygit2" not in imports, args
    warm, _ = _imports(repo, "sessions", "list", "--json")
    data = json.loads(warm)["data"]
    assert data["sessions"][0]["last_heartbeat_ts"] == cold["sessions"][0]["last_heartbeat_ts"]
    assert data["sessions"][0]["session_id"] == s.session_id


def test_it_falls_back_on_a_new_head_packed_objects_and_odd_layouts(repo, task, tmp_path):
    t = Tracker(repo)
    s = t.start(task.task_id)
    t.heartbeat(s.session_id)
    brat_json("sessions", "list", cwd=repo)
    assert LightWorkspace(repo).session(s.session_id).last_heartbeat_ts
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from .helpers import append_raw, block_text

    text = block_text(session_id="s-20260101-0002", started_ts=s.started_ts)
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\x02" * 16, 5, COMMENT_ADDED, [text])])
    try:
        LightWorkspace(repo)
        raise AssertionError("a stale index must not be answered from")
    except Unsupported:
        pass
    assert brat_json("sessions", "list", cwd=repo)["total"] == 2  # through the full path
    git(repo, "pack-refs", "--all")
    git(repo, "gc", "-q")  # lease blobs packed, refs in packed-refs
    assert read_ref(find(repo).common_dir, "refs/grite/wal") == git(repo, "rev-parse", "refs/grite/wal")
    assert len(refs_under(find(repo).common_dir, "refs/brat/sessions/leases/")) == 1
    try:
        LightWorkspace(repo)
        raise AssertionError("a packed lease blob needs pygit2")
    except Unsupported:
        pass
    data = brat_json("sessions", "list", cwd=repo)
    assert data["total"] == 2 and any(x["last_heartbeat_ts"] for x in data["sessions"])
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt))
    assert find(wt).common_dir == find(repo).common_dir and find(wt).worktree == wt
    assert brat_json("sessions", "list", cwd=wt)["total"] == 2


def _full(repo, *args: str) -> str:
    """What the full command line (click) prints for `args`, never the hot path."""
    return _python("import sys; from brat_sessions.cli.root import main; main(sys.argv[1:])", repo, *args)


def _without_times(text: str) -> object:
    data = json.loads(text)
    for s in data["data"]["sessions"]:
        s.pop("age_ms", None)
        s.pop("heartbeat_age_ms", None)
    return data


def test_the_hot_path_prints_what_the_full_command_prints_without_click(repo, task, tmp_path):
    t = Tracker(repo)
    live = t.start(task.task_id, state="running")
    t.heartbeat(live.session_id)
    done = t.start(task.task_id)
    t.exit(done.session_id, 0)
    brat_json("sessions", "list", cwd=repo)  # the index is current from here on
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args, cwd in (
        (("sessions", "list", "--json"), repo),
        (("session", "list", "--json"), repo),
        (("--json", "sessions", "list", "--all"), repo),
        (("-C", str(repo), "sessions", "list", "--all", "--json"), elsewhere),
    ):
        fast, imports = _imports(cwd, *args)
        assert "click" not in imports and "pygit2" not in imports, args
        # nor what it needs no more than click: inspect (through dataclasses, if every
        # dataclass on the path has a docstring), ipaddress (through pathlib), typing (the
        # path's modules import it under TYPE_CHECKING = False only)
        loaded = {line.rsplit("|", 1)[-1].strip() for line in imports.splitlines()}
        assert not loaded & {"ast", "tokenize", "ipaddress", "typing"}, args
        assert _without_times(fast) == _without_times(_full(cwd, *args)), args


def test_any_other_command_line_goes_to_the_full_command(repo, task):
    from brat_sessions.cli.fast import _parse

    assert _parse(["sessions", "list", "--json"]) == (None, False)
    assert _parse(["-C", "x", "session", "list", "--all", "--json"]) == ("x", True)
    for argv in (
        ["sessions", "list"],  # text: terminal width, colour and pager are click's business
        ["sessions", "list", "--json", "--limit", "2"],
        ["--all", "sessions", "list", "--json"],  # --all belongs to list
        ["sessions", "list", "--json", "-C"],
        ["-C", "a", "-C", "b", "sessions", "list", "--json"],
        ["sessions", "show", "--json"],
        ["list", "sessions", "--json"],
        ["sessions", "--json", "list"],  # the sessions group takes neither --json nor -C
        ["sessions", "-C", ".", "list", "--json"],
    ):
        assert _parse(argv) is None, argv
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from .helpers import append_raw, block_text

    brat_json("sessions", "list", cwd=repo)
    text = block_text(session_id="s-20260101-0002")
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\x02" * 16, 5, COMMENT_ADDED, [text])])
    out, imports = _imports(repo, "sessions", "list", "--json")  # a new head: not current
    assert "brat_sessions.cli.root" in imports  # the full path answered
    assert [s["session_id"] for s in json.loads(out)["data"]["sessions"]] == ["s-20260101-0002"]


def test_the_hot_path_fails_like_the_full_command(repo, task):
    """A warning printed once when the full command takes over; a failed write is the JSON
    error, never a traceback."""
    from brat_sessions.storage.events import COMMENT_ADDED, make_event

    from .helpers import append_raw, brat

    Tracker(repo).start(task.task_id)
    wal = git(repo, "rev-parse", "refs/grite/wal")
    lone = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=repo, input="x", capture_output=True, text=True
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "mktree"], cwd=repo, input=f"100644 blob {lone}\tx\n", capture_output=True, text=True
    ).stdout.strip()
    bad = git(repo, "commit-tree", tree, "-p", wal, "-m", "x")
    git(repo, "update-ref", "refs/grite/wal", bad, wal)  # no meta.json: a corrupt commit
    append_raw(repo, [make_event(bytes.fromhex(task.issue_id), b"\x03" * 16, 5, COMMENT_ADDED, ["hi"])])
    brat("sessions", "list", "--json", cwd=repo)  # the index is current
    (repo / ".brat").mkdir()
    (repo / ".brat" / "sessions.yaml").write_text("clock_skew: nope\n")
    out = brat("sessions", "list", "--json", cwd=repo)
    assert out.returncode == 2 and out.stderr.count(bad) == 1, out.stderr
    (repo / ".brat" / "sessions.yaml").unlink()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "brat_sessions.cli", "sessions", "list", "--json"],
            cwd=repo,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **WORKTREE_ENV},
        )
    assert done.returncode == 5 and "Traceback" not in done.stderr  # (what the system refuses)
    assert json.loads(done.stderr.splitlines()[-1])["error"]["code"] == "environment", done.stderr


def test_a_closed_pipe_and_a_missing_folder_end_the_same_on_both_paths(repo, task, tmp_path):
    Tracker(repo).start(task.task_id)
    brat_json("sessions", "list", cwd=repo)  # the index is current
    hot = [sys.executable, "-m", "brat_sessions.cli"]
    full = [sys.executable, "-c", "import sys; from brat_sessions.cli.root import main; main(sys.argv[1:])"]
    env = {**os.environ, **WORKTREE_ENV}
    for args in (["sessions", "list", "--json"], ["sessions", "list", "--all", "--json"]):
        codes = []
        for cmd in (hot, full):
            read, write = os.pipe()
            os.close(read)  # nobody reads: the first write fails with EPIPE
            done = subprocess.run([*cmd, *args], cwd=repo, stdout=write, stderr=subprocess.PIPE, env=env)
            os.close(write)
            codes.append(done.returncode)
            assert b"Traceback" not in done.stderr
        assert codes == [1, 1], args
    for cmd in (hot, full):
        done = subprocess.run(
            [*cmd, "-C", str(tmp_path / "typo"), "sessions", "list", "--json"],
            cwd=repo,
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 5 and "no such directory" in done.stderr, done.stderr


def _python(code: str, cwd=None, *args: str) -> str:
    """What `python -c code args...` prints (in `cwd`), which must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_module_put_off_by_the_hot_path_loads_on_first_use():
    code = """
import sys
from brat_sessions.cli.fast import _load_lazily
assert [m.__name__ for m in _load_lazily("colorsys", "sys")] == ["colorsys"]
assert sys.modules["sys"] is sys
import colorsys
stand_in = colorsys
assert "rgb_to_hsv" not in vars(stand_in)  # not loaded by the import statement
assert not hasattr(stand_in, "rgb_to_yiq_")  # (this loads it)
assert type(sys.modules["colorsys"]).__name__ == "module"
from colorsys import hls_to_rgb
assert stand_in.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0) and hls_to_rgb(0, 0, 0) == (0, 0, 0)
print("ok")
"""
    assert _python(code) == "ok\n"


def test_a_fallback_leaves_real_modules_and_an_in_process_caller_carries_on(repo, task):
    # no index: the hot path gives up, and the full command line finds sys.modules as usual
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (repo / ".git" / "brat_sessions" / name).unlink(missing_ok=True)
    code = """
import importlib.util, sys
from brat_sessions.cli import fast
assert not fast.answered(["sessions", "list", "--json"])
assert not [n for n, m in list(sys.modules.items()) if type(m).__name__ == "_OnFirstUse"]
assert importlib.util.find_spec("ipaddress") is not None
from brat_sessions.cli import main
try:
    main(["sessions", "list", "--json"])  # the full command line (it builds the index)
except SystemExit as exc:
    assert not exc.code, exc.code
sys.argv = ["brat", "sessions", "list", "--json"]
assert main() is None  # answered by the hot path now; an in-process caller is not ended
print("after")
"""
    out = _python(code, cwd=repo)
    assert out.endswith("after\n") and out.count('"ok": true') == 2, out
    assert not (repo / ".git" / "brat_sessions" / "index.sqlite-wal").exists()  # the index was closed


def test_refs_under_reads_loose_nested_and_packed_refs_as_git_lists_them(tmp_path):
    repo = make_repo(tmp_path / "r")
    blob = git_blob(repo, b"x")
    for name in ("refs/brat/t/a", "refs/brat/t/deep/b", "refs/brat/t/packed", "refs/brat/other"):
        git(repo, "update-ref", name, blob)
    git(repo, "pack-refs", "--all")  # every ref above packed; two of them loose again below
    for name in ("refs/brat/t/a", "refs/brat/t/deep/c"):
        git(repo, "update-ref", name, blob)
    (repo / ".git" / "refs" / "brat" / "t" / "deep" / "d.lock").write_text(blob + "\n")
    listed = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/brat/t/")
    expected = dict(line.split(" ") for line in listed.splitlines())
    assert refs_under(find(repo).common_dir, "refs/brat/t/") == expected
    assert sorted(expected) == [
        "refs/brat/t/a",
        "refs/brat/t/deep/b",
        "refs/brat/t/deep/c",
        "refs/brat/t/packed",
    ]
    git(repo, "symbolic-ref", "refs/brat/t/sym", "refs/brat/t/a")
    with pytest.raises(Unsupported):  # a symbolic ref: the command goes to pygit2
        refs_under(find(repo).common_dir, "refs/brat/t/")


def test_a_ref_that_git_pack_refs_moves_while_refs_are_listed_is_still_listed(tmp_path, monkeypatch):
    from brat_sessions.storage import plain_git

    repo = make_repo(tmp_path / "r")
    blob = git_blob(repo, b"x")
    git(repo, "update-ref", "refs/brat/t/live", blob)
    read_packed = plain_git._packed

    def packed_then_pack_refs(common_dir):  # git pack-refs runs just after packed-refs is read
        refs = read_packed(common_dir)
        git(repo, "pack-refs", "--all")  # writes packed-refs, then deletes the loose file
        return refs

    monkeypatch.setattr(plain_git, "_packed", packed_then_pack_refs)
    assert refs_under(find(repo).common_dir, "refs/brat/t/") == {"refs/brat/t/live": blob}
    assert not (repo / ".git" / "refs" / "brat" / "t" / "live").exists()  # it did move


def test_a_fifo_or_a_big_file_among_the_leases_sends_the_list_to_the_full_command(repo, task):
    t = Tracker(repo)
    s = t.start(task.task_id, state="running")
    t.heartbeat(s.session_id)
    brat_json("sessions", "list", cwd=repo)  # the index is current from here on
    leases = repo / ".git" / "refs" / "brat" / "sessions" / "leases"
    os.mkfifo(leases / "s-20260101-f1f0")  # read as it is, it would block the hot path
    done = subprocess.run(
        [sys.executable, "-m", "brat_sessions.cli", "sessions", "list", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **WORKTREE_ENV},
    )
    assert done.returncode == 0 and json.loads(done.stdout)["data"]["total"] == 1, done.stderr
    with pytest.raises(Unsupported):
        LightWorkspace(repo, report=False)
    (leases / "s-20260101-f1f0").unlink()
    oid = refs_under(find(repo).common_dir, "refs/brat/sessions/leases/")[
        f"refs/brat/sessions/leases/{s.session_id}"
    ]
    blob = repo / ".git" / "objects" / oid[:2] / oid[2:]
    blob.chmod(0o644)
    blob.write_bytes(os.urandom(200_000))  # never read whole into memory by the hot path
    with pytest.raises(Unsupported):
        LightWorkspace(repo, report=False)
