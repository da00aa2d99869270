"""What the command line shares without click: the JSON envelope and the session listing.

Kept free of click so that the hot path (cli/fast.py) can print exactly what the full
command prints without loading the command tree.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..workspace import Workspace

SCHEMA_VERSION = 1


def envelope(data: Any) -> str:
    """The JSON envelope grite and brat print: `{"schema_version": 1, "ok": true, "data": ...}`."""
    return json.dumps({"schema_version": SCHEMA_VERSION, "ok": True, "data": data})


def live_list_json(ws: Workspace) -> str:
    """`brat sessions list --json`: the live sessions, oldest start first."""
    from ..clock import now_ms

    found = sorted(ws.sessions(False), key=lambda s: (s.started_ts, s.session_id))
    at = now_ms()
    return envelope({"sessions": [s.to_json(at) for s in found], "total": len(found)})


def all_list_json(ws: Workspace, issue_id: str | None = None, limit: int | None = None) -> str:
    """`brat sessions list --all --json`: exited sessions as JSON text spliced from what the
    index stores, live ones (with their leases) through Python; far less work at 50,000
    sessions."""
    from ..clock import now_ms

    at = now_ms()
    index = ws.fresh_index()
    bare = index.unreadable(issue_id)  # sessions whose blocks cannot be read: bare rows
    rows = index.exited_json(at, int(ws.config.clock_skew * 1000), issue_id)
    live = [ws.with_lease(s, at) for s in index.sessions(False, issue_id)]
    rows += [(s.started_ts, s.session_id, json.dumps(s.to_json(at))) for s in live]
    rows.sort()  # by start, then session id (unique)
    if limit:
        rows = rows[-limit:]
    tail = f', "unreadable": {json.dumps(bare)}' if bare else ""
    texts = [r[2] for r in rows]
    # the envelope around the sessions without copying 40 MB of text once more
    head = f'{{"schema_version": {SCHEMA_VERSION}, "ok": true, "data": {{"sessions": ['
    end = f'], "total": {len(rows)}{tail}}}}}'
    if not texts:
        return head + end
    texts[0] = head + texts[0]
    texts[-1] += end  # (the same text when there is one session)
    return ", ".join(texts)
