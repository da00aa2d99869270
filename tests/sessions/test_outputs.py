"""Outputs taken from other clones: verified against their name, their size read first."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from brat_sessions.sessions import outputs
from brat_sessions.sessions.outputs import verified_output
from brat_sessions.storage.repo import open_repo

from ..helpers import git_blob, make_repo


def test_an_output_is_taken_only_when_small_enough_and_named_by_its_sha256(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r")
    data = b"x" * 2048
    oid = git_blob(repo, data)
    name = hashlib.sha256(data).hexdigest()
    pygit_repo = open_repo(repo).repo
    assert verified_output(pygit_repo, name, oid)
    assert verified_output(pygit_repo, "0" * 64, oid) is False  # not its name
    assert verified_output(pygit_repo, name.upper(), oid) is False
    assert verified_output(pygit_repo, name, "1" * 40) is None  # not here: no verdict
    empty = git_blob(repo, b"")  # the wrong bytes
    assert verified_output(pygit_repo, name, empty) is False
    monkeypatch.setattr(outputs, "MAX_FETCHED_OUTPUT", 1024)
    assert verified_output(pygit_repo, name, oid) is False  # too large: refused by its header


def test_a_log_is_stored_as_a_stream_and_named_by_exactly_the_bytes_stored(tmp_path):
    from brat_sessions.sessions.outputs import _Hashing, read_output, store_stream

    repo = open_repo(make_repo(tmp_path / "r")).repo
    log = tmp_path / "big.log"
    log.write_bytes(b"line\n" * 300_000)
    with log.open("rb") as fh:
        ref = store_stream(repo, fh)
    assert ref == "sha256:" + hashlib.sha256(log.read_bytes()).hexdigest()
    assert read_output(repo, ref) == log.read_bytes()
    with log.open("rb") as fh:  # a file that grows while it is read: only the first bytes
        reader = _Hashing(fh, 10)
        with log.open("ab") as writer:
            writer.write(b"later\n")
        assert (
            reader.read() == b"line\n" * 2
            and reader.sha.hexdigest() == hashlib.sha256(b"line\n" * 2).hexdigest()
        )


def test_processes_storing_the_same_output_at_once_all_succeed(tmp_path):
    # (each holds the ref's lock for a moment: libgit2 raised OSError to the others)
    repo = make_repo(tmp_path / "r")
    code = (
        "import sys, pygit2\n"
        "from brat_sessions.sessions.outputs import store_output\n"
        "r = pygit2.Repository(sys.argv[1])\n"
        "for n in range(150):\n"
        "    store_output(r, b'the same bytes %d\\n' % (n % 3))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(outputs.__file__).parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(repo)], stderr=subprocess.PIPE, env=env)
        for _ in range(4)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
