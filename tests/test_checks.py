"""The project's own checks, run with the tests (one command runs everything): lint,
format and strict types, and the package as a wheel in a fresh virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

from .helpers import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    out = _run("ruff", "check", "brat_sessions", "tests", "benchmarks", "docs/examples")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format():
    out = _run("ruff", "format", "--check", "brat_sessions", "tests", "benchmarks", "docs/examples")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict():
    out = _run("mypy")  # [tool.mypy] in pyproject.toml: strict, on brat_sessions
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_wheel_installs_in_a_fresh_virtualenv(tmp_path):
    wheels = tmp_path / "wheels"
    out = _run("pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
    assert out.returncode == 0, out.stderr
    (wheel,) = wheels.glob("brat_sessions-*.whl")
    # a clean environment: not this working tree on PYTHONPATH, nothing of this virtualenv
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        env=clean,
    )
    assert out.returncode == 0, out.stderr
    version = subprocess.run(
        [str(env_dir / "bin" / "brat"), "--version"], capture_output=True, text=True, cwd=tmp_path, env=clean
    )
    assert version.returncode == 0 and version.stdout.startswith("brat, version"), version.stderr
    probe = (
        "import brat_sessions, pathlib; from brat_sessions import Tracker, Fenced; "
        "p = pathlib.Path(brat_sessions.__file__).parent; "
        "assert (p / 'py.typed').exists(); print(Tracker.__name__)"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert out.returncode == 0 and out.stdout.strip() == "Tracker", out.stderr
