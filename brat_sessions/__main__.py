"""`python -m brat_sessions` is `brat`."""

from .cli import main

main()
