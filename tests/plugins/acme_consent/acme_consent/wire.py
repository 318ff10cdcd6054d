"""Acme's wire format: ``PUT`` and ``GET /v1/people/{id}/consent``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscribed: bool
    updated_at: datetime  # when the person decided, as the sender says


class Consent(BaseModel):
    """The request body of a PUT and the answer of a GET: only the channels sent are changed."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[str, Channel]


class Problem(BaseModel):
    error: str
