"""Benchmark harness: wsgroups against a bare Channels consumer, run with ``python -m bench``."""
