"""The Wix adapter's flows, driven against canned answers and against the Wix simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.base import Ack, Projection, drive, sender
from adapters.errors import LocalValidationError, PermanentError, ProviderError, TransientError
from adapters.simulators.common import Faults
from adapters.simulators.wix import create_app
from adapters.wix import CONSENTS, WixAdapter, WixSettings
from schemas.consent import PurposeRecord, PurposeState, SubjectState
from tests.adapters.canned import Canned, run
from tests.adapters.contract import AdapterContract, Scenario

API_KEY = "IST.wix-api-key-that-must-never-leak"
BASE = "https://www.wixapis.com"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ANA = "ana@example.com"
PHONE = "+14155550100"


@pytest.fixture
def adapter() -> WixAdapter:
    return WixAdapter(WixSettings(api_key=SecretStr(API_KEY), site_id="site-1"))


def subject(
    email: str | None = ANA,
    phone: str | None = None,
    *,
    source: str = "web",
    note: str | None = None,
    **purposes: str,
) -> SubjectState:
    records = {name: PurposeRecord(state=PurposeState(value), occurred_at=WHEN) for name, value in purposes.items()}
    return SubjectState(
        subject_id="s1",
        email=email,
        phone=phone,
        purposes=records,
        source=source,
        note=note,
        occurred_at=WHEN,
    )


def stored(consent_id: str = "c1", revision: str = "1", state: str = "CONFIRMED", **details: str) -> dict[str, Any]:
    """A consent as Wix answers it."""
    return {
        "id": consent_id,
        "revision": revision,
        "details": details or {"type": "EMAIL", "email": ANA},
        "state": state,
        "lastConfirmationActivity": {"source": "FORM", "optInLevel": "SINGLE_CONFIRMATION"},
        "createdDate": "2024-01-01T00:00:00.000Z",
    }


def answer(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


class FakeWix(Canned):
    """Answers only what it is scripted to: a request past the script is a test's mistake."""

    def otherwise(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no answer scripted for {request.method} {request.url.path}")

    def sent(self, index: int) -> Any:
        return json.loads(self.requests[index].content)


async def push(
    adapter: WixAdapter,
    wix: FakeWix,
    state: SubjectState,
    previous: Projection | None = None,
    memo: Mapping[str, Any] | None = None,
) -> Ack:
    return await run(adapter, adapter.push(state, previous or {}, memo or {}), wix, BASE)


GET_BY = f"{CONSENTS}/get-by"
UPSERT = f"{CONSENTS}/upsert"
C1 = f"{CONSENTS}/c1"
CONFIRMED = {"EMAIL": {"state": "CONFIRMED", "email": ANA}}
KNOWN = {"EMAIL": {"id": "c1", "revision": "3"}}
CONFIRMATION = {"source": "FORM", "updatedDate": "2024-05-01T12:00:00Z", "optInLevel": "SINGLE_CONFIRMATION"}


# --- projection -------------------------------------------------------------------------------


def test_project_maps_channels(adapter: WixAdapter) -> None:
    state = subject(phone=PHONE, email_marketing="granted", sms_marketing="pending", analytics="denied")
    assert adapter.project(state) == {
        "EMAIL": {"state": "CONFIRMED", "email": ANA},
        "PHONE": {"state": "PENDING", "phone": PHONE},
    }


def test_project_is_most_restrictive_per_channel() -> None:
    settings = WixSettings(
        api_key=SecretStr(API_KEY),
        site_id="s",
        purposes={"email_marketing": "EMAIL", "link_tracking": "EMAIL"},
    )
    adapter = WixAdapter(settings)
    assert adapter.project(subject(email_marketing="granted", link_tracking="denied"))["EMAIL"]["state"] == "REVOKED"
    assert adapter.project(subject(email_marketing="granted", link_tracking="pending"))["EMAIL"]["state"] == "PENDING"


def test_project_nothing_mapped(adapter: WixAdapter) -> None:
    assert adapter.project(subject(analytics="granted")) == {}


def test_settings_accept_only_wix_channels() -> None:
    with pytest.raises(ValueError, match="not SMS"):
        WixSettings(api_key=SecretStr(API_KEY), site_id="s", purposes={"sms_marketing": "SMS"})
    assert WixSettings(api_key=SecretStr(API_KEY), site_id="s").base_url == BASE


# --- first sync -------------------------------------------------------------------------------


async def test_first_sync_upserts_when_get_by_finds_nothing(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404, {"message": "not found"}), answer(200, {"marketingConsent": stored(revision="1")}))
    ack = await push(adapter, wix, subject(email_marketing="granted"))
    assert wix.calls == [("GET", GET_BY), ("POST", UPSERT)]
    assert dict(wix.requests[0].url.params) == {"type": "EMAIL", "email": ANA}
    assert wix.sent(1) == {
        "marketingConsent": {
            "details": {"type": "EMAIL", "email": ANA},
            "state": "CONFIRMED",
            "lastConfirmationActivity": CONFIRMATION,
        }
    }
    assert ack == Ack(acknowledged=CONFIRMED, memo={"EMAIL": {"id": "c1", "revision": "1"}})


