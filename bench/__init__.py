"""Benchmarks of the gateway against a minimal proxy, and of the stores as they grow (see README.md)."""
