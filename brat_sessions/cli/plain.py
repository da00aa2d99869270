"""What the command line shares without click: the JSON envelope and the session listing.

Kept free of click so that the hot path (cli/fast.py) can print exactly what the full
command prints without loading the command tree.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from operator import itemgetter

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

    from ..workspace import Workspace

SCHEMA_VERSION = 1


def envelope(data: Any) -> str:
    """The JSON envelope grite and brat print: `{"schema_version": 1, "ok": true, "data": ...}`."""
    return json.dumps({"schema_version": SCHEMA_VERSION, "ok": True, "data": data})


def live_list_json(ws: Workspace) -> str:
    """`brat sessions list --json`: the live sessions, oldest start first."""
    from ..clock import now_ms

    found = ws.sessions(False)  # (the index gives them by start, then id)
    at = now_ms()
    return envelope({"sessions": [s.to_json(at) for s in found], "total": len(found)})


def all_list_json(ws: Workspace, issue_id: str | None = None, limit: int | None = None) -> Iterator[str]:
    """`brat sessions list --all --json` as pieces of text to write one after the other
    (`write_pieces`): at 50,000 sessions, each exited session's text is made from what the
    index stores as it is written, never all of it at once (nor joined: 40 MB copied twice).
    Live sessions (with their leases) go through Python."""
    from ..clock import now_ms
    from ..sessions.rows import exited_texts

    at = now_ms()
    index = ws.fresh_index()
    with index.reading():  # a session exiting meanwhile is listed once, live or exited
        bare = index.unreadable(issue_id)  # sessions whose blocks cannot be read: bare rows
        rows, tasks = index.exited_rows(at, int(ws.config.clock_skew * 1000), issue_id)
        live = index.sessions(False, issue_id)
    live = [ws.with_lease(s, at) for s in live]
    rows += [(s.started_ts, s.session_id, json.dumps(s.to_json(at))) for s in live]
    rows.sort(key=itemgetter(0, 1))  # by start, then session id (never past them: a hand-edited
    # index can make two rows equal there, and their next items None and a number)
    if limit:
        rows = rows[-limit:]
    tail = f', "unreadable": {json.dumps(bare)}'
    return _enveloped(exited_texts(rows, tasks, at), len(rows), tail)


def _enveloped(texts: Iterator[str], total: int, tail: str) -> Iterator[str]:
    yield f'{{"schema_version": {SCHEMA_VERSION}, "ok": true, "data": {{"sessions": ['
    for n, text in enumerate(texts):
        if n:
            yield ", "
        yield text
    yield f'], "total": {total}{tail}}}}}'


WRITE_CHARS = 1 << 16  # pieces are joined into writes of about this many characters


def write_pieces(pieces: Iterable[str]) -> None:
    """Print text made of pieces, then a newline: joined a few hundred KB at a time, so
    that 100,000 pieces are a few hundred writes (each one a system call when stdout is
    unbuffered, as with PYTHONUNBUFFERED), never one copy of the whole text."""
    batch: list[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= WRITE_CHARS:
            sys.stdout.write("".join(batch))
            batch.clear()
            size = 0
    batch.append("\n")
    sys.stdout.write("".join(batch))
    sys.stdout.flush()