async def test_pending_is_a_double_opt_in_upsert(adapter: WixAdapter) -> None:
    wix = FakeWix(
        answer(404),
        answer(200, {"marketingConsent": stored(state="PENDING"), "link": {"type": "CONFIRMATION"}}),
    )
    await push(adapter, wix, subject(email_marketing="pending", source="in_person", note="at the till"))
    assert wix.sent(1)["marketingConsent"] == {
        "details": {"type": "EMAIL", "email": ANA},
        "state": "PENDING",
        "lastConfirmationActivity": {
            "source": "IN_PERSON",
            "description": "at the till",
            "updatedDate": "2024-05-01T12:00:00Z",
            "optInLevel": "DOUBLE_CONFIRMATION",
        },
    }


async def test_first_sync_patches_the_consent_found_by_address(adapter: WixAdapter) -> None:
    wix = FakeWix(
        answer(200, {"marketingConsent": stored(revision="4"), "communicationEligibility": {"granted": True}}),
        answer(200, {"marketingConsent": stored(revision="5")}),
    )
    ack = await push(adapter, wix, subject(email_marketing="granted"))
    assert wix.calls == [("GET", GET_BY), ("PATCH", C1)]
    assert wix.sent(1)["marketingConsent"]["revision"] == "4"
    assert ack.memo == {"EMAIL": {"id": "c1", "revision": "5"}}


async def test_phone_is_looked_up_by_phone(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": stored(type="PHONE", phone=PHONE)}))
    await push(adapter, wix, subject(email=None, phone=PHONE, sms_marketing="granted"))
    assert dict(wix.requests[0].url.params) == {"type": "PHONE", "phone": PHONE}
    assert b"%2B14155550100" in wix.requests[0].url.raw_path  # "+" would read as a space


# --- known consent ----------------------------------------------------------------------------


async def test_known_consent_is_patched_with_mask_and_revision(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(200, {"marketingConsent": stored(revision="4", state="REVOKED")}))
    state = subject(email_marketing="denied", source="import", note="CSV backfill")
    ack = await push(adapter, wix, state, CONFIRMED, KNOWN)
    assert wix.calls == [("PATCH", C1)]
    assert wix.sent(0) == {
        "marketingConsent": {
            "details": {"type": "EMAIL", "email": ANA},
            "state": "REVOKED",
            "lastRevokeActivity": {
                "source": "OTHER",
                "description": "CSV backfill",
                "updatedDate": "2024-05-01T12:00:00Z",
            },
            "id": "c1",
            "revision": "3",
        },
        "mask": {"paths": ["state", "lastRevokeActivity"]},
    }
    assert ack == Ack(
        acknowledged={"EMAIL": {"state": "REVOKED", "email": ANA}},
        memo={"EMAIL": {"id": "c1", "revision": "4"}},
    )


async def test_stale_revision_is_reread_once(adapter: WixAdapter) -> None:
    stale = answer(409, {"message": "entity has already changed since the requested revision"})
    wix = FakeWix(
        stale,
        answer(200, {"marketingConsent": stored(revision="7")}),
        answer(200, {"marketingConsent": stored(revision="8")}),
    )
    ack = await push(adapter, wix, subject(email_marketing="denied"), CONFIRMED, KNOWN)
    assert wix.calls == [("PATCH", C1), ("GET", C1), ("PATCH", C1)]
    assert wix.sent(0)["marketingConsent"]["revision"] == "3"
    assert wix.sent(2)["marketingConsent"]["revision"] == "7"
    assert ack.memo == {"EMAIL": {"id": "c1", "revision": "8"}}


async def test_second_stale_revision_is_transient(adapter: WixAdapter) -> None:
    stale = {"message": "entity has already changed since the requested revision"}
    wix = FakeWix(answer(409, stale), answer(200, {"marketingConsent": stored(revision="7")}), answer(409, stale))
    with pytest.raises(TransientError, match="already changed") as raised:
        await push(
            adapter,
            wix,
            subject(email_marketing="denied"),
            CONFIRMED,
            KNOWN,
        )
    assert raised.value.status_code == 409
    assert len(wix.requests) == 3


async def test_consent_deleted_at_wix_is_synced_again(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404), answer(404), answer(200, {"marketingConsent": stored("c2", revision="1")}))
    ack = await push(adapter, wix, subject(email_marketing="denied"), CONFIRMED, KNOWN)
    assert wix.calls == [("PATCH", C1), ("GET", GET_BY), ("POST", UPSERT)]
    assert ack.memo == {"EMAIL": {"id": "c2", "revision": "1"}}


