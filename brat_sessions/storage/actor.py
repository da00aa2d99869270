"""grite actors: `<common dir>/grite/config.toml` and `grite/actors/<hex>/config.toml`."""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

from ..clock import now_ms
from ..errors import BadInput, EnvironmentProblem
from .context import RepoContext

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _grite_dir(ctx: RepoContext) -> Path:
    return ctx.common_dir / "grite"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentProblem(f"{path}: not valid TOML: {exc}") from None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_actor() -> str | None:
    value = os.environ.get("BRAT_ACTOR")
    if not value:
        return None
    value = value.strip().lower()
    if not HEX32.match(value):
        raise BadInput(f"BRAT_ACTOR must be 32 hex characters, got {value!r}")
    return value


def load_actor(ctx: RepoContext) -> str | None:
    """The actor this process writes as, or None when the repo has none yet."""
    env = _env_actor()
    if env:
        return env
    actor = _read_toml(_grite_dir(ctx) / "config.toml").get("default_actor")
    if isinstance(actor, str) and HEX32.match(actor):
        return actor
    return None


def _write_actor_config(ctx: RepoContext, actor: str) -> None:
    path = _grite_dir(ctx) / "actors" / actor / "config.toml"
    if path.exists():
        return
    label = f"brat_sessions@{socket.gethostname()}"
    _write_atomic(
        path, f"actor_id = {_toml_str(actor)}\nlabel = {_toml_str(label)}\ncreated_ts = {now_ms()}\n"
    )


def ensure_actor(ctx: RepoContext) -> str:
    """Return the writing actor, creating grite's actor files if the repo has none."""
    actor = load_actor(ctx)
    if actor is None:
        actor = os.urandom(16).hex()
        cfg_path = _grite_dir(ctx) / "config.toml"
        existing = cfg_path.read_text() if cfg_path.exists() else ""
        lines = [ln for ln in existing.splitlines() if not ln.strip().startswith("default_actor")]
        _write_atomic(cfg_path, "\n".join([f"default_actor = {_toml_str(actor)}", *lines]) + "\n")
        actor = load_actor(ctx) or actor  # a concurrent init may have won; use its choice
    _write_actor_config(ctx, actor)
    _exclude_grite_dir(ctx)
    return actor


def _exclude_grite_dir(ctx: RepoContext) -> None:
    """Keep brat's `.grite/` (logs, worktrees) out of `git status`."""
    exclude = ctx.common_dir / "info" / "exclude"
    try:
        text = exclude.read_text() if exclude.exists() else ""
        if "/.grite/" not in text.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            with open(exclude, "a") as fh:
                fh.write(("" if text.endswith("\n") or not text else "\n") + "/.grite/\n")
    except OSError:
        pass  # a read-only exclude file costs only a noisier `git status`
