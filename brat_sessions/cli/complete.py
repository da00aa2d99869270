"""Shell completion of session and task ids (quiet: a failure completes nothing)."""

from __future__ import annotations

from click import Context, Parameter
from click.shell_completion import CompletionItem


def _index(ctx: Context):  # type: ignore[no-untyped-def]
    from ..workspace import Workspace

    return Workspace(ctx.find_root().meta.get("dir")).fresh_index()


def complete_sessions(ctx: Context, _param: Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        ids = [s.session_id for s in _index(ctx).sessions(include_exited=True)]
    except Exception:  # noqa: BLE001 (completion must never print an error into the shell)
        return []
    return [
        CompletionItem(i)
        for i in ids
        if i.startswith(incomplete) or i.rsplit("-", 1)[-1].startswith(incomplete)
    ]


def complete_tasks(ctx: Context, _param: Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        ids = [t.task_id for t in _index(ctx).task_issues() if t.task_id]
    except Exception:  # noqa: BLE001 (completion must never print an error into the shell)
        return []
    return [CompletionItem(i) for i in ids if i.startswith(incomplete)]
