"""`python -m brat_sessions` is `brat`."""

from .cli import run

run()
