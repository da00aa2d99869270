"""`.brat/sessions.yaml`: heartbeat interval, timeouts and clock-skew allowance.

    heartbeat_interval: 30     # seconds between heartbeats (brat's default; 1 to 3600)
    timeout: 120               # stale after this long without a sign of life (10 to 86400)
    spawn_timeout: 300         # for a session that never heartbeated (10 to 86400)
    clock_skew: 5              # allowance for clocks that disagree between machines (0 to 3600)
    read_snapshots: true       # a cold index build may start from a grite snapshot
    snapshot_events: 10000     # `brat sync` makes a snapshot past this many new events (0: never)
    snapshot_days: 7           # ... or when the newest snapshot is older than this (0 to 3650)

Every key is optional. `timeout` defaults to three heartbeat intervals plus a
grace of 30 seconds, and is at least two of them. Command-line flags override the file.

The file lies in the working tree, so a pulled commit can write it. It is read only
from a regular file of at most 64 KiB, never through a symbolic link, and each number
must lie in its range (`BOUNDS`): a value that would reap every live session at once,
never reap one, or make heartbeats spin is refused with the key and its range (exit 2).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from stat import S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFMT, S_IFSOCK, S_ISREG

from .errors import BadInput, EnvironmentProblem
from .rules import valid_seconds

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

    from .workspace import Workspace

CONFIG_PATH = Path(".brat") / "sessions.yaml"
GRACE_S = 30.0
MAX_FILE_BYTES = 64 * 1024  # a settings file is a few lines: a bigger one is refused unread

# The range of each number in the file (low, high, unit). Flags and the library's
# arguments are the caller's own and are only checked to be finite and not negative.
# - heartbeat_interval: a beat renews a lease ref (and may push it), so not more often
#   than once a second; a session silent for more than an hour is not being watched.
# - timeout, spawn_timeout: at least 10 s (a heartbeat, a sync or a push can take
#   seconds), at most a day (a crashed session is reaped the same day).
# - clock_skew: clocks that disagree by more than an hour are wrong, not skewed.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "heartbeat_interval": (1.0, 3600.0, "seconds"),
    "timeout": (10.0, 86400.0, "seconds"),
    "spawn_timeout": (10.0, 86400.0, "seconds"),
    "clock_skew": (0.0, 3600.0, "seconds"),
    "snapshot_events": (0.0, 1e9, "events"),
    "snapshot_days": (0.0, 3650.0, "days"),
}
BEATS_PER_TIMEOUT = 2  # a timeout in the file spans at least this many heartbeat intervals


@dataclass(frozen=True)
class Config:
    """Settings from `.brat/sessions.yaml` (docs/cli.md lists each)."""

    heartbeat_interval: float = 30.0
    timeout: float | None = None
    spawn_timeout: float = 300.0
    clock_skew: float = 5.0
    read_snapshots: bool = True
    snapshot_events: float = 10_000
    snapshot_days: float = 7.0

    @property
    def effective_timeout(self) -> float:
        return self.timeout if self.timeout is not None else 3 * self.heartbeat_interval + GRACE_S

    def override(self, **values: float | None) -> Config:
        """The same settings with the given (command-line) values in place; None keeps one."""
        given: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        for key, value in given.items():
            if not valid_seconds(value):  # (the caller's own: only finite and not negative)
                raise BadInput(f"--{key.replace('_', '-')} must be a finite number (>= 0), got {value!r}")
        if given.get("heartbeat_interval") == 0:
            raise BadInput("--heartbeat-interval must be more than 0")
        return replace(self, **given)


def load_config(root: Path, cache_dir: Path | None = None) -> Config:
    """Read `<root>/.brat/sessions.yaml`; a missing file gives the defaults. With
    `cache_dir`, the checked values are kept there (`_kept_values`, `_keep_values`)."""
    path = root / CONFIG_PATH
    try:
        seen = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return Config()
    values = _kept_values(path, seen, cache_dir) if _plain_file(path, seen) else None
    if values is None:
        text, read = read_text(path)
        values = _checked(path, parse_settings(path, text))
        _keep_values(path, read, cache_dir, values)
    return Config(**values)


def read_settings(path: Path) -> dict[str, Any]:
    """The settings file's mapping as PyYAML reads it; BadInput when it is not one."""
    return parse_settings(path, read_text(path)[0])


def read_text(path: Path) -> tuple[str, os.stat_result]:
    """The settings file's text and the status of what was read. Only a regular file of
    at most MAX_FILE_BYTES is read, never through a symbolic link (a committed one could
    name /dev/zero, a FIFO or a file outside the repository): else BadInput naming the
    file and why, and none of its bytes."""
    fd = _open_without_links(path)
    try:
        status = os.fstat(fd)
        _check_regular(path, status)
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # (it grew since the fstat)
        raise BadInput(f"{path}: {_too_big()}")
    try:
        return data.decode("utf-8"), status
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None


