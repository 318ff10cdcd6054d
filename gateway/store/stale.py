"""Marking subjects whose drift-view rows may have changed (table ``reconciliation_stale``).

Every write that changes what a row's status is computed from (a subject's state or addresses,
what a provider acknowledged or was observed to hold, a delivery's status) calls ``mark`` in its
own transaction, so a change and its mark commit together or not at all. A mark is a plain insert
(no unique key, nothing to contend on): two writers never wait on each other's marks, and a
subject may hold several. ``gateway.store.drift_rows`` clears exactly the marks it read.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select

from gateway.store.db import Executor
from gateway.store.tables import addresses, reconciliation_stale

MARKED = reconciliation_stale.insert()
OTHER_HOLDERS_MARKED = reconciliation_stale.insert().from_select(
    ["subject_id"],
    select(addresses.c.subject_id)
    .where(
        addresses.c.address.in_(bindparam("shared", expanding=True)),
        addresses.c.current == 1,
        addresses.c.subject_id.not_in(bindparam("ids", expanding=True)),
    )
    .distinct(),
)
"""Built once: a group runs both, and a statement built afresh costs more than its rows."""


async def mark(conn: Executor, subject_ids: Iterable[str], sharing: Iterable[str] = ()) -> None:
    """Mark ``subject_ids``, and every other subject holding one of the ``sharing`` addresses now: a
    provider keeping one consent per address (Wix) gives them all the most protective state of its
    holders, so one holder's decision, arrival or departure changes the others' rows too."""
    ids = sorted(set(subject_ids))
    if ids:
        await conn.execute(MARKED, [{"subject_id": subject_id} for subject_id in ids])
    shared = sorted(set(sharing))
    if shared:
        await conn.execute(OTHER_HOLDERS_MARKED, {"shared": shared, "ids": ids})