async def test_new_address_is_another_consent(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": stored("c2", type="EMAIL", email="new@example.com")}))
    await push(
        adapter,
        wix,
        subject("new@example.com", email_marketing="granted"),
        CONFIRMED,
        KNOWN,
    )
    assert wix.calls == [("GET", GET_BY), ("POST", UPSERT)]


async def test_unchanged_channel_sends_nothing(adapter: WixAdapter) -> None:
    ack = await push(adapter, FakeWix(), subject(email_marketing="granted"), CONFIRMED, KNOWN)
    assert ack == Ack(acknowledged=CONFIRMED, memo=KNOWN)


async def test_only_the_changed_channel_is_sent(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": stored("p1", type="PHONE", phone=PHONE)}))
    state = subject(phone=PHONE, email_marketing="granted", sms_marketing="granted")
    ack = await push(adapter, wix, state, CONFIRMED, KNOWN)
    assert dict(wix.requests[0].url.params)["type"] == "PHONE" and len(wix.requests) == 2
    assert ack.memo == {"EMAIL": {"id": "c1", "revision": "3"}, "PHONE": {"id": "p1", "revision": "1"}}


# --- local validation -------------------------------------------------------------------------


async def test_broken_rule_sends_nothing(adapter: WixAdapter) -> None:
    wix = FakeWix()
    with pytest.raises(LocalValidationError, match="E.164"):
        await push(adapter, wix, subject(email=None, phone="4155550100", sms_marketing="denied"))
    assert wix.requests == []


async def test_a_channel_without_an_address_is_not_applicable_and_never_blocks_the_other(adapter: WixAdapter) -> None:
    state = subject(phone=None, email_marketing="granted", sms_marketing="granted")
    assert adapter.not_applicable(state) == {"PHONE": "the subject has no phone"}
    assert list(adapter.project(state)) == ["EMAIL"]
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": stored("c1")}))
    ack = await push(adapter, wix, state)
    assert [dict(r.url.params).get("type") for r in wix.requests] == ["EMAIL", None]
    assert list(ack.acknowledged) == ["EMAIL"]


async def test_a_subject_with_no_address_at_all_sends_nothing(adapter: WixAdapter) -> None:
    state = subject(email=None, email_marketing="granted", sms_marketing="denied")
    assert adapter.project(state) == {}
    assert adapter.not_applicable(state) == {"EMAIL": "the subject has no email", "PHONE": "the subject has no phone"}
    wix = FakeWix()
    assert (await push(adapter, wix, state)).acknowledged == {} and wix.requests == []


# --- errors and secrets -----------------------------------------------------------------------


VALIDATION = {
    "message": "Invalid request",
    "details": {
        "validationError": {
            "fieldViolations": [
                {
                    "field": "marketingConsent.details.email",
                    "description": "must be a valid email",
                    "violatedRule": "FORMAT",
                }
            ]
        }
    },
}
APPLICATION = {
    "message": "Permission denied",
    "details": {"applicationError": {"code": "PERMISSION_DENIED", "description": "missing CONSENT-MANAGE", "data": {}}},
}


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            400,
            VALIDATION,
            PermanentError,
            "Invalid request; marketingConsent.details.email: must be a valid email",
        ),
        (403, APPLICATION, PermanentError, "Permission denied; PERMISSION_DENIED: missing CONSENT-MANAGE"),
        (428, {"message": "precondition failed"}, PermanentError, "precondition failed"),
        (429, {"message": "resource exhausted"}, TransientError, "resource exhausted"),
        (503, None, TransientError, "Service Unavailable"),  # system errors have an empty body
    ],
)
async def test_wix_errors_are_classified_with_their_text(
    adapter: WixAdapter, status: int, body: Any, error: type[ProviderError], text: str
) -> None:
    with pytest.raises(error) as raised:
        await push(adapter, FakeWix(answer(status, body)), subject(email_marketing="granted"))
    assert type(raised.value) is error
    assert raised.value.message == text and raised.value.status_code == status


