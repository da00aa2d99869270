"""Read a long stretch of the log in worker processes (used to build a cold index).

Each worker is a plain `python -m brat_sessions.storage.readers` process: it gets
the git dir, its share of commit ids and the name of a `prepare` function on
stdin, and streams back length-prefixed pickled batches of
`(WalCommit or CorruptCommit, prepare(commit))`. Explicit processes, rather than
multiprocessing, so that a library user's main module is never re-imported and
no thread state is forked. The pairs come back in no particular order.
"""

from __future__ import annotations

import importlib
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

BATCH = 500
_HEADER = struct.Struct("<Q")


def _load(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def _read_exact(stream: Any, size: int) -> bytes:
    """Exactly `size` bytes from a pipe, however the reads are split (a paused or slow
    writer gives short reads); RuntimeError if the writer ends first."""
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            raise RuntimeError("reader process ended early")
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def _pump(proc: subprocess.Popen[bytes], out: queue.Queue[Any]) -> None:
    """Thread: turn one worker's frames into queue items; None at its end."""
    stream = proc.stdout
    try:
        while True:
            (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
            if size == 0:
                break
            out.put(_read_exact(stream, size))
    except BaseException as exc:  # noqa: BLE001 (reported to the reading thread)
        out.put(exc)
    out.put(None)


def parallel_read(
    common_dir: str, oids: list[str], prepare_ref: str, workers: int
) -> Iterator[tuple[Any, Any]]:
    """Pairs for every commit in `oids`, read by `workers` processes."""
    results: queue.Queue[Any] = queue.Queue(maxsize=16)
    procs = []
    for n in range(workers):
        proc = subprocess.Popen(
            [sys.executable, "-m", "brat_sessions.storage.readers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps((common_dir, oids[n::workers], prepare_ref)))
        proc.stdin.close()
        threading.Thread(target=_pump, args=(proc, results), daemon=True).start()
        procs.append(proc)
    finished = 0
    try:
        while finished < workers:
            item = results.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield from pickle.loads(item)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _serve() -> None:
    """Worker side: read, prepare and stream back the commits we were given."""
    import pygit2

    from .repo import open_repo
    from .wal import Wal, WalCommit, read_prepared

    settings = pygit2.settings
    settings.enable_caching(False)  # every object is read once
    settings.mwindow_size = 32 * 1024 * 1024
    settings.mwindow_mapped_limit = 96 * 1024 * 1024
    common_dir, oids, prepare_ref = pickle.loads(sys.stdin.buffer.read())
    prepare = _load(prepare_ref)
    wal = Wal(open_repo(common_dir))
    out = sys.stdout.buffer
    batch = []

    def send(data: bytes) -> None:
        out.write(_HEADER.pack(len(data)) + data)

    for oid in oids:
        item, prepared = read_prepared(wal, oid, prepare)
        if isinstance(item, WalCommit):
            item = item._replace(chunk=b"")  # a fold does not need the raw chunk
        batch.append((item, prepared))
        if len(batch) >= BATCH:
            send(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            batch = []
    if batch:
        send(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    out.write(_HEADER.pack(0))
    out.flush()


if __name__ == "__main__":
    _serve()
