"""The Wix simulator against the docs: auth, rules, revisions and 409s, masks, the UNKNOWN_STATE no-op."""

from __future__ import annotations

from types import EllipsisType
from typing import Any

import httpx
import pytest

from adapters.simulators.wix import BASE_PATH, BULK_UPSERT, STALE_REVISION, create_app
from tests.simulators.helpers import ClientFactory

API_KEY = "IST.wix-api-key-0123456789"
AUTH = {"Authorization": API_KEY, "wix-site-id": "site-1"}
CONFIRM = {"source": "FORM", "optInLevel": "SINGLE_CONFIRMATION"}
DOUBLE = {"source": "FORM", "optInLevel": "DOUBLE_CONFIRMATION"}
REVOKE = {"source": "REVOKE_LINK"}


def email_consent(
    state: str | EllipsisType = "CONFIRMED", email: str = "ana@example.com", **fields: Any
) -> dict[str, Any]:
    consent: dict[str, Any] = {"details": {"type": "EMAIL", "email": email}, "state": state}
    if state == "CONFIRMED":
        consent["lastConfirmationActivity"] = CONFIRM
    consent.update(fields)
    return {key: value for key, value in consent.items() if value is not ...}


@pytest.fixture
def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(create_app(), headers=AUTH)


async def upsert(client: httpx.AsyncClient, consent: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": consent})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def patch(client: httpx.AsyncClient, consent_id: str, body: dict[str, Any]) -> httpx.Response:
    return await client.patch(f"{BASE_PATH}/{consent_id}", json=body)


def violated_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    violations = response.json()["details"]["validationError"]["fieldViolations"]
    assert all(set(item) == {"field", "description", "violatedRule", "ruleName"} for item in violations)
    return [item["field"] for item in violations]


# --- auth --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": API_KEY}, 401),  # an API key needs wix-site-id
        ({"Authorization": API_KEY, "wix-site-id": " "}, 401),
        ({"Authorization": API_KEY, "wix-site-id": "site-1"}, 404),
        ({"Authorization": "Bearer oauth-access-token"}, 404),  # an OAuth token carries its own site
    ],
)
async def test_auth(make_client: ClientFactory, headers: dict[str, str], status: int) -> None:
    response = await make_client(create_app(), headers=headers).get(f"{BASE_PATH}/get-by?type=EMAIL&email=a@b.co")
    assert response.status_code == status
    if status == 401:
        assert response.json()["details"]["applicationError"]["code"] == "UNAUTHENTICATED"


# --- upsert and the documented rules -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("consent", "field"),
    [
        (None, "marketingConsent"),
        (email_consent(details=...), "marketingConsent.details"),
        (email_consent(details={"type": "UNKNOWN_TYPE", "email": "a@b.co"}), "marketingConsent.details.type"),
        (email_consent(details={"type": "EMAIL"}), "marketingConsent.details.email"),
        (email_consent(details={"type": "EMAIL", "email": "not-an-email"}), "marketingConsent.details.email"),
        (
            email_consent(details={"type": "EMAIL", "email": "a@b.co", "phone": "+14155550100"}),
            "marketingConsent.details.phone",
        ),
        (email_consent(details={"type": "PHONE", "phone": "0612345678"}), "marketingConsent.details.phone"),
        (email_consent(details={"type": "PHONE", "phone": "+0123456"}), "marketingConsent.details.phone"),
        (email_consent(state=...), "marketingConsent.state"),
        (email_consent(state="OPTED_IN"), "marketingConsent.state"),
        (
            email_consent(state="CONFIRMED", lastConfirmationActivity=...),
            "marketingConsent.lastConfirmationActivity",
        ),
        (email_consent(state="PENDING"), "marketingConsent.lastConfirmationActivity"),
        (email_consent(state="PENDING", lastConfirmationActivity=CONFIRM), "marketingConsent.state"),
        (email_consent(state="REVOKED"), "marketingConsent.lastRevokeActivity"),
        (
            email_consent(lastConfirmationActivity={"source": "REVOKE_LINK"}),
            "marketingConsent.lastConfirmationActivity.source",
        ),
        (
            email_consent(lastConfirmationActivity={"source": "FORM", "optInLevel": "TRIPLE"}),
            "marketingConsent.lastConfirmationActivity.optInLevel",
        ),
        (
            email_consent(state="REVOKED", lastRevokeActivity={"source": "LINK_CONFIRMATION"}),
            "marketingConsent.lastRevokeActivity.source",
        ),
        (email_consent(extendedFields={"namespaces": []}), "marketingConsent.extendedFields"),
    ],
)
async def test_upsert_rejects_rule_violations(client: httpx.AsyncClient, consent: Any, field: str) -> None:
    response = await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": consent})
    assert field in violated_fields(response)


