"""Sessions: the `[session]` block codec, the model and state machine, the projection."""
