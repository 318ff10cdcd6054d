"""Group commit: decisions arriving together share a transaction, merge in arrival order, and one bad
decision fails alone (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.service import Gateway
from gateway.store import Store, entries
from gateway.store.grouping import GroupCommit
from gateway.store.ledger import Pending
from schemas.api import DecisionOut
from schemas.consent import Decision, PurposeState
from tests.fakes import fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def decision(subject: str, minutes: int, **purposes: str) -> Decision:
    return Decision.model_validate(
        {"subject": {"id": subject}, "purposes": purposes, "occurred_at": NOW + timedelta(minutes=minutes)},
        strict=False,
    )


@pytest.fixture
def commits(store: Store) -> Iterator[list[int]]:
    """Counts the transactions committed on any engine (on SQLite, a group is written on a writer
    connection of the store's own, not through the async engine's pool)."""
    seen: list[int] = []

    def count(_connection: Any) -> None:
        seen.append(1)

    event.listen(Engine, "commit", count)
    yield seen
    event.remove(Engine, "commit", count)


def group(store: Store) -> GroupCommit[Pending, DecisionOut]:
    adapters = {"fake": fake_adapter()}
    return GroupCommit(lambda group: store.ledger.record_many(group, adapters, NOW))


async def test_decisions_arriving_together_share_transactions(store: Store, commits: list[int]) -> None:
    recorder = group(store)
    recorded = await asyncio.gather(
        *(recorder.commit(Pending(decision(f"s-{i}", 0, email_marketing="granted"))) for i in range(60))
    )
    assert len({r.id for r in recorded}) == 60 and all(r.effective_purposes == ["email_marketing"] for r in recorded)
    assert len(commits) <= 3, f"{len(commits)} transactions for 60 decisions"


async def test_decisions_for_one_subject_in_one_group_merge_in_arrival_order(store: Store, commits: list[int]) -> None:
    recorder = group(store)
    newer, older, newest_sms = await asyncio.gather(
        recorder.commit(Pending(decision("s", 10, email_marketing="denied"))),
        recorder.commit(Pending(decision("s", 5, email_marketing="granted", sms_marketing="granted"))),
        recorder.commit(Pending(decision("s", 20, sms_marketing="denied"))),
    )
    assert len(commits) == 1, "one group"
    assert newer.effective_purposes == ["email_marketing"]
    assert (older.effective_purposes, older.superseded_purposes) == (["sms_marketing"], ["email_marketing"])
    assert newest_sms.effective_purposes == ["sms_marketing"]
    state = await store.ledger.subject_state("s")
    assert state is not None
    assert {p: r.state for p, r in state.purposes.items()} == {
        "email_marketing": PurposeState.denied,
        "sms_marketing": PurposeState.denied,
    }
    assert [d.status for d in newer.deliveries] == ["pending"]
    assert [d.id for d in newest_sms.deliveries] == [d.id for d in newer.deliveries], "coalesced within the group"


@pytest.mark.parametrize("handed_over", ["one by one", "all at once"])
async def test_one_bad_decision_fails_alone(store: Store, monkeypatch: pytest.MonkeyPatch, handed_over: str) -> None:
    real = entries.Plan.of

    def refuse_bad(entry: entries.Entry, *args: Any, **kwargs: Any) -> entries.Plan:
        if entry.decision.subject.id == "bad":
            raise RuntimeError("this one cannot be written")
        return real(entry, *args, **kwargs)

    monkeypatch.setattr(entries.Plan, "of", refuse_bad)
    recorder = group(store)
    items = [Pending(decision(s, 0, email_marketing="granted")) for s in ("a", "bad", "c")]
    if handed_over == "all at once":  # a batch
        outcomes = await recorder.commit_all(items)
    else:
        outcomes = await asyncio.gather(*(recorder.commit(item) for item in items), return_exceptions=True)
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[0], DecisionOut) and isinstance(outcomes[2], DecisionOut)
    assert await store.ledger.subject_state("bad") is None
    assert (await store.ledger.subject_state("a")) is not None and (await store.ledger.subject_state("c")) is not None


class Gathering:
    """A gather window the test ends: it records each wait and holds the writer until ``close``."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.open = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await self.open.wait()


@pytest.mark.parametrize("window", [0.0, 0.005])
async def test_a_gather_window_lets_items_arriving_meanwhile_join_the_group(window: float) -> None:
    """With a window, the writer waits before taking the queue, so an item handed over meanwhile is
    written with the first; with none, the first goes alone at once."""
    groups: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        groups.append(list(items))
        return list(items)

    gathering = Gathering()
    commit = GroupCommit(write, gather=lambda: window, sleep=gathering)
    first = asyncio.ensure_future(commit.commit(1))
    for _ in range(5):  # the writer starts: it waits in the window, or writes the first
        await asyncio.sleep(0)
    second = asyncio.ensure_future(commit.commit(2))
    gathering.open.set()
    assert await asyncio.gather(first, second) == [1, 2]
    assert groups == ([[1, 2]] if window else [[1], [2]])
    assert gathering.waits == ([window] if window else [])


@pytest.mark.parametrize("yields", [0, 2])
async def test_items_already_under_way_join_the_group_when_the_writer_yields(yields: int) -> None:
    """An item whose caller is one loop turn from handing it over (a request read, being validated)
    joins the group when the writer yields first; with no yields it makes a group of its own."""
    groups: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        groups.append(list(items))
        return list(items)

    commit = GroupCommit(write, yields=yields)

    async def a_turn_away(item: int) -> int:
        await asyncio.sleep(0)
        return await commit.commit(item)

    assert await asyncio.gather(commit.commit(1), a_turn_away(2)) == [1, 2]
    assert groups == ([[1, 2]] if yields else [[1], [2]])


async def test_the_record_path_takes_decisions_already_under_way_into_its_group(
    store: Store, commits: list[int]
) -> None:
    """Under ingest load, without it, a third to half of the groups held 4 decisions or fewer."""
    gateway = Gateway(Settings(), store=store, adapters={"fake": fake_adapter()})

    async def a_turn_away(subject: str) -> DecisionOut:
        await asyncio.sleep(0)  # its request is read and being validated when the first is handed over
        return await gateway.record(decision(subject, 0, email_marketing="granted"))

    first, second = await asyncio.gather(gateway.record(decision("a", 0, email_marketing="granted")), a_turn_away("b"))
    assert first.id != second.id and len(commits) == 1, f"{len(commits)} transactions for 2 decisions"