@pytest.mark.parametrize(
    "consent",
    [
        email_consent(),
        email_consent(state="NEVER_CONFIRMED"),
        email_consent(state="UNKNOWN_STATE"),  # allowed when creating
        email_consent(state="REVOKED", lastRevokeActivity=REVOKE),
        email_consent(state="PENDING", lastConfirmationActivity=DOUBLE),
        email_consent(details={"type": "PHONE", "phone": "+14155550100"}),
        email_consent(extendedFields={"namespaces": {"_user_fields": {"tier": "gold"}}}),
    ],
)
async def test_upsert_accepts_valid_consents(client: httpx.AsyncClient, consent: dict[str, Any]) -> None:
    entity = (await upsert(client, consent))["marketingConsent"]
    assert entity["revision"] == "1"
    assert entity["state"] == consent["state"]
    assert entity["createdDate"] == entity["updatedDate"]
    assert (await client.get(f"{BASE_PATH}/{entity['id']}")).json() == {"marketingConsent": entity}


async def test_upsert_updates_the_one_consent_per_email(client: httpx.AsyncClient) -> None:
    first = (await upsert(client, email_consent(state="NEVER_CONFIRMED")))["marketingConsent"]
    second = (await upsert(client, email_consent(email="ANA@example.com")))["marketingConsent"]
    assert second["id"] == first["id"]
    assert (second["state"], second["revision"]) == ("CONFIRMED", "2")
    listed = (await client.post(f"{BASE_PATH}/query", json={"query": {}})).json()["marketingConsent"]
    assert len(listed) == 1


async def test_double_opt_in_gets_a_confirmation_link_then_confirms(client: httpx.AsyncClient) -> None:
    answer = await upsert(client, email_consent(state="PENDING", lastConfirmationActivity=DOUBLE))
    assert answer["link"]["type"] == "CONFIRMATION"
    assert "/_manage-consent/subscribe?token=" in answer["link"]["url"]
    entity = answer["marketingConsent"]
    confirmed = await patch(
        client,
        entity["id"],
        {"marketingConsent": email_consent(revision=entity["revision"]), "mask": {"paths": ["state"]}},
    )
    assert (
        confirmed.json()["marketingConsent"]["state"],
        confirmed.json()["marketingConsent"]["revision"],
    ) == (
        "CONFIRMED",
        "2",
    )
    assert "link" not in await upsert(client, email_consent())


# --- create, get, get-by, remove, delete -------------------------------------------------------------
async def test_create_always_confirms_and_refuses_duplicates(client: httpx.AsyncClient) -> None:
    body = {"marketingConsent": email_consent(state="NEVER_CONFIRMED", lastConfirmationActivity=CONFIRM)}
    created = await client.post(BASE_PATH, json=body)
    assert created.json()["marketingConsent"]["state"] == "CONFIRMED"
    duplicate = await client.post(BASE_PATH, json=body)
    assert duplicate.status_code == 409
    assert duplicate.json()["details"]["applicationError"]["code"] == "ALREADY_EXISTS"
    needs_activity = await client.post(
        BASE_PATH,
        json={"marketingConsent": email_consent(email="c@example.com", lastConfirmationActivity=...)},
    )
    assert "marketingConsent.lastConfirmationActivity" in violated_fields(needs_activity)


