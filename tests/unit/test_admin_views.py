"""What the admin page offers: Adopt only where a read-back found a state that can be adopted."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.http.admin_views import adoptable
from schemas.api import ProviderSync, SyncStatus, TermDifference

HELD = {"EMAIL": {"state": "REVOKED"}}
WANTED = {"EMAIL": {"state": "CONFIRMED"}}


def row(status: SyncStatus, **fields: Any) -> ProviderSync:
    base: dict[str, Any] = {
        "subject_id": "cust-1",
        "provider": "wix",
        "status": status,
        "desired": WANTED,
        "acknowledged": WANTED,
        "observed": HELD,
        "difference": [TermDifference(term="EMAIL.state", desired="CONFIRMED", held="REVOKED")],
    }
    return ProviderSync.model_validate(base | fields)


@pytest.mark.parametrize(
    ("shown", "offered"),
    [
        (row(SyncStatus.diverged), True),
        (row(SyncStatus.pending), False),  # a push is under way: what was read is about to change
        (row(SyncStatus.diverged, observed=None), False),  # never read back: nothing to adopt
        (row(SyncStatus.diverged, difference=[]), False),
        (row(SyncStatus.diverged, not_adopted={"EMAIL": "dated before the subject held this address"}), False),
    ],
)
def test_adopt_is_offered_only_where_something_can_be_adopted(shown: ProviderSync, offered: bool) -> None:
    assert adoptable(shown) is offered
