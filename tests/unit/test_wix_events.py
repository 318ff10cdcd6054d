"""Wix webhooks in: only a JWT signed RS256 with the configured key, unexpired, for this site, is an event;
what it says comes out in the terms of a read-back's Observation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from adapters.base import UnreadableEvent, Unverified
from adapters.wix import WixAdapter, WixSettings
from tests.wix_events import NOW, consent, event, key_pair, signed


def adapter(**settings: Any) -> WixAdapter:
    values = {"api_key": "k", "site_id": "site", "webhook_public_key": key_pair("wix")[1]} | settings
    return WixAdapter(WixSettings.model_validate(values))


def test_a_signed_revoke_is_the_term_as_read_back_would_hold_it() -> None:
    [found] = adapter().events(signed(event(), expires=NOW + timedelta(minutes=5)), {}, NOW)
    assert found.id == "event-1" and found.entity_id == "consent-1" and found.version == 3
    assert found.term == "EMAIL" and found.address == "ana@example.com"
    assert found.held == {"EMAIL": {"state": "REVOKED", "email": "ana@example.com"}}
    assert found.changed_at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # the revoke's own time
    assert not found.reportable_only


def test_a_deletion_and_an_anonymization_are_only_reported() -> None:
    [deleted] = adapter().events(signed(event("deleted")), {}, NOW)
    assert deleted.deleted and deleted.held == {} and deleted.reportable_only and deleted.address == "ana@example.com"
    bare = event("deleted", deletedEvent={"movedToTrash": False})
    [unknown] = adapter().events(signed(bare), {}, NOW)
    assert unknown.term is None and unknown.reportable_only
    [anonymized] = adapter().events(signed(event(triggeredByAnonymizeRequest=True)), {}, NOW)
    assert anonymized.anonymized and anonymized.reportable_only


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (signed(event(), key="someone-else"), "configured key"),
        (signed(event(), algorithm="HS256", key=key_pair("wix")[1]), "configured key"),  # the public key as a secret
        (signed(event(), algorithm="HS256", key="shared-secret"), "configured key"),
        (jwt.encode({"data": "{}"}, None, algorithm="none").encode(), "configured key"),
        (b"not a jwt", "configured key"),
        (signed(event(), expires=NOW - timedelta(minutes=2)), "expired"),
        (signed(event(), instance="another-site"), "another Wix site"),
        (signed(event(), claims={"data": {"not": "a string"}}), "no data"),
    ],
    ids=["other-key", "public-key-as-hmac", "hmac", "alg-none", "garbage", "expired", "other-site", "data-not-text"],
)
def test_anything_not_signed_by_the_app_for_this_site_is_unverified(body: bytes, reason: str) -> None:
    with pytest.raises(Unverified, match=reason):
        adapter().events(body, {}, NOW)


def test_a_token_expired_within_the_leeway_still_passes() -> None:
    assert adapter().events(signed(event(), expires=NOW - timedelta(seconds=30)), {}, NOW)


def test_without_a_configured_key_every_webhook_is_refused() -> None:
    with pytest.raises(Unverified, match="no webhook_public_key"):
        adapter(webhook_public_key=None).events(signed(event()), {}, NOW)


def test_the_instance_id_setting_names_the_app_instance() -> None:
    assert adapter(instance_id="app-instance-7").events(signed(event(), instance="app-instance-7"), {}, NOW)


def test_another_entitys_event_is_no_news() -> None:
    assert adapter().events(signed(event(entityFqdn="wix.contacts.v4.contact")), {}, NOW) == []
    assert adapter().events(signed(event(slug="merge")), {}, NOW) == []


def test_a_signed_event_that_cannot_be_read_is_unreadable_and_names_no_address() -> None:
    broken = consent()
    del broken["details"]
    with pytest.raises(UnreadableEvent) as refused:
        adapter().events(signed(event(entity=broken)), {}, NOW)
    assert "details" in str(refused.value) and "example.com" not in str(refused.value).lower()


def test_a_configured_key_must_be_an_rsa_public_key() -> None:
    with pytest.raises(ValueError, match="RSA public key"):
        adapter(webhook_public_key=key_pair("wix")[0])
    with pytest.raises(ValueError):
        adapter(webhook_public_key="not a pem")
