"""A real process that appends COUNT comment events to the log (used by the race test)."""

import sys

from brat_sessions.storage.events import COMMENT_ADDED, make_event
from brat_sessions.storage.repo import open_repo
from brat_sessions.storage.wal import Wal

repo_path, count, tag, issue_hex, actor = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
wal = Wal(open_repo(repo_path))
for i in range(count):
    event = make_event(
        bytes.fromhex(issue_hex), bytes.fromhex(actor), 1700000000000 + i, COMMENT_ADDED, [f"{tag}-{i}"]
    )
    wal.append(actor, lambda head, e=event: [e])
