"""`python -m brat_sessions.cli`."""

from . import run

run()
