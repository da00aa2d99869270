"""What every command shares: the JSON envelope, errors, the terminal (width, colour, pager)."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..worker.api import Tracker
    from ..workspace import Workspace

from .plain import SCHEMA_VERSION, envelope


def _root_meta() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().meta if ctx is not None else {}


def json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return bool(ctx.find_root().meta.get("json"))
    # after click has finished (an error on the way out): read argv, up to a `--`
    # (what follows it is the command of `brat sessions run`, not ours)
    args = sys.argv[1:]
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def emit(data: Any, text: str | Callable[[], str]) -> None:
    """Print `data` as the JSON envelope, or the text for people (paged when long)."""
    if json_wanted():
        click.echo(envelope(data))
    else:
        page(text() if callable(text) else text)


def fail(code: str, message: str, exit_code: int) -> None:
    if json_wanted():
        click.echo(
            json.dumps(
                {"schema_version": SCHEMA_VERSION, "ok": False, "error": {"code": code, "message": message}}
            ),
            err=True,
        )
    else:
        warn(message)
    sys.exit(exit_code)


def warn(message: str) -> None:
    """One line on stderr; text from the log in it is shown with controls made visible."""
    from ..render import safe

    click.echo(f"brat: {safe(message)}", err=True)


# the terminal ------------------------------------------------------------------
def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def width() -> int | None:
    """The terminal's width for tables (None: do not cut, when piped or with --wide)."""
    if _root_meta().get("wide") or not stdout_is_terminal():
        return None
    return shutil.get_terminal_size().columns


def colour() -> bool:
    """Colour only on a terminal, unless --color says otherwise; NO_COLOR turns auto off."""
    choice = _root_meta().get("color", "auto")
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stdout_is_terminal() and os.environ.get("TERM") != "dumb"


def page(text: str) -> None:
    """Print, through $PAGER (default `less -FRX`) when it is longer than a terminal screen."""
    lines = text.count("\n") + 1
    if not stdout_is_terminal() or _root_meta().get("no_pager") or lines < shutil.get_terminal_size().lines:
        click.echo(text, color=True)  # colour codes are ours (`colour()` decided); keep them
        return
    command = shlex.split(os.environ.get("BRAT_PAGER") or os.environ.get("PAGER") or "less -FRX")
    try:
        pager = subprocess.Popen(command, stdin=subprocess.PIPE)
    except OSError:
        click.echo(text, color=True)
        return
    try:
        assert pager.stdin is not None
        pager.stdin.write((text + "\n").encode())
        pager.stdin.close()
    except BrokenPipeError:
        pass  # the reader quit the pager early
    pager.wait()


# options every command takes --------------------------------------------------
def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _p: click.Parameter, value: Any) -> None:
        if value not in (None, False, ()):
            meta = ctx.find_root().meta
            if key == "dir":  # as git's: each -C is relative to the one before
                for path in value:
                    _enter(path)
                value = os.getcwd()
            meta[key] = value

    return callback


def _enter(path: str) -> None:
    """Move into `path` (-C) as git does: the repository, relative paths and the commands
    that `run` and `resume` start are all found from there (an empty PATH changes nothing)."""
    from ..errors import EnvironmentProblem

    if not path:
        return
    try:
        os.chdir(path)
    except FileNotFoundError:
        raise EnvironmentProblem(f"no such directory: {path}") from None
    except NotADirectoryError:
        raise EnvironmentProblem(f"not a directory: {path}") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot change to {path}: {exc.strerror}") from None


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--json and -C, accepted at every level of the command tree (like git's -C)."""
    fn = click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=_remember("json"),
        is_eager=True,
        help="Print the JSON envelope.",
    )(fn)
    fn = click.option(
        "-C",
        "directory",
        metavar="PATH",
        multiple=True,
        expose_value=False,
        callback=_remember("dir"),
        is_eager=True,
        help="Run as if started in PATH.",
    )(fn)
    return fn


def terminal_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--color, --wide and --no-pager, for commands that print tables."""
    fn = click.option(
        "--color",
        type=click.Choice(["auto", "always", "never"]),
        expose_value=False,
        callback=_remember("color"),
        help="Colour states (default: auto, on a terminal unless NO_COLOR is set).",
    )(fn)
    fn = click.option(
        "--wide",
        is_flag=True,
        expose_value=False,
        callback=_remember("wide"),
        help="Do not cut columns to the terminal's width.",
    )(fn)
    fn = click.option(
        "--no-pager",
        is_flag=True,
        expose_value=False,
        callback=_remember("no_pager"),
        help="Never page long output.",
    )(fn)
    return fn


def directory() -> str | None:
    value = _root_meta().get("dir")
    return str(value) if value is not None else None


def workspace() -> Workspace:
    from ..workspace import Workspace

    return Workspace(directory())


def read_workspace() -> Workspace:
    """For commands that only read: answered without pygit2 when the index is current."""
    from ..light import read_workspace as light_or_full

    return light_or_full(directory())


def tracker() -> Tracker:
    from ..worker.api import Tracker

    return Tracker(directory())


def now() -> int:
    from ..clock import now_ms

    return now_ms()


def examples(*lines: str) -> str:
    """An EXAMPLES epilog for --help, kept as written (click's \\b: no re-wrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _refuse_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value == "":
        raise click.BadParameter("must not be empty (leave the option out instead)", ctx, param)
    return value


NON_EMPTY: dict[str, Any] = {"callback": _refuse_empty}  # (an empty value would turn a filter off)


def seconds(minimum: float = 0.0, above: bool = False) -> dict[str, Any]:
    """click.option's `type` and `callback` for a finite number of seconds, at least
    `minimum` (more than it with `above`): FloatRange lets NaN and infinity through, and
    NaN makes every comparison false."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        low_ok = value > minimum if above else value >= minimum
        if not (math.isfinite(value) and low_ok):
            bound = f"more than {minimum:g}" if above else f"at least {minimum:g}"
            raise click.BadParameter(f"{value!r} is not a finite number of seconds {bound}", ctx, param)
        return value

    return {"type": float, "callback": check}
