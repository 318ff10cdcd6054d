"""Acme: a made-up provider keeping one consent flag per channel and person, with its time."""
