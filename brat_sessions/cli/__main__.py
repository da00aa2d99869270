"""`python -m brat_sessions.cli`."""

from . import main

main()
