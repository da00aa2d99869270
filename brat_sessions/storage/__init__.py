"""grite's write-ahead log: chunk codec, event ids, append with compare-and-swap, replay.

This layer knows nothing about sessions.
"""
