"""The hot path: `brat sessions list --json` (with `--all`, `-C PATH`) without click or pygit2.

Agents and scripts run it far more often than anything else. When the index is current,
the light workspace (light.py) answers from SQLite and the refs as git stores them, and
the JSON is printed by the same code as the full command's (cli/plain.py). Any other
command line, or anything the light workspace cannot answer, goes to the full command
line (cli/root.py), which then prints the same thing or says what is wrong.
"""

from __future__ import annotations

import errno
import os
import sys
from types import ModuleType

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any, NoReturn


def _parse(argv: list[str]) -> tuple[str | None, bool] | None:
    """(directory, --all) for a command line answered here; None for any other.

    `--json` and `-C` are accepted where the command tree accepts them (before
    `sessions` or after `list`), `--all` after `list`."""
    words: list[str] = []
    directory: str | None = None
    json_wanted = include_all = False
    args = iter(argv)
    for arg in args:
        at_an_end = words in ([], ["sessions", "list"])
        if arg == "--json" and at_an_end:
            json_wanted = True
        elif arg == "-C" and at_an_end and directory is None:
            directory = next(args, "")
            if not directory:
                return None
        elif arg == "--all" and words == ["sessions", "list"] and not include_all:
            include_all = True
        elif arg in ("sessions", "session") and not words:
            words.append("sessions")
        elif arg == "list" and words == ["sessions"]:
            words.append("list")
        else:
            return None
    return (directory, include_all) if json_wanted and words == ["sessions", "list"] else None


def answered(argv: list[str]) -> bool:
    """True when the command was answered here (then nothing else must run)."""
    parsed = _parse(argv)
    if parsed is None:
        return False
    directory, include_all = parsed
    stand_ins = _load_lazily("inspect", "ipaddress")
    try:
        from ..light import LightWorkspace
        from .plain import all_list_json, live_list_json, write_pieces

        ws = LightWorkspace(directory, report=False)
        pieces = all_list_json(ws) if include_all else [live_list_json(ws)]
    except KeyboardInterrupt as exc:
        _failed(exc)
    except Exception:  # noqa: BLE001 (the full command line answers, or explains)
        _put_back(stand_ins)
        return False
    try:
        ws.index.report_corrupt_commits()  # (once: nothing after this falls back)
        write_pieces(pieces)
        ws.index.close()
    except BaseException as exc:  # noqa: BLE001 (answered as the full command line would)
        _failed(exc)
    return True


def _load_lazily(*names: str) -> list[_OnFirstUse]:
    """Import these modules on first use instead of now: the hot path imports `inspect`
    (through dataclasses) and `ipaddress` (through pathlib) but never uses them, and
    loading them is a sixth of its time. Each one not imported yet becomes a stand-in
    (returned) that imports the real module on first touch. (importlib's LazyLoader
    does not help on Python 3.11: the import statement reads the module's `__spec__`,
    and with LazyLoader that alone loads it.)"""
    stand_ins = [_OnFirstUse(name) for name in names if name not in sys.modules]
    for stand_in in stand_ins:
        sys.modules[stand_in.__name__] = stand_in
    return stand_ins


def _put_back(stand_ins: list[_OnFirstUse]) -> None:
    """Take the stand-ins still untouched out of sys.modules before the full command line
    runs: from there on, an import finds the real module (and a `__spec__`). A module
    that holds a stand-in already loads the real one through it."""
    for stand_in in stand_ins:
        if sys.modules.get(stand_in.__name__) is stand_in:
            sys.modules.pop(stand_in.__name__, None)


class _OnFirstUse(ModuleType):
    """A module not imported yet (its `__spec__` is None, so an import statement takes it
    as it is): the first attribute read imports the real module, which takes the
    stand-in's place in sys.modules and lends it its attributes (for whoever holds the
    stand-in)."""

    def __getattr__(self, attr: str) -> Any:
        _put_back([self])
        import importlib

        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def finish() -> None:
    """End a process whose command the hot path answered: flush, then exit at once,
    without the interpreter's clean-up of every object (a tenth of a warm list's time;
    the output is written and flushed and the index closed). A process watched by a
    profiler or a tracer (coverage) ends the usual way, so that they can report."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.getprofile() is None and sys.gettrace() is None:
        os._exit(0)


def _failed(exc: BaseException) -> NoReturn:
    """Fail as the full command line does (click: a newline before "interrupted", exit 1
    without a word when stdout or stderr is a closed pipe)."""
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        os._exit(1)
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("\n")
    from .root import report_failure  # click loads only now, to say what went wrong

    report_failure(exc)
