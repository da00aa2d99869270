"""Issues: the fold of grite events into issues, task issues and their labels."""
