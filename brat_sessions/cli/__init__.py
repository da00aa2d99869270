"""The `brat` command: parse arguments, call the library, print. Nothing else lives here.

One module per command group: `root` (brat, help, init, demo, sync, config, completion),
`tasks`, `sessions` (reading: list, show, log, doctor, tree...) and `worker` (writing:
start, heartbeat, transition, exit, stop, run, reap); `output` holds what they share.
"""

from .root import cli, main

__all__ = ["cli", "main"]
