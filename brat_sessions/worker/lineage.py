"""Lineage (who spawned whom), resuming, and usage roll-ups over sessions."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pygit2

from ..sessions.model import Session
from ..sessions.outputs import store_output
from ..storage.context import RepoContext

MAX_DEPTH = 1000


def child_fields(parent: Session) -> dict[str, object]:
    """The lineage a child of `parent` records: its parent, root and depth."""
    return {
        "parent_session_id": parent.session_id,
        "root_session_id": parent.root_session_id or parent.session_id,
        "spawn_depth": min(MAX_DEPTH, parent.spawn_depth + 1),
    }


def children_of(sessions: Iterable[Session]) -> dict[str, list[Session]]:
    kids: dict[str, list[Session]] = {}
    for s in sessions:
        if s.parent_session_id and s.parent_session_id != s.session_id:
            kids.setdefault(s.parent_session_id, []).append(s)
    return kids


def descendants(session_id: str, sessions: Iterable[Session]) -> list[Session]:
    """Every session below `session_id`, parents before children (cycles in hostile data
    are cut: each session is visited once)."""
    kids = children_of(sessions)
    found: list[Session] = []
    seen = {session_id}
    stack = list(reversed(kids.get(session_id, [])))
    while stack:
        s = stack.pop()
        if s.session_id in seen:
            continue
        seen.add(s.session_id)
        found.append(s)
        stack.extend(reversed(kids.get(s.session_id, [])))
    return found


def tokens(s: Session) -> int:
    """Input and output tokens the session recorded (cache reads are not counted)."""
    usage = s.usage or {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


def worktree_head(ctx: RepoContext) -> str | None:
    """The HEAD commit of the worktree a command runs in (None when unborn or unknown)."""
    if ctx.worktree is None:
        return None
    try:
        repo = pygit2.Repository(str(ctx.worktree))
        return None if repo.head_is_unborn else str(repo.head.target)
    except (pygit2.GitError, KeyError, ValueError):
        return None


def head_moved_away(ctx: RepoContext, recorded: str | None) -> str | None:
    """Why the worktree's HEAD is no longer `recorded` or a descendant of it (None if it is)."""
    head = worktree_head(ctx)
    if recorded is None or head is None or head == recorded:
        return None
    try:
        if ctx.repo.descendant_of(head, recorded):
            return None
    except (pygit2.GitError, KeyError, ValueError):
        return f"the recorded HEAD {recorded[:12]} is not in this repository"
    return f"the worktree's HEAD {head[:12]} is not the recorded {recorded[:12]} or a descendant of it"


def store_ledger(repo: pygit2.Repository, session: Session) -> str | None:
    """Keep the session's usage ledger in git (as a stored output); its `sha256:` ref."""
    if not session.ledger:
        return None
    data = json.dumps({"session_id": session.session_id, "ledger": session.ledger}, sort_keys=True).encode()
    return store_output(repo, data)
