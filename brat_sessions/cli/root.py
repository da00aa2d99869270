"""The root of the command tree: `brat`, `help`, `init`, `demo`, `sync`, `config`, `completion`."""

from __future__ import annotations

import os
import re
import sys
from typing import Any, ClassVar, NoReturn

import click

from ..errors import (
    EXIT_BAD_ARGS,
    EXIT_CONFLICT,
    EXIT_ENVIRONMENT,
    EXIT_FAILURE,
    BadInput,
    BratError,
    system_refusal,
)
from .output import NON_EMPTY, common, emit, examples, fail, json_wanted, warn, workspace

CONTEXT = {"help_option_names": ["-h", "--help"]}


class BratGroup(click.Group):
    """The root group: `brat session ...` is accepted for `brat sessions ...`."""

    aliases: ClassVar[dict[str, str]] = {"session": "sessions"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


@click.group(
    cls=BratGroup,
    invoke_without_command=True,
    context_settings=CONTEXT,
    epilog=examples(
        "brat sessions list            # who is working on what",
        "brat sessions run --task t-20250114-3a2c -- codex exec 'fix it'",
        "brat help sessions run        # help on one command",
        "brat -C ../repo --json task list",
    ),
)
@common
@click.version_option(None, "-V", "--version", package_name="brat_sessions", prog_name="brat")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """brat: work sessions of coding agents and people, tracked in git (grite's refs/grite/wal)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("help", epilog=examples("brat help", "brat help sessions list"))
@click.argument("command", nargs=-1)
@click.pass_context
def help_cmd(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Show help for brat or for one COMMAND (`brat help sessions run`)."""
    current: click.Command = cli
    info = ctx.find_root()
    for name in command:
        sub = current.get_command(info, name) if isinstance(current, click.Group) else None
        if sub is None:
            raise BadInput(f"no command {' '.join(command)!r}; see `brat help`")
        info = click.Context(sub, info_name=name, parent=info)
        current = sub
    click.echo(current.get_help(info))


@cli.command(epilog=examples("brat init", "BRAT_ACTOR=00112233445566778899aabbccddeeff brat init"))
@common
def init() -> None:
    """Make sure the repository has a grite actor (BRAT_ACTOR overrides)."""
    ws = workspace()
    actor = ws.actor
    emit({"actor_id": actor, "repo": str(ws.ctx.common_dir)}, f"actor {actor} in {ws.ctx.common_dir}")


@cli.command(epilog=examples("brat demo", "brat demo --dir /tmp/brat-demo"))
@common
@click.option(
    "--dir",
    "target",
    type=click.Path(file_okay=False),
    help="Where to make the demo repository (a new or empty directory).",
    **NON_EMPTY,
)
def demo(target: str | None) -> None:
    """Make a throwaway repository with tasks and sessions, reap it, and list it."""
    from ..demo import run_demo

    result = run_demo(target)
    emit(result["data"], result["text"])


@cli.command("sync", epilog=examples("brat sync", "brat sync --remote upstream"))
@common
@click.option("--remote", help="Remote name or URL (default: origin, or the only remote).", **NON_EMPTY)
def sync_cmd(remote: str | None) -> None:
    """Fetch, merge and push the log, heartbeat leases and stored outputs."""
    from ..render import counted
    from ..sync import sync

    report = sync(workspace(), remote)
    for warning in report.warnings:
        warn(f"warning: {warning}")
    r = report
    emit(
        report.to_json(),
        f"synced with {r.remote}: {counted(r.fetched_commits, 'commit')} in, "
        f"{r.reappended_commits} re-appended, {r.pushed_commits} pushed; leases "
        f"{r.leases_fetched} in / {r.leases_pushed} out; outputs "
        f"{r.outputs_fetched} in / {r.outputs_pushed} out; snapshots "
        f"{r.snapshots_fetched} in / {r.snapshots_pushed} out"
        + (f", {r.snapshots_pruned} deleted as on the remote" if r.snapshots_pruned else "")
        + (f", made {r.snapshot_created}" if r.snapshot_created else "")
        + (
            f"\n{counted(len(r.exits_dropped), 'exit')} of this clone's reaper dropped: the remote "
            f"already held those sessions' exits ({', '.join(r.exits_dropped)})"
            if r.exits_dropped
            else ""
        ),
    )


@cli.command("config", epilog=examples("brat config", "brat config --json"))
@common
def config_cmd() -> None:
    """Show the settings in effect and where each comes from (default, file, environment)."""
    from ..config import describe
    from ..render import table

    ws = workspace()
    rows = describe(ws)
    emit(
        {"settings": rows},
        lambda: table(
            ["SETTING", "VALUE", "FROM"], [[r["name"], _shown(r["value"]), r["source"]] for r in rows]
        ),
    )


def _shown(value: object) -> object:
    """A setting as YAML and JSON write it: true, false, null (not Python's True, None)."""
    import json

    return json.dumps(value) if value is None or isinstance(value, bool) else value


@cli.command(
    "completion",
    epilog=examples(
        'eval "$(brat completion bash)"   # in ~/.bashrc',
        "brat completion fish > ~/.config/fish/completions/brat.fish",
    ),
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (commands, options, session and task ids)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "brat", "_BRAT_COMPLETE").source())


