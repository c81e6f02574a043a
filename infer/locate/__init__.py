"""Where two sides part: the node a difference is born at, its repro, and reduced precision's triage."""
