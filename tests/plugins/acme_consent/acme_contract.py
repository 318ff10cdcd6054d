"""Acme passes the gateway's shared adapter contract, like the providers shipped with it.

Not collected by the gateway's own suite (Acme is installed only by ``tests/e2e/test_fourth_provider.py``,
which runs this module in a pytest of its own)."""

from __future__ import annotations

from pathlib import Path

import acme_consent

from tests.adapters.contract import AdapterContract


class TestAcmeContract(AdapterContract):
    provider = "acme"
    purposes = ("email_marketing", "sms_marketing")
    cassettes = Path(acme_consent.__file__).with_name("cassettes")
