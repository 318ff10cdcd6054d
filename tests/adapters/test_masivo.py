"""Masivo adapter: full-state translation, the JWT exchange, error classification, secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.routing import Mount

from adapters.base import Ack, writes_of
from adapters.errors import LocalValidationError, PermanentError, ProviderError, TransientError
from adapters.masivo import MasivoAdapter, MasivoAuth, MasivoSettings
from adapters.simulators import masivo as masivo_simulator
from schemas import tcf
from schemas.consent import PurposeRecord, PurposeState, SubjectState
from schemas.masivo import DOCUMENTED_PATTERN, NO_CONSENT_STRING
from tests.adapters.canned import Canned, Classified, assert_classified, run
from tests.adapters.contract import AdapterContract, Scenario

EXAMPLE = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
CQ = "CQvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # a v2 string created 2024-2027
API_KEY = "mk_live_0123456789abcdef"
BASE_URL = "https://masivo.test/api/storefront/v1"
WHEN = datetime(2024, 5, 1, 12, tzinfo=UTC)
MASIVO_PURPOSES = sorted(masivo_simulator.PURPOSES)  # the simulator's own reading of the docs


def subject(purposes: dict[str, str], **fields: Any) -> SubjectState:
    records = {name: PurposeRecord(state=PurposeState(value), occurred_at=WHEN) for name, value in purposes.items()}
    return SubjectState(
        **{"subject_id": "cust-1", "tcf_string": EXAMPLE, "occurred_at": WHEN, **fields}, purposes=records
    )


@pytest.fixture
def adapter() -> MasivoAdapter:
    return MasivoAdapter(MasivoSettings(api_key=SecretStr(API_KEY), base_url=BASE_URL))


class FakeMasivo(Canned):
    """Numbered JWTs from authorize, scripted answers for the API, then the consent echoed back."""

    def __init__(self, *answers: httpx.Response, authorize: httpx.Response | None = None) -> None:
        super().__init__(*answers)
        self.bearers: list[str] = []  # as sent: a resent request is the same object with a new header
        self.authorize = authorize
        self.tokens = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/auth/authorize"):
            self.bearers.append(request.headers["authorization"])
            return super().__call__(request)
        self.requests.append(request)
        if self.authorize is not None:
            return self.authorize
        self.tokens += 1
        return httpx.Response(200, json={"data": f"eyJ.jwt-secret-{self.tokens}"})

    def otherwise(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"consent": json.loads(request.content)["consent"]}})

    def api(self) -> list[httpx.Request]:
        return [request for request in self.requests if not request.url.path.endswith("/auth/authorize")]


async def push(adapter: MasivoAdapter, state: SubjectState, fake: FakeMasivo, auth: httpx.Auth | None = None) -> Ack:
    return await run(adapter, adapter.push(state, {}, {}), fake, BASE_URL, auth)


def test_projection_is_the_full_purpose_set(adapter: MasivoAdapter) -> None:
    state = subject(
        {"email_marketing": "granted", "push_notifications": "denied", "sms_marketing": "granted"},
        vendors={"vendor_123": True},
    )
    assert adapter.project(state) == {
        "purposes": {name: name == "email_marketing" for name in MASIVO_PURPOSES},
        "vendors": {"vendor_123": True},
        "consent_string": EXAMPLE,
        "customer_id": "cust-1",
    }


@pytest.mark.parametrize(("value", "expected"), [("granted", True), ("denied", False), ("pending", False)])
def test_only_granted_is_true(adapter: MasivoAdapter, value: str, expected: bool) -> None:
    assert adapter.project(subject({"link_tracking": value}))["purposes"]["link_tracking"] is expected


def test_purposes_sharing_a_masivo_purpose_take_the_most_restrictive() -> None:
    settings = MasivoSettings(
        api_key=SecretStr(API_KEY),
        purposes={"email_marketing": "email_marketing", "sms_marketing": "email_marketing"},
    )
    state = subject({"email_marketing": "granted", "sms_marketing": "denied"})
    assert MasivoAdapter(settings).project(state)["purposes"] == {"email_marketing": False}


@pytest.mark.parametrize("purposes", [{}, {"sms_marketing": "granted", "analytics": "denied"}])
async def test_nothing_mapped_sends_nothing(adapter: MasivoAdapter, purposes: dict[str, str]) -> None:
    fake = FakeMasivo()
    state = subject(purposes, tcf_string=None)
    assert adapter.project(state) == {}
    assert await push(adapter, state, fake) == Ack(acknowledged={})
    assert fake.requests == []


async def test_push_patches_the_full_state(adapter: MasivoAdapter) -> None:
    fake = FakeMasivo()
    state = subject({"email_marketing": "granted", "push_notifications": "denied"}, vendors={"vendor_456": False})
    ack = await push(adapter, state, fake)
    (authorize, patch) = fake.requests
    assert (authorize.method, str(authorize.url)) == ("GET", f"{BASE_URL}/auth/authorize")
    assert authorize.headers["x-api-key"] == API_KEY and "authorization" not in authorize.headers
    assert (patch.method, str(patch.url)) == ("PATCH", f"{BASE_URL}/customers/cust-1/consent")
    assert patch.headers["authorization"] == "Bearer eyJ.jwt-secret-1" and "x-api-key" not in patch.headers
    assert json.loads(patch.content) == {
        "consent": {
            "consent_string": EXAMPLE,
            "version": "2.0",
            "consent_timestamp": "2024-05-01T12:00:00Z",
            "customer_id": "cust-1",
            "purposes": {name: name == "email_marketing" for name in MASIVO_PURPOSES},
            "vendors": {"vendor_456": False},
        }
    }
    assert ack == Ack(acknowledged=adapter.project(state))


@pytest.mark.parametrize(
    ("subject_id", "path"),
    [
        ("a:b@c+d", "/customers/a%3Ab%40c%2Bd/consent"),
        ("..", "/customers/%2E%2E/consent"),
        ("j.doe", "/customers/j.doe/consent"),
    ],
)
async def test_customer_id_is_path_quoted(adapter: MasivoAdapter, subject_id: str, path: str) -> None:
    fake = FakeMasivo()
    await push(adapter, subject({"email_marketing": "granted"}, subject_id=subject_id), fake)
    assert fake.api()[0].url.raw_path.decode() == f"/api/storefront/v1{path}"


@pytest.mark.parametrize(
    ("tcf_string", "reason"),
    [(None, NO_CONSENT_STRING), ("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "version 1"), ("COvF", "20-500 characters")],
)
def test_tcf_check_fails_before_any_request(adapter: MasivoAdapter, tcf_string: str | None, reason: str) -> None:
    flow = adapter.push(subject({"email_marketing": "granted"}, tcf_string=tcf_string), {}, {})
    with pytest.raises(LocalValidationError, match=reason) as raised:
        next(flow)
    assert raised.value.status_code is None and raised.value.provider == "masivo"


# --- a TC string built from [providers.masivo.tcf] for subjects whose decisions carry none ---------------

TCF_CONFIG = {
    "cmp_id": 300,
    "cmp_version": 2,
    "vendor_list_version": 80,
    "consent_language": "ES",
    "publisher_cc": "MX",
    "purposes": {"email_marketing": [1, 7], "push_notifications": [1, 7], "behavioral_campaigns": [1, 3, 4]},
}
BEFORE_2021 = datetime(2020, 11, 2, 9, 30, 15, 400000, tzinfo=UTC)  # created then, a v2 string starts "CO"


def tcf_adapter(**settings: Any) -> MasivoAdapter:
    return MasivoAdapter(
        MasivoSettings.model_validate({"api_key": API_KEY, "base_url": BASE_URL, "tcf": TCF_CONFIG, **settings})
    )


async def test_a_subject_without_a_string_gets_one_built_from_config() -> None:
    fake = FakeMasivo()
    decided = {"email_marketing": "granted", "push_notifications": "granted", "behavioral_campaigns": "denied"}
    state = subject(decided, tcf_string=None, occurred_at=BEFORE_2021)
    await push(tcf_adapter(), state, fake)
    sent = json.loads(fake.api()[0].content)["consent"]["consent_string"]
    built = tcf.decode(sent)
    assert sent.startswith("CO")
    day = BEFORE_2021.replace(hour=0, minute=0, second=0, microsecond=0)
    assert built.created == built.last_updated == day, "the day of the person's decision, never the push time"
    assert (built.cmp_id, built.cmp_version, built.vendor_list_version) == (300, 2, 80)
    assert (built.consent_language, built.publisher_cc, built.tcf_policy_version) == ("ES", "MX", 5)
    assert built.purpose_consents == {7}, "1 is also behavioral_campaigns' (denied); 3 and 4 only its"
    assert built.is_service_specific and built.vendor_consents == set()
    assert built.other_segments == ("IAAA", "YAAAAAAAAAAA"), "TCF v2.3: no disclosed vendors, then publisher TC"


def test_the_built_string_is_the_same_on_every_push() -> None:
    state = subject({"email_marketing": "granted"}, tcf_string=None, occurred_at=BEFORE_2021)
    assert tcf_adapter().project(state) == tcf_adapter().project(state)


def test_the_decisions_own_string_wins_over_a_built_one() -> None:
    assert tcf_adapter().project(subject({"email_marketing": "granted"}))["consent_string"] == EXAMPLE


def test_under_the_documented_pattern_a_string_built_today_fails_before_any_request() -> None:
    state = subject({"email_marketing": "granted"}, tcf_string=None)  # WHEN = 2024-05-01: "CP…"
    adapter = tcf_adapter(consent_string_pattern=DOCUMENTED_PATTERN)
    with pytest.raises(
        LocalValidationError, match=r"documented .*pattern \^CO.*created 2024-05-01.*starts with 'CP'.*3 segments"
    ):
        next(adapter.push(state, {}, {}))


async def test_by_default_a_current_string_with_its_segments_goes_through() -> None:
    fake = FakeMasivo()
    state = subject({"email_marketing": "granted"}, tcf_string=None)
    await push(tcf_adapter(), state, fake)
    sent = json.loads(fake.api()[0].content)["consent"]["consent_string"]
    assert (
        sent.startswith("CP") and sent.count(".") == 2 and tcf.decode(sent).created == datetime(2024, 5, 1, tzinfo=UTC)
    )


def test_an_operator_pattern_also_refuses() -> None:
    adapter = tcf_adapter(consent_string_pattern=r"^CQ[A-Za-z0-9_-]+$")
    with pytest.raises(LocalValidationError, match=r"the consent_string pattern \^CQ"):
        next(adapter.push(subject({"email_marketing": "granted"}), {}, {}))


async def test_contract_a_built_string_is_accepted_by_the_simulator(simulator: Starlette) -> None:
    adapter = MasivoAdapter(
        MasivoSettings.model_validate({"api_key": API_KEY, "base_url": SIM_BASE, "tcf": TCF_CONFIG})
    )
    state = subject({"email_marketing": "granted"}, tcf_string=None, occurred_at=BEFORE_2021)
    await sim_push(simulator, adapter, state, adapter.auth())
    held = (await sim_call(simulator, "_inspect"))["state"]["consents"]["cust-1"]["consent_string"]
    assert tcf.decode(held).purpose_consents == {1, 7}


def test_body_is_checked_against_the_wire_schema(adapter: MasivoAdapter) -> None:
    # SubjectState itself refuses a naive time; model_copy skips that, as a store bug could
    naive = subject({"email_marketing": "granted"}).model_copy(update={"occurred_at": datetime(2024, 5, 1)})
    with pytest.raises(LocalValidationError, match="consent_timestamp"):
        next(adapter.push(naive, {}, {}))


async def test_token_is_cached_and_refreshed_before_expiry(adapter: MasivoAdapter) -> None:
    now = [0.0]
    auth = MasivoAuth(adapter.settings, adapter.check, clock=lambda: now[0])
    fake = FakeMasivo()
    state = subject({"email_marketing": "granted"})
    await push(adapter, state, fake, auth)
    now[0] = 3299.0  # ttl 3600 - margin 300 = refresh at 3300
    await push(adapter, state, fake, auth)
    assert fake.tokens == 1
    now[0] = 3300.0
    await push(adapter, state, fake, auth)
    assert fake.tokens == 2
    assert fake.bearers == [f"Bearer eyJ.jwt-secret-{n}" for n in (1, 1, 2)]


async def test_a_401_refreshes_once_and_resends(adapter: MasivoAdapter) -> None:
    fake = FakeMasivo(httpx.Response(401, json={"error": "Unauthorized", "details": "Token expired"}))
    await push(adapter, subject({"email_marketing": "granted"}), fake)
    assert fake.tokens == 2
    assert fake.bearers == ["Bearer eyJ.jwt-secret-1", "Bearer eyJ.jwt-secret-2"]


async def test_a_second_401_is_permanent(adapter: MasivoAdapter) -> None:
    unauthorized = httpx.Response(401, json={"error": "Unauthorized", "details": "Token revoked"})
    fake = FakeMasivo(unauthorized, unauthorized)
    with pytest.raises(PermanentError, match="Unauthorized: Token revoked"):
        await push(adapter, subject({"email_marketing": "granted"}), fake)
    assert (fake.tokens, len(fake.api())) == (2, 2)


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (
            httpx.Response(401, json={"error": "Unauthorized", "details": "Invalid API key"}),
            PermanentError,
            "Unauthorized: Invalid API key",
        ),
        (
            httpx.Response(403, json={"error": "Forbidden", "details": "Key disabled"}),
            PermanentError,
            "Key disabled",
        ),
        (httpx.Response(503, text="upstream unavailable"), TransientError, "upstream unavailable"),
        (httpx.Response(200, json={"token": "x"}), TransientError, "without"),
    ],
)
async def test_failed_token_exchange(
    adapter: MasivoAdapter, answer: httpx.Response, error: type[ProviderError], text: str
) -> None:
    fake = FakeMasivo(authorize=answer)
    with pytest.raises(error, match=text) as raised:
        await push(adapter, subject({"email_marketing": "granted"}), fake)
    assert type(raised.value) is error and fake.api() == []


@pytest.mark.parametrize(
    "expected",
    [
        (
            httpx.Response(422, json={"error": "Invalid consent data", "details": "consent_string must match ^CO"}),
            PermanentError,
            "masivo (HTTP 422): Invalid consent data: consent_string must match ^CO",
            None,
        ),
        (
            httpx.Response(404, json={"error": "Not found", "details": "Customer not found"}),
            PermanentError,
            "masivo (HTTP 404): Not found: Customer not found",
            None,
        ),
        (
            httpx.Response(
                429, headers={"Retry-After": "7"}, json={"error": "Too many requests", "details": "DEV quota"}
            ),
            TransientError,
            "Too many requests: DEV quota",
            7.0,
        ),
        (
            httpx.Response(503, json={"error": "Unavailable", "details": "maintenance"}),
            TransientError,
            "Unavailable: maintenance",
            None,
        ),
        (httpx.Response(500, text="<html>oops</html>"), TransientError, "<html>oops</html>", None),
    ],
)
async def test_error_classification(adapter: MasivoAdapter, expected: Classified) -> None:
    attempt = push(adapter, subject({"email_marketing": "granted"}), FakeMasivo(expected[0]))
    await assert_classified(attempt, expected)


FAILURES: list[Callable[[], FakeMasivo]] = [
    lambda: FakeMasivo(authorize=httpx.Response(401, json={"error": "Unauthorized", "details": "bad key"})),
    lambda: FakeMasivo(*[httpx.Response(401, json={"error": "Unauthorized", "details": "no"})] * 2),
    lambda: FakeMasivo(httpx.Response(422, json={"error": "Invalid", "details": "bad"})),
    lambda: FakeMasivo(httpx.Response(503)),
]


@pytest.mark.parametrize("fake", FAILURES)
async def test_no_secret_in_errors_or_reprs(adapter: MasivoAdapter, fake: Callable[[], FakeMasivo]) -> None:
    auth = adapter.auth()
    with pytest.raises(ProviderError) as raised:
        await push(adapter, subject({"email_marketing": "granted"}), fake(), auth)
    for text in (str(raised.value), repr(raised.value), repr(adapter), repr(adapter.settings), repr(auth)):
        assert API_KEY not in text and "jwt-secret" not in text
    assert adapter.secrets() == [API_KEY]


@pytest.mark.parametrize(
    "settings",
    [
        {"purposes": {"sms_marketing": "sms"}},
        {"purposes": {"analytics": "analytics"}},
        {"token_ttl_s": 300, "refresh_margin_s": 300},
        {"api_key": 12345678901234},
        {"unknown": 1},
        {"consent_string_pattern": "^CO[A-Z"},
        {"tcf": {**TCF_CONFIG, "purposes": {"email_marketing": [12]}}},
        {"tcf": {**TCF_CONFIG, "purposes": {"sms_marketing": [1]}}},  # not a purpose Masivo is sent
        {"tcf": {**TCF_CONFIG, "cmp_id": 4096}},
        {"tcf": {**TCF_CONFIG, "consent_language": "es"}},
        {"tcf": {key: value for key, value in TCF_CONFIG.items() if key != "vendor_list_version"}},
    ],
)
def test_settings_reject(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        MasivoSettings.model_validate({"api_key": API_KEY, **settings})
    assert API_KEY not in str(raised.value) and "12345678901234" not in str(raised.value)


def test_default_settings() -> None:
    settings = MasivoSettings.model_validate({"api_key": API_KEY})
    assert settings.base_url == "https://app.masivo.ai/api/storefront/v1"
    assert settings.purposes == {name: name for name in MASIVO_PURPOSES}
    assert (settings.token_ttl_s, settings.refresh_margin_s) == (3600, 300)
    assert settings.consent_string_pattern == r"^C[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$" and settings.tcf is None


# --- contract: the adapter against the Masivo simulator (an independent reading of the docs) ---------------

SIM_BASE = "https://masivo.sim/api/storefront/v1"


@pytest.fixture
def simulator() -> Starlette:
    """The simulator mounted under the documented base path, so the adapter's relative paths are exercised."""
    return Starlette(routes=[Mount("/api/storefront/v1", app=masivo_simulator.create_app())])


