"""ptx bench: latency and throughput per backend, and the fastest verified one (--backend auto)."""
