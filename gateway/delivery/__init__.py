"""Delivery: the worker that pushes each subject's newest state to the providers, and its metrics."""
