"""The events that record one new block on a task issue, with brat's session labels."""

from __future__ import annotations

from typing import Any

from ..errors import UnwritableBlock
from ..index import Index
from ..issues.labels import session_label_changes
from ..storage.events import COMMENT_ADDED, LABEL_ADDED, LABEL_REMOVED, Event, make_event
from .block import BlockError, format_block
from .model import Session


def block_events(index: Index, actor: str, session: Session, fields: dict[str, Any], ts: int) -> list[Event]:
    """A CommentAdded carrying the block, and label changes if it is the issue's newest session.

    brat's `session:*` and `engine:*` labels describe the most recent session of the
    task, so an older session's block leaves them alone.
    """
    iid = bytes.fromhex(session.grite_issue_id)
    actor_b = bytes.fromhex(actor)
    try:
        text = format_block(fields)
    except BlockError as exc:
        raise UnwritableBlock(f"cannot write the [session] block of {session.session_id}: {exc}") from None
    events = [make_event(iid, actor_b, ts, COMMENT_ADDED, [text])]
    newest = index.newest_session_start(session.grite_issue_id, exclude=session.session_id)
    if newest is not None and newest > session.started_ts:
        return events
    issue = index.issue(session.grite_issue_id)
    remove, add = session_label_changes(
        issue.labels if issue else [], fields["state"], fields["session_type"], fields["engine"]
    )
    events += [make_event(iid, actor_b, ts, LABEL_REMOVED, [lb]) for lb in remove]
    events += [make_event(iid, actor_b, ts, LABEL_ADDED, [lb]) for lb in add]
    return events
