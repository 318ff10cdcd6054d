"""Chores that change consent over time: expiry, erasure and the repair of future-dated decisions."""
