"""Pydantic models: the normalized consent model and one wire-format module per provider."""
