"""Benchmarks: each prints its figures as one JSON object (never a test assertion)."""