async def test_answer_without_revision_is_permanent(adapter: WixAdapter) -> None:
    broken = {key: value for key, value in stored().items() if key != "revision"}
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": broken}))
    with pytest.raises(PermanentError, match="unexpected answer: marketingConsent.revision"):
        await push(adapter, wix, subject(email_marketing="granted"))


async def test_auth_headers(adapter: WixAdapter) -> None:
    wix = FakeWix(answer(404), answer(200, {"marketingConsent": stored()}))
    await push(adapter, wix, subject(email_marketing="granted"))
    for request in wix.requests:
        assert request.headers["Authorization"] == API_KEY  # no "Bearer"
        assert request.headers["wix-site-id"] == "site-1"


async def test_no_secret_in_errors_or_reprs(adapter: WixAdapter) -> None:
    errors: list[Exception] = []
    for state, responses in [
        (subject(email_marketing="granted"), [answer(401, {"message": "unauthenticated"})]),
        (subject(email=None, phone="4155550100", sms_marketing="granted"), []),
    ]:
        with pytest.raises(ProviderError) as raised:
            await push(adapter, FakeWix(*responses), state)
        errors.append(raised.value)
    for shown in [*errors, adapter.settings, adapter.auth()]:
        assert API_KEY not in str(shown) and API_KEY not in repr(shown)
    assert adapter.secrets() == [API_KEY]


# --- contract: the adapter against the Wix simulator ------------------------------------------


class Simulated:
    """The Wix simulator over ASGI: push through the adapter, then read its state and request log."""

    def __init__(self, adapter: WixAdapter, faults: Faults | None = None) -> None:
        self.adapter = adapter
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(faults)), base_url=BASE, auth=adapter.auth()
        )

    async def push(self, state: SubjectState, ack: Ack | None = None) -> Ack:
        previous, memo = (ack.acknowledged, ack.memo) if ack else ({}, {})
        return await drive(self.adapter.push(state, previous, memo), sender(self.client))

    async def inspect(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.client.get("/_inspect")).json()
        return body

    async def consent(self) -> dict[str, Any]:
        (only,) = (await self.inspect())["state"]["consents"].values()
        return dict(only)

    async def calls(self) -> list[tuple[str, str, int]]:
        requests = (await self.inspect())["requests"]
        return [(item["method"], item["path"], item["status"]) for item in requests]


@pytest.fixture
async def simulated(adapter: WixAdapter) -> AsyncIterator[Simulated]:
    simulated = Simulated(adapter)
    yield simulated
    await simulated.client.aclose()


async def test_simulator_first_sync_upserts(simulated: Simulated) -> None:
    ack = await simulated.push(subject(email_marketing="granted", note="newsletter box"))
    consent = await simulated.consent()
    assert await simulated.calls() == [("GET", GET_BY, 404), ("POST", UPSERT, 200)]
    assert consent["state"] == "CONFIRMED" and consent["details"] == {"type": "EMAIL", "email": ANA}
    assert consent["lastConfirmationActivity"] == {**CONFIRMATION, "description": "newsletter box"}
    assert ack == Ack(acknowledged=CONFIRMED, memo={"EMAIL": {"id": consent["id"], "revision": "1"}})
    assert (await simulated.inspect())["requests"][0]["headers"]["wix-site-id"] == "site-1"


async def test_simulator_later_push_patches_at_the_revision(simulated: Simulated) -> None:
    first = await simulated.push(subject(email_marketing="granted"))
    ack = await simulated.push(subject(email_marketing="pending"), first)
    consent = await simulated.consent()
    (patch,) = (await simulated.inspect())["requests"][2:]
    assert (patch["method"], patch["status"]) == ("PATCH", 200)
    assert patch["body"]["marketingConsent"]["revision"] == "1"
    assert patch["body"]["mask"] == {"paths": ["state", "lastConfirmationActivity"]}
    assert consent["state"] == "PENDING" and consent["lastConfirmationActivity"]["optInLevel"] == "DOUBLE_CONFIRMATION"
    assert consent["revision"] == "2" and ack.memo == {"EMAIL": {"id": consent["id"], "revision": "2"}}


