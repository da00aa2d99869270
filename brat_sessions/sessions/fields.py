"""brat's fields of a `[session]` block, in brat's order (docs/format.md).

Kept out of kinds.py, which imports typing: the warm path needs these names without it.
"""

BRAT_FIELDS = (
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
)