async def test_get_unknown_consent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{BASE_PATH}/nope?marketingConsentId=nope")
    assert response.status_code == 404
    assert response.json()["details"]["applicationError"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("details", "state", "activity", "granted"),
    [
        ({"type": "EMAIL", "email": "a@b.co"}, "CONFIRMED", {"lastConfirmationActivity": CONFIRM}, True),
        ({"type": "EMAIL", "email": "a@b.co"}, "NEVER_CONFIRMED", {}, True),
        ({"type": "PHONE", "phone": "+14155550100"}, "NEVER_CONFIRMED", {}, False),
        (
            {"type": "PHONE", "phone": "+14155550100"},
            "CONFIRMED",
            {"lastConfirmationActivity": CONFIRM},
            True,
        ),
        ({"type": "EMAIL", "email": "a@b.co"}, "REVOKED", {"lastRevokeActivity": REVOKE}, False),
        ({"type": "EMAIL", "email": "a@b.co"}, "PENDING", {"lastConfirmationActivity": DOUBLE}, False),
    ],
)
async def test_get_by_identifier_reports_eligibility(
    client: httpx.AsyncClient, details: dict[str, str], state: str, activity: dict[str, Any], granted: bool
) -> None:
    await upsert(client, {"details": details, "state": state, **activity})
    response = await client.get(f"{BASE_PATH}/get-by", params=details)
    assert response.json()["marketingConsent"]["state"] == state
    assert response.json()["communicationEligibility"] == {"granted": granted, "reason": state}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"email": "a@b.co"}, 400),
        ({"type": "EMAIL"}, 400),
        ({"type": "PHONE", "phone": "12"}, 400),
        ({}, 400),
    ],
)
async def test_get_by_identifier_validates_the_query(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    response = await client.get(f"{BASE_PATH}/get-by", params=params)
    assert response.status_code == status


async def test_remove_revokes_and_keeps_the_consent(client: httpx.AsyncClient) -> None:
    entity = (await upsert(client, email_consent()))["marketingConsent"]
    details = entity["details"]
    removed = await client.post(f"{BASE_PATH}/remove", json={"details": details, "lastRevokeActivity": REVOKE})
    assert removed.json()["marketingConsent"]["state"] == "REVOKED"
    kept = (await client.get(f"{BASE_PATH}/{entity['id']}")).json()["marketingConsent"]
    assert (kept["state"], kept["revision"], kept["lastRevokeActivity"]) == ("REVOKED", "2", REVOKE)
    no_activity = await client.post(f"{BASE_PATH}/remove", json={"details": details})
    assert violated_fields(no_activity) == ["lastRevokeActivity"]
    other = {"details": {"type": "EMAIL", "email": "x@y.co"}, "lastRevokeActivity": REVOKE}
    assert (await client.post(f"{BASE_PATH}/remove", json=other)).status_code == 404


async def test_delete_removes_the_consent_and_frees_the_identifier(client: httpx.AsyncClient) -> None:
    entity = (await upsert(client, email_consent()))["marketingConsent"]
    assert (await client.delete(f"{BASE_PATH}/{entity['id']}")).status_code == 200
    assert (await client.get(f"{BASE_PATH}/{entity['id']}")).status_code == 404
    assert (await client.delete(f"{BASE_PATH}/{entity['id']}")).status_code == 404
    assert (await client.post(BASE_PATH, json={"marketingConsent": email_consent()})).status_code == 200


# --- update: revisions, masks, UNKNOWN_STATE ---------------------------------------------------------
@pytest.mark.parametrize("stale", [1, "1"])
async def test_update_with_a_stale_revision_is_409(client: httpx.AsyncClient, stale: int | str) -> None:
    entity = (await upsert(client, email_consent(state="NEVER_CONFIRMED")))["marketingConsent"]
    await upsert(client, email_consent())  # revision 2 now
    body = {"marketingConsent": email_consent(state="REVOKED", lastRevokeActivity=REVOKE, revision=stale)}
    response = await patch(client, entity["id"], {**body, "mask": {"paths": ["state", "lastRevokeActivity"]}})
    assert response.status_code == 409
    assert response.json()["message"] == STALE_REVISION


@pytest.mark.parametrize("current", [2, "2", None], ids=["int-as-in-the-doc-example", "string", "omitted"])
async def test_update_with_the_current_revision_applies(client: httpx.AsyncClient, current: int | str | None) -> None:
    entity = (await upsert(client, email_consent(state="NEVER_CONFIRMED")))["marketingConsent"]
    await upsert(client, email_consent())
    consent = email_consent(state="REVOKED", lastRevokeActivity=REVOKE, revision=current if current else ...)
    response = await patch(client, entity["id"], {"marketingConsent": consent, "mask": ["state", "lastRevokeActivity"]})
    assert response.status_code == 200, response.text
    assert (
        response.json()["marketingConsent"]["state"],
        response.json()["marketingConsent"]["revision"],
    ) == (
        "REVOKED",
        "3",
    )


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (
            ["extendedFields"],
            {
                "state": "CONFIRMED",
                "lastConfirmationActivity": CONFIRM,
                "extendedFields": {"namespaces": {"a": {"b": 1}}},
            },
        ),
        (
            ["state", "lastRevokeActivity"],
            {"state": "REVOKED", "lastConfirmationActivity": CONFIRM, "lastRevokeActivity": REVOKE},
        ),
        (
            ["lastConfirmationActivity.description"],
            {"state": "CONFIRMED", "lastConfirmationActivity": {**CONFIRM, "description": "kiosk"}},
        ),
        (
            None,
            {
                "state": "REVOKED",
                "lastConfirmationActivity": {"source": "IN_PERSON", "description": "kiosk"},
                "lastRevokeActivity": REVOKE,
                "extendedFields": {"namespaces": {"a": {"b": 1}}},
            },
        ),
    ],
    ids=["extended-fields-only", "state-and-revoke", "one-sub-field", "mask-less-sdk-update"],
)
async def test_update_mask_limits_what_changes(
    client: httpx.AsyncClient, paths: list[str] | None, expected: dict[str, Any]
) -> None:
    entity = (await upsert(client, email_consent()))["marketingConsent"]
    sent = email_consent(
        state="REVOKED",
        lastRevokeActivity=REVOKE,
        lastConfirmationActivity={"source": "IN_PERSON", "description": "kiosk"},
        extendedFields={"namespaces": {"a": {"b": 1}}},
    )
    body: dict[str, Any] = (
        {"marketingConsent": sent} if paths is None else {"marketingConsent": sent, "mask": {"paths": paths}}
    )
    response = await patch(client, entity["id"], body)
    assert response.status_code == 200, response.text
    updated = response.json()["marketingConsent"]
    assert {key: updated[key] for key in expected} == expected
    assert set(updated) - set(expected) == {"id", "revision", "details", "createdDate", "updatedDate"}