async def sim_push(simulator: Starlette, adapter: MasivoAdapter, state: SubjectState, auth: httpx.Auth) -> Ack:
    return await run(adapter, adapter.push(state, {}, {}), simulator, SIM_BASE, auth)


async def sim_call(simulator: Starlette, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator), base_url=SIM_BASE) as client:
        response = await (client.get(path) if body is None else client.post(path, json=body))
        response.raise_for_status()
        return response.json()


@pytest.fixture
def sim_adapter() -> MasivoAdapter:
    return MasivoAdapter(MasivoSettings(api_key=SecretStr(API_KEY), base_url=SIM_BASE))


async def test_contract_full_state_is_stored(simulator: Starlette, sim_adapter: MasivoAdapter) -> None:
    auth = sim_adapter.auth()
    first = subject({"email_marketing": "granted", "push_notifications": "denied"}, vendors={"vendor_123": True})
    await sim_push(simulator, sim_adapter, first, auth)
    # a later decision about one purpose: the merged state still carries the others
    later = subject({"email_marketing": "granted", "push_notifications": "denied", "link_tracking": "granted"})
    ack = await sim_push(simulator, sim_adapter, later, auth)
    seen = await sim_call(simulator, "_inspect")
    effective = {name: name in {"email_marketing", "link_tracking"} for name in MASIVO_PURPOSES}
    assert seen["state"]["effective_purposes"] == {"cust-1": effective}
    assert seen["state"]["consents"]["cust-1"]["consent_string"] == EXAMPLE
    assert ack.acknowledged["purposes"] == effective
    assert [(r["method"], r["path"], r["status"]) for r in seen["requests"]] == [
        ("GET", "/api/storefront/v1/auth/authorize", 200),
        ("PATCH", "/api/storefront/v1/customers/cust-1/consent", 200),
        ("PATCH", "/api/storefront/v1/customers/cust-1/consent", 200),
    ]
    assert API_KEY not in json.dumps(seen)


