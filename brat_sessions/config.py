"""`.brat/sessions.yaml`: heartbeat interval, timeouts and clock-skew allowance.

    heartbeat_interval: 30     # seconds between heartbeats (brat's default)
    timeout: 120               # stale after this long without a sign of life
    spawn_timeout: 300         # for a session that never heartbeated
    clock_skew: 5              # allowance for clocks that disagree between machines
    read_snapshots: true       # a cold index build may start from a grite snapshot
    snapshot_events: 10000     # `brat sync` makes a snapshot past this many new events (0: never)
    snapshot_days: 7           # ... or when the newest snapshot is older than this

Every key is optional. `timeout` defaults to three heartbeat intervals plus a
grace of 30 seconds. Command-line flags override the file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import BadInput

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

    from .workspace import Workspace

CONFIG_PATH = Path(".brat") / "sessions.yaml"
GRACE_S = 30.0


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
            _check_number(f"--{key.replace('_', '-')}", value)
        if given.get("heartbeat_interval") == 0:
            raise BadInput("--heartbeat-interval must be more than 0")
        return replace(self, **given)


def _check_number(name: str, value: Any, whole: bool = False) -> float:
    """A finite number >= 0 (NaN and infinity would make every comparison false)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise BadInput(f"{name} must be a finite number (>= 0), got {value!r}")
    if whole and value != int(value):
        raise BadInput(f"{name} must be a whole number, got {value!r}")
    return float(value)


def load_config(root: Path, cache_dir: Path | None = None) -> Config:
    """Read `<root>/.brat/sessions.yaml`; a missing file gives the defaults. With
    `cache_dir`, the checked values are kept there (`_kept_values`, `_keep_values`)."""
    path = root / CONFIG_PATH
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return Config()
    values = _kept_values(path, stat, cache_dir)
    if values is None:
        values = _checked(path, read_settings(path))
        _keep_values(path, stat, cache_dir, values)
    return Config(**values)


def read_settings(path: Path) -> dict[str, Any]:
    """The settings file's mapping as PyYAML reads it; BadInput when it is not one."""
    import yaml  # only when there is a file to read, and no checked copy of it

    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to be settings") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: a directory, not a settings file") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of keys to values")
    return data


def _checked(path: Path, data: dict[Any, Any]) -> dict[str, Any]:
    """The settings' values, every one checked (Config's keyword arguments)."""
    known = Config.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise BadInput(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
        if value is None and key == "timeout":
            continue
        if key == "read_snapshots":
            if not isinstance(value, bool):
                raise BadInput(f"{path}: key 'read_snapshots' must be true or false, got {value!r}")
            values[key] = value
            continue
        values[key] = _check_number(f"{path}: key {key!r}", value, whole=key == "snapshot_events")
    if values.get("heartbeat_interval") == 0:
        raise BadInput(f"{path}: key 'heartbeat_interval' must be more than 0")
    return values


# The checked values of the settings file, kept in the data dir: importing PyYAML is
# about 10 ms of every command, a third of a warm list. They are used only while the
# file's size, modification and change times, inode and device are those it was read
# with, and kept only for a file last changed (its change time: no tool sets that) over
# 2 s before, since a second edit of the same size within one clock tick would leave the
# same stamp. A file that does not pass the checks is never kept: it is read each time.
_CACHE_FILE = "config-cache.json"
_CACHE_MAX_BYTES = 4096
_SETTLED_NS = 2_000_000_000


def _stamp(path: Path, stat: os.stat_result) -> list[object]:
    return [os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


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
