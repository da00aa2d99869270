"""`brat snapshot ...`: grite snapshots of the log (a shortcut for cold index builds)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..errors import BadInput, EnvironmentProblem, NotFound
from .output import common, emit, examples, terminal_options, width, workspace

if TYPE_CHECKING:
    from ..storage.snapshot import Snapshot


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples("brat snapshot create", "brat snapshot list --json", "brat snapshot gc --keep 3"),
)
@common
def snapshot() -> None:
    """grite snapshots: every event of the log up to a commit, in a few large chunks."""


@snapshot.command("create", epilog=examples("brat snapshot create", "brat snapshot create --json"))
@common
@click.option("--force", is_flag=True, help="Write one even if this clone made one at the same head.")
def snapshot_create(force: bool) -> None:
    """Snapshot the whole log at its head (refs/grite/snapshots/<unix ms>)."""
    from ..render import counted
    from ..storage.snapshot import create_snapshot, made_here_at_head

    ws = workspace()
    same = None if force else made_here_at_head(ws.wal)
    if same is not None:  # another would be the same
        emit(
            {"snapshot": _json(same), "created": False},
            f"{same.ref} already holds the log at its head ({counted(same.event_count or 0, 'event')})",
        )
        return
    made = create_snapshot(ws.wal)
    if made is None:
        raise NotFound("the log is empty: nothing to snapshot")
    emit(
        {"snapshot": _json(made), "created": True},
        f"{made.ref} {counted(made.event_count or 0, 'event')} at {made.wal_head}",
    )


@snapshot.command("list", epilog=examples("brat snapshot list", "brat snapshot list --json"))
@common
@terminal_options
def snapshot_list() -> None:
    """List the snapshots, newest first (the one a cold build would try first on top)."""
    from ..render import table, when
    from ..storage.snapshot import checked_list

    found = checked_list(workspace().wal)
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
    """Delete all but the N newest snapshot refs that a cold build here could use (each is
    read and checked in full, newest first), and any named after a future time (here; a
    sync does not delete remote ones, nor fetch back older ones than those kept)."""
    from ..storage.snapshot import gc_snapshots, list_snapshots

    ws = workspace()
    deleted = gc_snapshots(ws.wal, keep)
    kept = len(list_snapshots(ws.repo, keep))  # (at most `keep` are left)
    emit({"deleted": deleted, "kept": kept}, f"deleted {len(deleted)} snapshot(s), kept {kept}")


@snapshot.command(
    "verify",
    epilog=examples("brat snapshot verify", "brat snapshot verify 1795629060398 --json"),
)
@common
@click.argument("ref", required=False)
def snapshot_verify(ref: str | None) -> None:
    """Check a snapshot against the log it names, event by event (reads the whole log);
    exit 1 when it holds events no commit holds or lacks comments or issues. REF: its
    number or ref (default: the newest on this log's chain, the one a cold build tries)."""
    import sys
    from dataclasses import asdict

    from ..render import safe
    from ..storage.snapshot import (
        SNAPSHOT_PREFIX,
        find_snapshot,
        is_snapshot_name,
        list_snapshots,
        log_gap,
        snapshot_candidates,
        verify_snapshot,
    )

    wal = workspace().wal
    if ref is None:
        chosen = next((c for c in snapshot_candidates(wal) if not isinstance(c, tuple)), None)
        if chosen is None:
            unread = next((s for s in list_snapshots(wal.repo, 32) if s.unreadable_here), None)
            if unread is not None:  # (a partial clone, a damaged object)
                raise EnvironmentProblem(f"snapshot {unread.ref}: {unread.problem}: verify in a whole clone")
            gap = log_gap(wal, wal.head())
            if gap is not None and list_snapshots(wal.repo, 1):  # (a shallow clone: none is on its chain)
                raise EnvironmentProblem(f"{gap}: snapshots cannot be judged here")
            raise NotFound("no snapshot on this log's chain (`brat snapshot list` shows them all)")
    else:
        if not is_snapshot_name(ref.removeprefix(SNAPSHOT_PREFIX)):
            raise BadInput(f"not a snapshot: {ref[:80]!r} (its number, or refs/grite/snapshots/<number>)")
        chosen = find_snapshot(wal.repo, ref)
        if chosen is None:
            raise NotFound(f"no snapshot {SNAPSHOT_PREFIX}{ref.removeprefix(SNAPSHOT_PREFIX)}")
    from ..issues.projection import IssueView

    verdict = verify_snapshot(wal, chosen, view=IssueView)
    if verdict.problem is not None:
        text = f"{verdict.ref}: unusable: {verdict.problem}"
    elif verdict.ok:
        text = (
            f"{verdict.ref}: holds the log: {verdict.snapshot_events:,} events, all in the log up to "
            f"{chosen.wal_head}, and the same issues; {verdict.compacted:,} superseded updates left out"
        )
    else:
        examples_of = verdict.examples or {}
        text = (
            f"{verdict.ref}: does NOT hold the log: {verdict.added:,} event(s) no log commit holds "
            f"{examples_of.get('added', [])[:3]}, {verdict.dropped:,} comment(s), issue(s), link(s) or "
            f"attachment(s) missing {examples_of.get('dropped', [])[:3]}, {verdict.diverging:,} issue(s) "
            f"shown otherwise {examples_of.get('diverging', [])[:3]}"
        )
    emit({"verdict": {**asdict(verdict), "ok": verdict.ok}}, safe(text))  # (a pushed tree names the files)
    if not verdict.ok:
        sys.exit(1)


def _json(s: Snapshot) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(s)
