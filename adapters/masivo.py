"""Masivo (storefront v1): one full-state ``PATCH /customers/{id}/consent`` per push.

Masivo quirks kept here: a JWT from ``GET /auth/authorize`` (valid 1 h) instead of the API
key on each call; the whole purpose set on every write ("When consent **is** recorded, each
purpose must be explicitly ``true`` to allow that use"); a TCF consent string on every write,
built from ``[providers.masivo.tcf]`` when the subject's decisions carry none; the ``^CO``
consent-string pattern (``consent_string_pattern``); ``{error, details}`` error bodies.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from adapters.base import (
    Ack,
    Adapter,
    Flow,
    Observable,
    Observation,
    Projection,
    ProviderSettings,
    ReadFlow,
    json_body,
    json_request,
    validation_reason,
)
from adapters.errors import LocalValidationError, PermanentError, TransientError
from adapters.registry import Provider
from schemas import tcf
from schemas.consent import PurposeState, SubjectState, most_restrictive
from schemas.masivo import (
    CONSENT_STRING_PATTERN,
    PURPOSES,
    AuthorizeResponse,
    CustomerConsentUpdate,
    ErrorBody,
    HeldConsentResponse,
    tcf_problem,
)

AUTHORIZE_PATH = "/auth/authorize"
TCF_VERSION = "2.0"  # the OpenAPI's example for ``version``; tcf_problem only admits v2 strings

Clock = Callable[[], float]
TCF_PURPOSES = range(1, 12)  # the eleven purposes TCF v2.2 defines


class MasivoTcfSettings(BaseModel):
    """``[providers.masivo.tcf]``: how to build a TC string for a subject whose decisions carry none.

    The string says honestly who made it: the operator's CMP registration with IAB, the vendor
    list it showed, and the subject's newest ``occurred_at`` as Created and LastUpdated.
    """

    model_config = ConfigDict(extra="forbid")

    cmp_id: int = Field(
        ge=2, le=4095, description="the CMP id IAB registered for the operator (IAB's encoder refuses 0 and 1)"
    )
    cmp_version: int = Field(ge=0, le=4095)
    vendor_list_version: int = Field(ge=1, le=4095, description="the Global Vendor List version shown")
    tcf_policy_version: int = Field(
        default=5, ge=4, le=63, description="the Global Vendor List's tcfPolicyVersion; at least 4 since TCF v2.2"
    )
    consent_language: str = Field(default="EN", pattern=r"^[A-Z]{2}$")
    publisher_cc: str = Field(default="AA", pattern=r"^[A-Z]{2}$", description="AA = unknown, per the spec")
    purposes: dict[str, list[int]] = Field(
        min_length=1, description="gateway purpose -> the TCF purposes (1-11) it stands for"
    )

    @field_validator("purposes")
    @classmethod
    def _tcf_purposes(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        wrong = sorted({n for numbers in value.values() for n in numbers} - set(TCF_PURPOSES))
        if wrong:
            raise ValueError(f"not a TCF v2.2 purpose: {', '.join(map(str, wrong))}; they are 1-11")
        return value


class MasivoSettings(ProviderSettings):
    """Masivo settings; each gateway purpose maps to the Masivo purpose of the same name.

    sms_marketing and analytics have no Masivo purpose, so they are not mapped.
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a mistyped key must not echo in errors

    api_key: SecretStr
    base_url: str = "https://app.masivo.ai/api/storefront/v1"
    purposes: dict[str, str] = Field(default_factory=lambda: {purpose: purpose for purpose in PURPOSES})
    token_ttl_s: float = Field(default=3600.0, gt=0, description="the docs: a token is valid for 1 h")
    refresh_margin_s: float = Field(default=300.0, ge=0, description="refresh this long before expiry")
    consent_string_pattern: str = Field(
        default=CONSENT_STRING_PATTERN,
        description="any IAB TCF v2 string; Masivo's documented ^CO pattern admits none made after 2021 (README)",
    )
    tcf: MasivoTcfSettings | None = Field(default=None, description="build a TC string when a subject has none")

    @field_validator("purposes")
    @classmethod
    def _masivo_purposes(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(PURPOSES))
        if unknown:
            raise ValueError(f"not a Masivo purpose: {', '.join(unknown)}; Masivo has {', '.join(PURPOSES)}")
        return value

    @field_validator("consent_string_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _tcf_purposes_are_sent(self) -> MasivoSettings:
        """A TCF purpose only means something for a purpose Masivo is sent."""
        unmapped = sorted(set(self.tcf.purposes) - set(self.purposes)) if self.tcf else []
        if unmapped:
            raise ValueError(f"tcf.purposes names purposes not in purposes: {', '.join(unmapped)}")
        return self

    @model_validator(mode="after")
    def _margin_within_ttl(self) -> MasivoSettings:
        if self.refresh_margin_s >= self.token_ttl_s:
            raise ValueError("refresh_margin_s must be shorter than token_ttl_s, or every request re-authorizes")
        return self


class MasivoAuth(httpx.Auth):
    """Exchange the API key for a JWT, cache it, and refresh it before it expires or on a 401.

    Concurrent requests that find the token expired may each fetch one; every token they
    get is valid, so no lock is held across requests.
    """

    requires_response_body = True

    def __init__(
        self,
        settings: MasivoSettings,
        check: Callable[[httpx.Response], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self._api_key = settings.api_key
        self._authorize_url = settings.base_url.rstrip("/") + AUTHORIZE_PATH
        self._lifetime_s = settings.token_ttl_s - settings.refresh_margin_s
        self._check = check
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or self._clock() >= self._refresh_at:
            yield from self._authorize()
        response = yield self._bearer(request)
        if response.status_code == 401:  # revoked or expired early: one fresh token, one resend
            yield from self._authorize()
            yield self._bearer(request)

    def _bearer(self, request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def _authorize(self) -> Generator[httpx.Request, httpx.Response, None]:
        """``GET /auth/authorize`` with ``x-api-key`` → ``{"data": "<JWT>"}``."""
        started = self._clock()
        response = yield httpx.Request(
            "GET", self._authorize_url, headers={"x-api-key": self._api_key.get_secret_value()}
        )
        self._check(response)
        try:
            token = AuthorizeResponse.model_validate_json(response.content).data
        except ValidationError:
            raise TransientError(
                MasivoAdapter.name, 'token exchange answered without {"data": "<JWT>"}', response.status_code
            ) from None
        self._token = token
        self._refresh_at = started + self._lifetime_s


class MasivoAdapter(Adapter, Observable):
    """Masivo receives the subject's full merged purpose set on every push."""

    name: ClassVar[str] = "masivo"
    Settings: ClassVar[type[ProviderSettings]] = MasivoSettings
    volatile: ClassVar[tuple[str, ...]] = ("consent_timestamp",)
    record_stamped: ClassVar[bool] = True  # one consent_timestamp for the whole consent
    settings: MasivoSettings
    read_batch: ClassVar[int] = 1  # one customer per GET

    def auth(self) -> MasivoAuth:
        return MasivoAuth(self.settings, self.check)

    def project(self, state: SubjectState) -> Projection:
        """Every mapped Masivo purpose as a bool: only ``granted`` is ``True``.

        Denied, pending (double opt-in unconfirmed) and never decided are all ``False``:
        once consent is recorded, Masivo allows a purpose only when it is explicitly true.
        """
        grouped = state.purposes_in(self.settings.purposes)
        if not grouped:
            return {}
        purposes = {
            term: term in grouped and most_restrictive(grouped[term]) is PurposeState.granted
            for term in sorted(set(self.settings.purposes.values()))
        }
        return {
            "purposes": purposes,
            "vendors": dict(state.vendors),
            "consent_string": state.tcf_string or self._built_string(state),
            "customer_id": state.subject_id,
        }

    def _built_string(self, state: SubjectState) -> str | None:
        """A TC string from config and the subject's state, or ``None`` when none is configured.

        A TCF purpose is consented when every decided gateway purpose mapped to it is granted.
        It follows TCF v2.3 as IAB's own encoder writes it: service-specific, Created and
        LastUpdated the same day (the subject's newest ``occurred_at``, never the push time, so
        the string is the same on every retry), then the DisclosedVendors segment (none: the
        gateway knows no IAB vendor ids, so vendor consents stay empty too) and the Publisher TC
        segment. ConsentScreen is 0: no CMP screen was shown.
        """
        config = self.settings.tcf
        if config is None:
            return None
        grouped: dict[int, list[PurposeState]] = {}
        for purpose, numbers in config.purposes.items():
            if (record := state.purposes.get(purpose)) is not None:
                for number in numbers:
                    grouped.setdefault(number, []).append(record.state)
        consented = {n for n, states in grouped.items() if most_restrictive(states) is PurposeState.granted}
        day = state.occurred_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return tcf.encode(
            tcf.CoreString(
                created=day,
                last_updated=day,
                cmp_id=config.cmp_id,
                cmp_version=config.cmp_version,
                consent_screen=0,
                consent_language=config.consent_language,
                vendor_list_version=config.vendor_list_version,
                tcf_policy_version=config.tcf_policy_version,
                is_service_specific=True,
                purpose_consents=frozenset(consented),
                publisher_cc=config.publisher_cc,
                other_segments=(tcf.disclosed_vendors(), tcf.publisher_tc()),
            )
        )

    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        """One ``PATCH`` with the full purpose set; nothing when no mapped purpose is decided.

        An empty push would record consent with every purpose false, turning Masivo's
        "no consent recorded: all purposes allowed" default into a block on everything.
        """
        desired = self.project(state)
        if not desired:
            return Ack(acknowledged={})
        problem = tcf_problem(desired["consent_string"], self.settings.consent_string_pattern)
        if problem:
            raise LocalValidationError(self.name, problem)
        path = f"/customers/{_path_segment(state.subject_id)}/consent"
        writes = {term: (self.term_state(allowed), state.occurred_at) for term, allowed in desired["purposes"].items()}
        response = yield json_request("PATCH", path, self._body(state, desired), writes=writes)
        self.check(response)
        return Ack(acknowledged=desired)

    def read(self, states: Sequence[SubjectState]) -> ReadFlow:
        """``GET /customers/{id}/consent`` per subject. The docs' default for a customer with no
        consent recorded (every purpose true) means "nothing recorded", never an agreement: it
        reads back as holding nothing, as does an unknown customer (404)."""
        observed: dict[str, Observation] = {}
        for state in states:
            path = f"/customers/{_path_segment(state.subject_id)}/consent"
            response = yield json_request("GET", path, expect={404})
            observed[state.subject_id] = self._observed(response)
        return observed

    def _observed(self, response: httpx.Response) -> Observation:
        if response.status_code == 404:
            return Observation()
        self.check(response)
        try:
            consent = HeldConsentResponse.model_validate(json_body(response)).data.consent
        except ValidationError as error:
            message = f"unexpected answer: {validation_reason(error)}"
            raise PermanentError(self.name, message, response.status_code) from error
        if consent is None or not consent.recorded:
            return Observation()
        terms = sorted(set(self.settings.purposes.values()))
        held = {
            "purposes": {term: consent.purposes.get(term) is True for term in terms},
            "vendors": consent.vendors,
            "consent_string": consent.consent_string,
            "customer_id": consent.customer_id,
        }
        changed_at = dict.fromkeys(terms, consent.consent_timestamp) if consent.consent_timestamp else {}
        return Observation(held=held, changed_at=changed_at)

    def term_states(self, projection: Projection) -> dict[str, PurposeState]:
        """Each Masivo purpose: true is granted, false denied (Masivo has no pending)."""
        return {term: self.term_state(allowed) for term, allowed in projection.get("purposes", {}).items()}

    @staticmethod
    def term_state(allowed: bool) -> PurposeState:
        return PurposeState.granted if allowed else PurposeState.denied

    def _body(self, state: SubjectState, desired: Projection) -> dict[str, Any]:
        """The request body, validated against Masivo's documented schema before it is sent."""
        consent = {
            "consent_string": desired["consent_string"],
            "version": TCF_VERSION,
            "consent_timestamp": state.occurred_at,
            "customer_id": desired["customer_id"],
            "purposes": desired["purposes"],
            "vendors": desired["vendors"],
        }
        context = {"consent_string_pattern": self.settings.consent_string_pattern}
        try:
            update = CustomerConsentUpdate.model_validate({"consent": consent}, context=context)
        except ValidationError as error:
            raise LocalValidationError(
                self.name, f"Masivo's consent schema rejects the body: {validation_reason(error)}"
            ) from None
        return update.model_dump(mode="json", exclude_none=True)

    def error_text(self, response: httpx.Response) -> str:
        """Masivo errors are ``{error, details}`` (e.g. 404 customer not found, 422 invalid data)."""
        try:
            body = ErrorBody.model_validate(json_body(response))
        except ValidationError:
            return super().error_text(response)
        return f"{body.error}: {body.details}"


def _path_segment(value: str) -> str:
    """Quote an id for a path; an id of only dots would otherwise resolve as ``.``/``..``."""
    quoted = quote(value, safe="")
    return quoted if quoted.strip(".") else quoted.replace(".", "%2E")


DEMO_TCF = {  # the demo builds TC strings for decisions that carry none, as config.example.toml does
    "cmp_id": 300,
    "cmp_version": 1,
    "vendor_list_version": 80,
    "purposes": {"email_marketing": [1], "push_notifications": [1], "behavioral_campaigns": [1, 3, 4]},
}
PROVIDER = Provider(
    MasivoAdapter,
    simulator="adapters.simulators.masivo:create_app",
    demo=lambda base_url: {"base_url": base_url, "api_key": secrets.token_hex(16), "tcf": DEMO_TCF},
)