async def test_update_to_unknown_state_is_ignored_for_email_only(client: httpx.AsyncClient) -> None:
    email = (await upsert(client, email_consent()))["marketingConsent"]
    unchanged = await patch(
        client,
        email["id"],
        {"marketingConsent": email_consent(state="UNKNOWN_STATE"), "mask": {"paths": ["state"]}},
    )
    assert unchanged.status_code == 200
    assert (
        unchanged.json()["marketingConsent"]["state"],
        unchanged.json()["marketingConsent"]["revision"],
    ) == (
        "CONFIRMED",
        "1",
    )
    phone_details = {"type": "PHONE", "phone": "+14155550100"}
    phone = (await upsert(client, email_consent(details=phone_details)))["marketingConsent"]
    body = {
        "marketingConsent": {"details": phone_details, "state": "UNKNOWN_STATE"},
        "mask": {"paths": ["state"]},
    }
    assert (await patch(client, phone["id"], body)).json()["marketingConsent"]["state"] == "UNKNOWN_STATE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mask": {"paths": ["state"]}}, "marketingConsent"),
        (
            {"marketingConsent": {"state": "REVOKED"}, "mask": {"paths": ["state"]}},
            "marketingConsent.details",
        ),
        ({"marketingConsent": email_consent(id="other-id")}, "marketingConsent.id"),
        ({"marketingConsent": email_consent(), "mask": {"paths": ["details.email"]}}, "mask.paths"),
        ({"marketingConsent": email_consent(), "mask": {"paths": "state"}}, "mask.paths"),
        (
            {"marketingConsent": email_consent(state=...), "mask": {"paths": ["state"]}},
            "marketingConsent.state",
        ),
        ({"marketingConsent": email_consent(revision="three")}, "marketingConsent.revision"),
        ({"marketingConsent": email_consent(email="someone@else.co")}, "marketingConsent.details"),
        # The docs' own update example: REVOKED with only a confirmation activity.
        (
            {
                "marketingConsent": {
                    **email_consent(state="REVOKED"),
                    "revision": 1,
                    "lastConfirmationActivity": {"source": "IN_PERSON"},
                },
                "mask": {"paths": ["state", "lastConfirmationActivity.source"]},
            },
            "marketingConsent.lastRevokeActivity",
        ),
    ],
)
async def test_update_rejects_invalid_requests(client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    entity = (await upsert(client, email_consent()))["marketingConsent"]
    assert field in violated_fields(await patch(client, entity["id"], body))


async def test_update_of_an_unknown_consent_is_404(client: httpx.AsyncClient) -> None:
    assert (await patch(client, "nope", {"marketingConsent": email_consent()})).status_code == 404


# --- query -------------------------------------------------------------------------------------------
async def test_query_filters_and_pages(client: httpx.AsyncClient) -> None:
    for index in range(5):
        state = "CONFIRMED" if index % 2 == 0 else "NEVER_CONFIRMED"
        await upsert(client, email_consent(state=state, email=f"u{index}@example.com"))

    async def query(query: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(f"{BASE_PATH}/query", json={"query": query})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    one = await query({"filter": {"details.email": "u3@example.com"}})
    assert [item["details"]["email"] for item in one["marketingConsent"]] == ["u3@example.com"]
    confirmed = await query(
        {
            "filter": {"state": {"$in": ["CONFIRMED"]}},
            "sort": [{"fieldName": "details.email", "order": "DESC"}],
        }
    )
    assert [item["details"]["email"] for item in confirmed["marketingConsent"]] == [
        "u4@example.com",
        "u2@example.com",
        "u0@example.com",
    ]
    first = await query({"cursorPaging": {"limit": 2}})
    assert first["pagingMetadata"]["count"] == 2
    assert first["pagingMetadata"]["hasNext"] is True
    seen = [item["id"] for item in first["marketingConsent"]]
    cursor = first["pagingMetadata"]["cursors"]["next"]
    while cursor:
        page = await query({"cursorPaging": {"limit": 2, "cursor": cursor}})
        seen += [item["id"] for item in page["marketingConsent"]]
        cursor = page["pagingMetadata"]["cursors"].get("next")
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursorPaging": {"limit": 101}}, "query.cursorPaging.limit"),
        ({"cursorPaging": {"limit": 0}}, "query.cursorPaging.limit"),
        ({"cursorPaging": {"cursor": "not-a-cursor"}}, "query.cursorPaging.cursor"),
        ({"filter": {"details.type": "EMAIL"}}, "query.filter"),
        ({"filter": {"state": {"$gt": "A"}}}, "query.filter.state"),
        ({"sort": [{"fieldName": "id"}]}, "query.sort"),
    ],
)
async def test_query_rejects_invalid_queries(client: httpx.AsyncClient, query: dict[str, Any], field: str) -> None:
    response = await client.post(f"{BASE_PATH}/query", json={"query": query})
    assert field in violated_fields(response)


