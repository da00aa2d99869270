"""The worker side: the Python API, the heartbeat lease keeper, the `run` supervisor."""