async def test_contract_expired_token_is_refreshed_once(simulator: Starlette, sim_adapter: MasivoAdapter) -> None:
    auth = sim_adapter.auth()
    state = subject({"email_marketing": "granted"})
    await sim_push(simulator, sim_adapter, state, auth)
    await sim_call(simulator, "_faults", {"expire_tokens": True})
    await sim_push(simulator, sim_adapter, state, auth)
    seen = await sim_call(simulator, "_inspect")
    assert seen["state"]["tokens"]["issued"] == 2
    assert [r["status"] for r in seen["requests"]] == [200, 200, 401, 200, 200]


async def test_contract_missing_customer_is_permanent(simulator: Starlette, sim_adapter: MasivoAdapter) -> None:
    await sim_call(simulator, "_faults", {"missing_customers": ["cust-1"]})
    with pytest.raises(PermanentError, match="HTTP 404.*Customer not found") as raised:
        await sim_push(simulator, sim_adapter, subject({"email_marketing": "granted"}), sim_adapter.auth())
    assert API_KEY not in str(raised.value)


# --- the shared contract, against the simulator and the shipped cassettes ---------------------


class TestMasivoContract(AdapterContract):
    provider = "masivo"
    purposes = ("email_marketing", "push_notifications")
    fault_path = r"/consent$"  # the token exchange keeps answering

    async def test_token_expired_401(self, world: Scenario) -> None:
        """The token expires between two pushes: Masivo answers 401, the client authorizes again and resends."""
        await world.push(self.state())
        await world.faults(expire_tokens=True)
        state = self.state(second="denied")
        assert (await world.push(state)).acknowledged == world.adapter.project(state)

    async def test_unauthorized_401(self, world: Scenario) -> None:
        """Masivo keeps refusing the token (revoked key): one fresh token, one resend, then a permanent failure."""
        await world.faults(error_rate=1, status=401, path=self.fault_path)
        await self.fails(world, PermanentError, 401)

    async def test_customer_not_found_404(self, world: Scenario) -> None:
        """Masivo knows no customer with the subject's id: 404, permanent."""
        await world.faults(missing_customers=[self.state().subject_id])
        await self.fails(world, PermanentError, 404)

    async def test_invalid_consent_422(self, world: Scenario) -> None:
        """Masivo refuses the consent data: 422 {error, details}, permanent."""
        await world.faults(error_rate=1, status=422, path=self.fault_path)
        error = await self.fails(world, PermanentError, 422)
        assert "Unprocessable" in str(error)


