"""ptx verify: every backend on the same cases, compared with a reference by one rule."""
