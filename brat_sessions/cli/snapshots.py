"""`brat snapshot ...`: grite snapshots of the log (a shortcut for cold index builds)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..errors import NotFound
from .output import common, emit, examples, terminal_options, width, workspace

if TYPE_CHECKING:
    from ..storage.snapshot import Snapshot


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def snapshot() -> None:
    """grite snapshots: every event of the log up to a commit, in a few large chunks."""


@snapshot.command("create", epilog=examples("brat snapshot create", "brat snapshot create --json"))
@common
def snapshot_create() -> None:
    """Snapshot the whole log at its head (refs/grite/snapshots/<unix ms>)."""
    from ..storage.snapshot import create_snapshot

    made = create_snapshot(workspace().wal)
    if made is None:
        raise NotFound("the log is empty: nothing to snapshot")
    emit({"snapshot": _json(made)}, f"{made.ref} {made.event_count} events at {made.wal_head}")


@snapshot.command("list", epilog=examples("brat snapshot list", "brat snapshot list --json"))
@common
@terminal_options
def snapshot_list() -> None:
    """List the snapshots, newest first (the one a cold build would try first on top)."""
    from ..render import table, when
    from ..storage.snapshot import list_snapshots

    found = list_snapshots(workspace().repo)
    rows = [
        [s.ref.rsplit("/", 1)[1], when(s.created_ts), s.event_count, (s.wal_head or "")[:12], s.problem or ""]
        for s in found
    ]
    emit(
        {"snapshots": [_json(s) for s in found], "total": len(found)},
        lambda: (
            "no snapshots"
            if not found
            else table(
                ["SNAPSHOT", "CREATED", "EVENTS", "WAL HEAD", "PROBLEM"], rows, width=width(), flex=(4,)
            )
        ),
    )


@snapshot.command("gc", epilog=examples("brat snapshot gc --keep 3"))
@common
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="How many of the newest snapshots to keep.",
)
def snapshot_gc(keep: int) -> None:
    """Delete all but the N newest snapshot refs, and any named after a future time (here;
    a sync does not delete remote ones, nor fetch back older ones than those kept)."""
    from ..storage.snapshot import gc_snapshots, list_snapshots

    repo = workspace().repo
    deleted = gc_snapshots(repo, keep)
    kept = len(list_snapshots(repo, keep))  # (at most `keep` are left)
    emit({"deleted": deleted, "kept": kept}, f"deleted {len(deleted)} snapshot(s), kept {kept}")


def _json(s: Snapshot) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(s)
