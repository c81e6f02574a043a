"""What a model file says, read without running it: its kind, ptx metadata and graph."""
