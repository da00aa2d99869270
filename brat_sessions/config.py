"""`.brat/sessions.yaml`: heartbeat interval, timeouts and clock-skew allowance.

    heartbeat_interval: 30     # seconds between heartbeats (brat's default)
    timeout: 120               # stale after this long without a sign of life
    spawn_timeout: 300         # for a session that never heartbeated
    clock_skew: 5              # allowance for clocks that disagree between machines

Every key is optional. `timeout` defaults to three heartbeat intervals plus a
grace of 30 seconds. Command-line flags override the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import BadInput

CONFIG_PATH = Path(".brat") / "sessions.yaml"
GRACE_S = 30.0


@dataclass(frozen=True)
class Config:
    heartbeat_interval: float = 30.0
    timeout: float | None = None
    spawn_timeout: float = 300.0
    clock_skew: float = 5.0

    @property
    def effective_timeout(self) -> float:
        return self.timeout if self.timeout is not None else 3 * self.heartbeat_interval + GRACE_S

    def override(self, **values: float | None) -> "Config":
        given = {k: v for k, v in values.items() if v is not None}
        for key, value in given.items():
            _check_number(f"--{key.replace('_', '-')}", value)
        return replace(self, **given)


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BadInput(f"{name} must be a number of seconds (>= 0), got {value!r}")
    return float(value)


def load_config(root: Path) -> Config:
    """Read `<root>/.brat/sessions.yaml`; a missing file gives the defaults."""
    path = root / CONFIG_PATH
    if not path.exists():
        return Config()
    import yaml  # only when there is a file to read

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of keys to values")
    known = Config.__dataclass_fields__
    values = {}
    for key, value in data.items():
        if key not in known:
            raise BadInput(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
        if value is None and key == "timeout":
            continue
        values[key] = _check_number(f"{path}: key {key!r}", value)
    if values.get("heartbeat_interval") == 0:
        raise BadInput(f"{path}: key 'heartbeat_interval' must be more than 0")
    return Config(**values)