def _open_without_links(path: Path) -> int:
    """The settings file opened for reading without following a symbolic link, neither
    the file's nor its folder's, and without waiting (a FIFO opens at once, then is refused)."""
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path.parent):
            raise BadInput(f"{path}: {path.parent.name} is a symbolic link; {_NO_LINKS}") from None
        raise EnvironmentProblem(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=folder)
    except OSError as exc:
        if os.path.islink(path):
            raise BadInput(f"{path}: a symbolic link; {_NO_LINKS}") from None
        raise EnvironmentProblem(f"{path}: cannot read it ({exc.strerror})") from None
    finally:
        os.close(folder)


_NO_LINKS = "brat reads its settings only from a file in the working tree, never through a link"
_KINDS = {
    S_IFDIR: "a directory",
    S_IFIFO: "a FIFO (named pipe)",
    S_IFCHR: "a character device",
    S_IFBLK: "a block device",
    S_IFSOCK: "a socket",
}


def _check_regular(path: Path, status: os.stat_result) -> None:
    """BadInput unless `status` is that of a regular file of at most MAX_FILE_BYTES."""
    if not S_ISREG(status.st_mode):
        kind = _KINDS.get(S_IFMT(status.st_mode), "not a regular file")
        raise BadInput(f"{path}: {kind}, not a settings file")
    if status.st_size > MAX_FILE_BYTES:
        raise BadInput(f"{path}: {_too_big()}")


def _too_big() -> str:
    return f"larger than {MAX_FILE_BYTES // 1024} KiB, too big to be a settings file; not read"


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from `fd`, fewer at its end."""
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, limit)
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def parse_settings(path: Path, text: str) -> dict[str, Any]:
    """The settings text's mapping as PyYAML reads it; BadInput when it is not one."""
    import yaml  # only when there is a file to read, and no checked copy of it

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to be settings") from None
    except ValueError as exc:  # a date past the calendar, an integer of over 4300 digits
        raise BadInput(f"{path}: a value that cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of keys to values")
    return data


def _checked(path: Path, data: dict[Any, Any]) -> dict[str, Any]:
    """The settings' values, every one checked (Config's keyword arguments)."""
    known = Config.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise BadInput(f"{path}: unknown key {_shown(key)} (known: {', '.join(known)})")
        if value is None and key == "timeout":
            continue
        if key == "read_snapshots":
            if not isinstance(value, bool):
                raise BadInput(f"{path}: key 'read_snapshots' must be true or false, got {_shown(value)}")
            values[key] = value
            continue
        values[key] = _check_setting(path, key, value)
    _check_timeout_spans_beats(path, values)
    return values


def _check_setting(path: Path, key: str, value: Any) -> float:
    """A number of the file within its range (`BOUNDS`), which the error states."""
    low, high, unit = BOUNDS[key]
    whole = key == "snapshot_events"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not low <= value <= high or (whole and value != int(value)):  # (NaN fails too)
        kind = "a whole number" if whole else "a number"
        raise BadInput(
            f"{path}: key {key!r} must be {kind} of {unit} from {_plain(low)} to {_plain(high)}, "
            f"got {_shown(value)}"
        )
    return float(value)


def _check_timeout_spans_beats(path: Path, values: dict[str, Any]) -> None:
    """A timeout shorter than BEATS_PER_TIMEOUT heartbeat intervals is refused: a live
    session would be reaped between two of its heartbeats."""
    timeout = values.get("timeout")
    given = values.get("heartbeat_interval")
    interval = given if given is not None else Config.heartbeat_interval
    if timeout is not None and timeout < BEATS_PER_TIMEOUT * interval:
        whose = "heartbeat_interval" if given is not None else "the default heartbeat_interval"
        raise BadInput(
            f"{path}: key 'timeout' must be at least {_plain(BEATS_PER_TIMEOUT * interval)} seconds, "
            f"{BEATS_PER_TIMEOUT} x {whose} of {_plain(interval)}, got {_plain(timeout)}: a shorter "
            "one would reap a live session between two of its heartbeats"
        )


def _plain(number: float) -> str:
    """A number as the settings file would spell it (86400, not 8.64e+04)."""
    return str(int(number)) if number == int(number) else f"{number:g}"


