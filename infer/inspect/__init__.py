"""ptx inspect and ptx runs: what a file or run folder holds, and which backends run it here."""