async def test_query_accepts_the_maximum_limit(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{BASE_PATH}/query", json={"query": {"cursorPaging": {"limit": 100}}})
    assert response.json() == {
        "marketingConsent": [],
        "pagingMetadata": {"count": 0, "cursors": {}, "hasNext": False},
    }


async def test_inspect_never_shows_the_authorization_value(make_client: ClientFactory) -> None:
    app = create_app()
    await make_client(app, headers=AUTH).post(f"{BASE_PATH}/upsert", json={"marketingConsent": email_consent()})
    await make_client(app, headers={"Authorization": "Bearer oauth-token-abcdef123"}).get(f"{BASE_PATH}/x")
    inspected = await make_client(app).get("/_inspect")
    assert API_KEY not in inspected.text
    assert "oauth-token-abcdef123" not in inspected.text
    assert [entry["status"] for entry in inspected.json()["requests"]] == [200, 404]
    assert len(inspected.json()["state"]["consents"]) == 1


# --- bulk upsert ----------------------------------------------------------------------------------------
async def test_bulk_upsert_upserts_each_item_by_the_single_rules_and_fails_items_alone(
    client: httpx.AsyncClient,
) -> None:
    existing = (await upsert(client, email_consent(state="NEVER_CONFIRMED", email="bo@example.com")))[
        "marketingConsent"
    ]
    items = [
        email_consent(email="new@example.com"),
        email_consent(state="REVOKED", email="bad@example.com"),  # REVOKED needs a revoke activity
        email_consent(email="BO@example.com"),  # the same consent as `existing`: updated, not duplicated
        email_consent(state="PENDING", email="double@example.com", lastConfirmationActivity=DOUBLE),
    ]
    response = await client.post(BULK_UPSERT, json={"info": items})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["metadata"] == {"totalSuccess": 3, "totalFailure": 1}
    results = answer["results"]
    assert [result["originalIndex"] for result in results] == [0, 1, 2, 3]
    assert results[0]["marketingConsent"]["state"] == "CONFIRMED" and "error" not in results[0]
    assert "marketingConsent" not in results[1]
    assert "lastRevokeActivity" in str(results[1]["error"]["details"]["validationError"])
    assert results[2]["marketingConsent"]["id"] == existing["id"] and results[2]["marketingConsent"]["revision"] == "2"
    assert results[3]["link"]["type"] == "CONFIRMATION"
    single = await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": items[1]})
    assert single.status_code == 400 and single.json() == results[1]["error"], "the same refusal as a single upsert"


@pytest.mark.parametrize(("body", "rule"), [({"info": []}, "REQUIRED_FIELD"), ({}, "REQUIRED_FIELD")])
async def test_bulk_upsert_refuses_an_empty_call(client: httpx.AsyncClient, body: dict[str, Any], rule: str) -> None:
    response = await client.post(BULK_UPSERT, json=body)
    assert violated_fields(response) == ["info"]
    assert response.json()["details"]["validationError"]["fieldViolations"][0]["violatedRule"] == rule


async def test_bulk_upsert_enforces_the_simulators_configured_maximum(make_client: ClientFactory) -> None:
    client = make_client(create_app(bulk_max=2), headers=AUTH)
    items = [email_consent(email=f"n{n}@example.com") for n in range(3)]
    too_many = await client.post(BULK_UPSERT, json={"info": items})
    assert violated_fields(too_many) == ["info"] and "at most 2" in too_many.text
    assert (await client.post(BULK_UPSERT, json={"info": items[:2]})).json()["metadata"]["totalSuccess"] == 2
    listed = await client.post(f"{BASE_PATH}/query", json={"query": {}})
    assert len(listed.json()["marketingConsent"]) == 2, "the refused call upserted nothing"


async def test_refused_addresses_fail_their_bulk_item_alone_and_their_single_upsert(client: httpx.AsyncClient) -> None:
    control = await client.post("/_faults", json={"refused_addresses": ["Bad@Example.com"]})
    assert control.json()["refused_addresses"] == ["bad@example.com"]
    items = [email_consent(email="good@example.com"), email_consent(email="BAD@example.com")]
    answer = (await client.post(BULK_UPSERT, json={"info": items})).json()
    assert answer["metadata"] == {"totalSuccess": 1, "totalFailure": 1}
    violation = answer["results"][1]["error"]["details"]["validationError"]["fieldViolations"][0]
    assert violation["field"] == "marketingConsent.details.email" and violation["ruleName"] == "REFUSED_ADDRESS"
    single = await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": items[1]})
    assert single.status_code == 400 and single.json() == answer["results"][1]["error"]
    await client.post("/_reset")
    assert (await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": items[1]})).status_code == 200
