"""Re-dating future-dated decisions: the rule a repair folds a subject's ledger by."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from schemas.consent import GATEWAY_SOURCES, Decision, SubjectState, merge


def refold(entries: Iterable[tuple[str, Decision, datetime]], skew: timedelta) -> tuple[SubjectState, dict[str, str]]:
    """The subject's state from its ledger (id, decision, received_at in receive order), each
    decision dated after it was received re-dated to its receive time; and per purpose the
    decision that now holds it. The gateway's own repair entries are not decisions: skipped."""
    state: SubjectState | None = None
    winners: dict[str, str] = {}
    for decision_id, decision, received_at in entries:
        if decision.source in GATEWAY_SOURCES:
            continue
        if decision.occurred_at > received_at + skew:
            decision = decision.model_copy(update={"occurred_at": received_at})
        state, effective = merge(state, decision)
        winners |= {purpose: decision_id for purpose in effective}
    assert state is not None, "a subject has at least one decision"
    return state, winners