async def test_simulator_stale_revision_is_reread(simulated: Simulated) -> None:
    first = await simulated.push(subject(email_marketing="granted"))
    consent_id = first.memo["EMAIL"]["id"]
    # Someone else writes first: the person unsubscribes through a Wix link (revision 1 → 2).
    revoked = {
        "details": {"type": "EMAIL", "email": ANA},
        "state": "REVOKED",
        "lastRevokeActivity": {"source": "REVOKE_LINK"},
    }
    answered = await simulated.client.post(UPSERT, json={"marketingConsent": revoked})
    assert answered.json()["marketingConsent"]["revision"] == "2"
    ack = await simulated.push(subject(email_marketing="pending"), first)
    assert (await simulated.calls())[-3:] == [
        ("PATCH", f"{CONSENTS}/{consent_id}", 409),
        ("GET", f"{CONSENTS}/{consent_id}", 200),
        ("PATCH", f"{CONSENTS}/{consent_id}", 200),
    ]
    consent = await simulated.consent()
    assert consent["state"] == "PENDING" and consent["revision"] == "3"
    assert ack.memo == {"EMAIL": {"id": consent_id, "revision": "3"}}


async def test_simulator_revoke(simulated: Simulated) -> None:
    first = await simulated.push(subject(email_marketing="granted"))
    ack = await simulated.push(subject(email_marketing="denied", source="provider:masivo", note="opted out"), first)
    consent = await simulated.consent()
    assert consent["state"] == "REVOKED"
    assert consent["lastRevokeActivity"] == {
        "source": "OTHER",
        "description": "opted out",
        "updatedDate": "2024-05-01T12:00:00Z",
    }
    assert ack.acknowledged == {"EMAIL": {"state": "REVOKED", "email": ANA}}
    found = await simulated.client.get(GET_BY, params={"type": "EMAIL", "email": ANA})
    assert found.json()["communicationEligibility"]["granted"] is False


async def test_simulator_consent_made_elsewhere_is_found_and_patched(simulated: Simulated) -> None:
    made = {"details": {"type": "PHONE", "phone": PHONE}, "state": "NEVER_CONFIRMED"}
    assert (await simulated.client.post(UPSERT, json={"marketingConsent": made})).status_code == 200
    ack = await simulated.push(subject(email=None, phone=PHONE, sms_marketing="granted"))
    consent = await simulated.consent()
    assert [call[0] for call in (await simulated.calls())[1:]] == ["GET", "PATCH"]
    assert consent["state"] == "CONFIRMED" and ack.memo["PHONE"] == {"id": consent["id"], "revision": "2"}


async def test_simulator_outage_is_transient(adapter: WixAdapter) -> None:
    simulated = Simulated(adapter, Faults.model_validate({"error_rate": 1, "status": 503}))
    with pytest.raises(TransientError, match="Service Unavailable"):
        await simulated.push(subject(email_marketing="granted"))
    await simulated.client.aclose()


# --- the shared contract, against the simulator and the shipped cassettes ---------------------


class TestWixContract(AdapterContract):
    provider = "wix"
    purposes = ("email_marketing", "sms_marketing")

    async def test_patch_at_revision(self, world: Scenario) -> None:
        """A known consent is PATCHed at the revision Wix last answered, with a field mask."""
        first = await world.push(self.state())
        ack = await world.push(self.state(first="denied", second="granted"), first)
        assert ack.memo["EMAIL"]["revision"] == "2"

    async def test_stale_revision_409(self, world: Scenario) -> None:
        """Someone else changed the consent since: 409, the consent is read again and PATCHed at its revision."""
        first = await world.push(self.state())
        await world.behind(self.state(first="denied"))
        ack = await world.push(self.state(first="pending"), first)
        assert ack.memo["EMAIL"]["revision"] == "3"

    async def test_deleted_at_wix_404(self, world: Scenario) -> None:
        """The consent was deleted at Wix: the PATCH answers 404 and the channel is synced as on a first push."""
        first = await world.push(self.state())
        await world.control("DELETE", f"/marketing-consent/v1/marketing-consent/{first.memo['EMAIL']['id']}")
        ack = await world.push(self.state(first="denied"), first)
        assert ack.memo["EMAIL"]["revision"] == "1"

    async def test_found_by_address(self, world: Scenario) -> None:
        """A consent made elsewhere for the same address is found by it and PATCHed, not created again."""
        await world.behind(self.state(first="denied", second="denied"))
        ack = await world.push(self.state())
        assert ack.memo["EMAIL"]["revision"] == "2"

    async def test_invalid_email_400(self, world: Scenario) -> None:
        """Wix refuses an address that is not an email: 400 with a field violation, permanent."""
        with pytest.raises(PermanentError, match="email: must be an email address") as raised:
            await world.push(self.state(email="ada.example.com"))
        assert raised.value.status_code == 400

    async def test_precondition_428(self, world: Scenario) -> None:
        """Wix answers 428 Precondition Required: permanent."""
        await world.faults(error_rate=1, status=428)
        await self.fails(world, PermanentError, 428)