def _shown(value: Any) -> str:
    """A value for an error: a list, mapping or set by its kind (one built from YAML
    aliases can hold 10**n items), else its repr cut to 80 characters."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, set)):
        return f"a {type(value).__name__}"
    try:
        text = repr(value)
    except ValueError:  # an integer of over 4300 digits
        return "a number too long to show"
    return text if len(text) <= 80 else text[:77] + "..."


# The checked values of the settings file, kept in the data dir: importing PyYAML is
# about 10 ms of every command, a third of a warm list. They are used only while the
# file's size, modification and change times, inode and device are those it was read
# with, and kept only for a file last changed (its change time: no tool sets that) over
# 2 s before, since a second edit of the same size within one clock tick would leave the
# same stamp. A file that does not pass the checks is never kept: it is read each time.
# The stamp is looked up only for a regular file in a `.brat` folder that is no symbolic
# link, and kept from the status of the descriptor read (`read_text`), so a link, a
# FIFO or a device is always read, and refused, however it came to match a stamp; the
# kept values are checked again (`_checked`: the bounds) each time they are used.
_CACHE_FILE = "config-cache.json"
_CACHE_MAX_BYTES = 4096
_SETTLED_NS = 2_000_000_000


def _stamp(path: Path, stat: os.stat_result) -> list[object]:
    return [os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _plain_file(path: Path, seen: os.stat_result) -> bool:
    """Whether `seen` (the file's lstat) is a regular file's, and its folder no link."""
    return S_ISREG(seen.st_mode) and not os.path.islink(path.parent)


def _kept_values(path: Path, stat: os.stat_result, cache_dir: Path | None) -> dict[str, Any] | None:
    """The values kept for the file as it is now, checked again; None when there are none."""
    if cache_dir is None:
        return None
    try:
        raw = (cache_dir / _CACHE_FILE).read_bytes()
        if len(raw) > _CACHE_MAX_BYTES:
            return None
        kept = json.loads(raw)
        if kept["stamp"] != _stamp(path, stat) or not isinstance(kept["values"], dict):
            return None
        return _checked(path, kept["values"])
    except (OSError, ValueError, TypeError, KeyError, RecursionError, BadInput):
        return None  # none kept, or damaged: the file is read


def _keep_values(path: Path, stat: os.stat_result, cache_dir: Path | None, values: dict[str, Any]) -> None:
    """Keep the checked values of a file that has settled (a cache: failures are ignored)."""
    settled = time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) >= _SETTLED_NS
    if cache_dir is None or not settled or not cache_dir.is_dir():
        return
    import tempfile

    try:
        fd, temporary = tempfile.mkstemp(dir=cache_dir, prefix=f"{_CACHE_FILE}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"stamp": _stamp(path, stat), "values": values}, out)
        os.replace(temporary, cache_dir / _CACHE_FILE)
    except OSError:
        Path(temporary).unlink(missing_ok=True)


def describe(ws: Workspace) -> list[dict[str, Any]]:
    """Every setting in effect, with where it comes from (for `brat config`)."""
    import os

    from .workspace import this_host

    path = ws.ctx.config_root / CONFIG_PATH
    in_file: set[str] = set()
    config = ws.config  # (checks the file first)
    if path.exists():
        in_file = set(read_settings(path))
    rows = [
        {
            "name": key,
            "value": getattr(config, key),
            "source": f"file {path}" if key in in_file else "default",
        }
        for key in Config.__dataclass_fields__
    ]
    rows.append(
        {
            "name": "effective_timeout",
            "value": config.effective_timeout,
            "source": "timeout" if config.timeout is not None else "3 x heartbeat_interval + 30",
        }
    )

    def env(name: str, value: Any, fallback: str) -> dict[str, Any]:
        return {
            "name": name.lower(),
            "value": value,
            "source": f"environment {name}" if os.environ.get(name) else fallback,
        }

    rows += [
        env("BRAT_ACTOR", ws.actor, "grite config (default_actor)"),
        env("BRAT_HOST", this_host(), "hostname"),
        env("BRAT_HEARTBEAT_REMOTE", os.environ.get("BRAT_HEARTBEAT_REMOTE") or None, "default (not pushed)"),
        env(
            "BRAT_PAGER",
            os.environ.get("BRAT_PAGER") or os.environ.get("PAGER") or "less -FRX",
            "environment PAGER" if os.environ.get("PAGER") else "default",
        ),
        env("NO_COLOR", bool(os.environ.get("NO_COLOR")), "default"),
        {"name": "repository", "value": str(ws.ctx.common_dir), "source": "git"},
        {"name": "logs_dir", "value": str(ws.ctx.logs_dir), "source": "git"},
        {"name": "index", "value": str(ws.ctx.data_dir / "index.sqlite"), "source": "git"},
    ]
    return rows
