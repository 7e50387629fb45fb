"""Offline assets for tests, benchmarks and the CPU demo (no model hub needed)."""
