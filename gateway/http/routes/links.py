"""OpenAPI links: which ids an answer returns, and which operations take them next."""

from __future__ import annotations

from gateway.http.openapi import Link


def delivery_links(at: str) -> dict[str, Link]:
    """From a delivery at ``at`` (a JSON pointer into the answer) to reading and acting on it."""
    delivery = {"delivery_id": f"{at}/id"}
    return {
        "GetDelivery": Link("get_delivery", delivery),
        "ReplayDelivery": Link("replay_delivery", delivery),
        "RetryDelivery": Link("retry_delivery", delivery),
    }


def subject_links(subject_id: str) -> dict[str, Link]:
    subject = {"subject_id": subject_id}
    return {
        "GetSubject": Link("get_subject", subject),
        "GetHistory": Link("get_history", subject),
        "Repush": Link("repush", subject),
    }


def decision_links(at: str) -> dict[str, Link]:
    """From a decision at ``at`` to itself, its subject and its first delivery."""
    return {
        "GetDecision": Link("get_consent", {"decision_id": f"{at}/id"}),
        **subject_links(f"{at}/subject_id"),
        "Adopt": Link("adopt", {"subject_id": f"{at}/subject_id", "provider": f"{at}/deliveries/0/provider"}),
        **delivery_links(f"{at}/deliveries/0"),
    }


def run_links(at: str) -> dict[str, Link]:
    return {"GetRun": Link("get_run", {"run_id": f"{at}/id"})}


def backfill_links(at: str) -> dict[str, Link]:
    return {"GetBackfill": Link("get_backfill", {"backfill_id": f"{at}/id"})}


def erasure_links(at: str) -> dict[str, Link]:
    return {
        "GetErasure": Link("get_erasure", {"erasure_id": f"{at}/id"}),
        **delivery_links(f"{at}/deliveries/0"),
    }
