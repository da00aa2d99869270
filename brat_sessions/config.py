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
    `cache_dir`, what the file parsed to is kept there (`_cached_yaml`, `_keep_yaml`)."""
    path = root / CONFIG_PATH
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return Config()
    data = _cached_yaml(path, stat, cache_dir)
    if data is _MISS:
        import yaml  # only when there is a file to read, and not from the cache

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        _keep_yaml(path, stat, cache_dir, data)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of keys to values")
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
    return Config(**values)


# What the settings file parsed to, kept in the data dir: importing PyYAML is about 10 ms
# of every command, a third of a warm list. It is used only while the file's size,
# modification and change times, inode and device are those it was read with, and kept
# only for a file modified over 2 s before (a second edit within the same clock tick, of
# the same size, would leave the same stamp).
_CACHE_FILE = "config-cache.json"
_SETTLED_NS = 2_000_000_000
_MISS = object()


def _stamp(path: Path, stat: os.stat_result) -> list[object]:
    return [os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _cached_yaml(path: Path, stat: os.stat_result, cache_dir: Path | None) -> Any:
    """What the file parsed to when it was last read unchanged, else _MISS."""
    if cache_dir is None:
        return _MISS
    try:
        kept = json.loads((cache_dir / _CACHE_FILE).read_bytes())
        return kept["data"] if kept["stamp"] == _stamp(path, stat) else _MISS
    except (OSError, ValueError, TypeError, KeyError):
        return _MISS


def _keep_yaml(path: Path, stat: os.stat_result, cache_dir: Path | None, data: object) -> None:
    """Keep what the file parsed to, when it has settled and JSON holds it exactly."""
    if cache_dir is None or time.time_ns() - stat.st_mtime_ns < _SETTLED_NS or not cache_dir.is_dir():
        return
    try:
        text = json.dumps({"stamp": _stamp(path, stat), "data": data})
        if json.loads(text)["data"] != data:
            return  # (dates, keys other than text ...: read with PyYAML each time)
        temporary = cache_dir / f"{_CACHE_FILE}.{os.getpid()}.tmp"
        temporary.write_text(text)
        os.replace(temporary, cache_dir / _CACHE_FILE)
    except (OSError, TypeError, ValueError):
        pass  # a cache: the file is read again next time


def describe(ws: Workspace) -> list[dict[str, Any]]:
    """Every setting in effect, with where it comes from (for `brat config`)."""
    import os

    from .workspace import this_host

    path = ws.ctx.config_root / CONFIG_PATH
    in_file: set[str] = set()
    if path.exists():
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        in_file = set(data) if isinstance(data, dict) else set()
    config = ws.config
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
        env(
            "BRAT_PAGER",
            os.environ.get("BRAT_PAGER") or os.environ.get("PAGER") or "less -FRX",
            "PAGER or default",
        ),
        env("NO_COLOR", bool(os.environ.get("NO_COLOR")), "default"),
        {"name": "repository", "value": str(ws.ctx.common_dir), "source": "git"},
        {"name": "logs_dir", "value": str(ws.ctx.logs_dir), "source": "git"},
        {"name": "index", "value": str(ws.ctx.data_dir / "index.sqlite"), "source": "git"},
    ]
    return rows