def _register() -> None:
    from . import worker  # noqa: F401  (adds the worker commands to `sessions`)
    from .sessions import sessions
    from .snapshots import snapshot
    from .tasks import task

    cli.add_command(task, "task")
    cli.add_command(sessions, "sessions")
    cli.add_command(snapshot, "snapshot")


_register()


def main(argv: list[str] | None = None) -> Any:
    """Entry point: every failure becomes one line on stderr and a documented exit code."""
    try:
        cli.main(args=argv, prog_name="brat", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 (each kind is answered in report_failure)
        report_failure(exc)
    except KeyboardInterrupt as exc:
        report_failure(exc)


def _system_problem(exc: OSError) -> tuple[str, str, int]:
    """(code, message, exit code) for an error the system gave that no check foresaw: a
    full disk, a read-only file system, a working directory deleted under the command; a
    lock another git process held (libgit2 names the lock file) is a conflict."""
    text = str(exc)
    held = ".lock" in text and ("file exists" in text.lower() or text.rstrip().endswith("for writing:"))
    if exc.errno is None and system_refusal(exc) is None and held:
        return "conflict", f"another process held a lock: {text}; try again", EXIT_CONFLICT
    try:
        os.getcwd()
    except OSError:
        return "environment", "the current directory no longer exists", EXIT_ENVIRONMENT
    if exc.strerror and isinstance(exc.filename, str | bytes):
        text = f"{exc.strerror}: {os.fsdecode(exc.filename)!r}"
    elif exc.strerror:
        text = exc.strerror
    return "environment", f"the system refused: {text}", EXIT_ENVIRONMENT


def report_failure(exc: BaseException) -> NoReturn:
    """The one line (or JSON error) and the exit code for a failure; never a traceback."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # `brat sessions` alone: its help
        if json_wanted():
            fail("bad_arguments", f"a command is missing: see `{exc.ctx.command_path} --help`", EXIT_BAD_ARGS)
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(exc, click.ClickException):  # one line, as every other failure
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and ctx else ""
        message = re.sub(r"\s*\n\s*", " ", exc.format_message())  # (click lists choices on lines)
        fail("bad_arguments", f"{message}{hint}", EXIT_BAD_ARGS if hint else exc.exit_code)
    if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt):
        fail("interrupted", "interrupted", 130)
    if isinstance(exc, BratError):
        fail(exc.code, exc.message, exc.exit_code)
    if isinstance(exc, BrokenPipeError):
        os._exit(0)
    if isinstance(exc, UnicodeEncodeError):  # (bytes of an argument, variable or path that
        # are not UTF-8 reach text the log or git must hold: the checks refuse most first)
        from ..rules import is_utf8

        named = next((a for a in sys.argv[1:] if not is_utf8(a)), None)
        which = f"argument {os.fsencode(named)!r}" if named is not None else "an argument or a variable"
        fail("bad_arguments", f"text that is not UTF-8 cannot be used here: {which}", EXIT_BAD_ARGS)
    pygit2 = sys.modules.get("pygit2")
    if pygit2 is not None and isinstance(exc, pygit2.GitError):  # e.g. a damaged packed-refs file
        fail("environment", f"git cannot read this repository: {exc}", EXIT_ENVIRONMENT)
    if isinstance(exc, OSError) and not os.environ.get("BRAT_DEBUG"):
        fail(*_system_problem(exc))
    if os.environ.get("BRAT_DEBUG"):
        raise exc
    fail("internal", f"internal error: {type(exc).__name__}: {exc} (BRAT_DEBUG=1 shows more)", EXIT_FAILURE)
    raise AssertionError("unreachable")  # fail() exits