async def read(adapter: MasivoAdapter, fake: FakeMasivo) -> Any:
    return await run(adapter, adapter.read([subject({"email_marketing": "granted"})]), fake, BASE_URL)


async def test_the_documented_all_true_default_reads_back_as_nothing_held(adapter: MasivoAdapter) -> None:
    """ "If consent is null or empty… returns default values with all purposes true": nobody agreed to anything."""
    default = {"customer_id": "cust-1", "purposes": dict.fromkeys(MASIVO_PURPOSES, True)}
    found = await read(adapter, FakeMasivo(httpx.Response(200, json={"data": {"consent": default}})))
    assert found["cust-1"].held == {} and found["cust-1"].changed_at == {}


async def test_a_recorded_consent_reads_back_with_its_one_timestamp_on_every_purpose(adapter: MasivoAdapter) -> None:
    recorded = {
        "customer_id": "cust-1",
        "consent_string": EXAMPLE,
        "consent_timestamp": WHEN.isoformat(),
        "purposes": dict.fromkeys(MASIVO_PURPOSES, True),
    }
    found = (await read(adapter, FakeMasivo(httpx.Response(200, json={"data": {"consent": recorded}}))))["cust-1"]
    assert found.held["purposes"] == dict.fromkeys(MASIVO_PURPOSES, True)
    assert found.changed_at == dict.fromkeys(MASIVO_PURPOSES, WHEN) and adapter.record_stamped


async def test_a_push_says_what_it_writes_and_when(adapter: MasivoAdapter) -> None:
    """Provenance: every purpose the PATCH sets, with the consent_timestamp it carries."""
    patch = next(adapter.push(subject({"email_marketing": "granted", "push_notifications": "denied"}), {}, {}))
    sent = writes_of(patch)
    assert sent["email_marketing"] == (PurposeState.granted, WHEN)
    assert sent["push_notifications"] == (PurposeState.denied, WHEN)
    assert set(sent) == set(MASIVO_PURPOSES)
