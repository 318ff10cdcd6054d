"""The TC strings the gateway builds for Masivo are, character for character, what IAB's own
encoder writes for the same consent (``@iabtechlabtcf/core`` from the npm registry, run by node).

The npm package is installed once per session into a temporary folder. Without node or npm the
test is skipped, unless ``CONSENT_GATEWAY_REQUIRE_NODE`` is set (``.ci/run`` sets it): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.masivo import MasivoAdapter, MasivoSettings
from schemas import tcf
from schemas.consent import PurposeRecord, PurposeState, SubjectState

IAB_ENCODER = "@iabtechlabtcf/core@1.5.21"
SCRIPT = Path(__file__).with_name("iab") / "encode.js"
MAPPED = {"email_marketing": [1, 7], "push_notifications": [1, 3, 4], "behavioral_campaigns": [2, 9, 10]}
# (decided at, cmp id, cmp version, vendor list version, policy version, publisher country, decisions)
CASES: list[tuple[datetime, int, int, int, int, str, dict[str, str]]] = [
    (datetime(2026, 12, 3, 14, 5, 9, tzinfo=UTC), 300, 1, 80, 5, "AA", {"email_marketing": "granted"}),
    (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), 7, 12, 140, 5, "DE", {"push_notifications": "granted"}),
    (datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC), 4095, 4095, 4095, 4, "MX", {"email_marketing": "denied"}),
    (
        datetime(2027, 1, 15, 8, 30, tzinfo=UTC),
        2,
        0,
        1,
        63,
        "FR",
        {"email_marketing": "granted", "push_notifications": "granted", "behavioral_campaigns": "granted"},
    ),
    (datetime(2024, 7, 1, 12, tzinfo=UTC), 92, 3, 73, 5, "ES", {"behavioral_campaigns": "pending"}),
]


@pytest.fixture(scope="session")
def iab_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with IAB's encoder installed from the npm registry."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed: IAB's JavaScript encoder cannot run"
        if os.environ.get("CONSENT_GATEWAY_REQUIRE_NODE"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("iab-tcf")
    install = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent", IAB_ENCODER]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return folder


def iab_strings(folder: Path, cases: list[dict[str, Any]]) -> list[str]:
    run = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=os.environ | {"NODE_PATH": str(folder / "node_modules")},
    )
    strings: list[str] = json.loads(run.stdout)
    return strings


def built(
    when: datetime, cmp_id: int, cmp_version: int, gvl: int, policy: int, country: str, decided: dict[str, str]
) -> str:
    """What the Masivo adapter sends for a subject whose decisions carry no TC string."""
    config = {"cmp_id": cmp_id, "cmp_version": cmp_version, "vendor_list_version": gvl, "purposes": MAPPED}
    config |= {"tcf_policy_version": policy, "publisher_cc": country}
    adapter = MasivoAdapter(MasivoSettings.model_validate({"api_key": "masivo-key-0123456789", "tcf": config}))
    purposes = {name: PurposeRecord(state=PurposeState(state), occurred_at=when) for name, state in decided.items()}
    state = SubjectState(subject_id="cust-1", occurred_at=when, purposes=purposes)
    consent_string: str = adapter.project(state)["consent_string"]
    return consent_string


def test_built_strings_are_what_iabs_encoder_writes(iab_encoder: Path) -> None:
    ours = [built(*case) for case in CASES]
    asked = []
    for when, cmp_id, cmp_version, gvl, policy, country, decided in CASES:
        consented = sorted({n for p, state in decided.items() if state == "granted" for n in MAPPED[p]})
        day = when.strftime("%Y-%m-%dT00:00:00Z")  # TCF v2.3: Created = LastUpdated, to the day
        asked.append(
            {"cmp_id": cmp_id, "cmp_version": cmp_version, "vendor_list_version": gvl, "tcf_policy_version": policy}
            | {"publisher_cc": country, "purposes": consented, "created": day}
        )
    assert ours == iab_strings(iab_encoder, asked)
    for text in ours:
        core = tcf.decode(text)
        assert core.created == core.last_updated and core.is_service_specific and core.tcf_policy_version >= 4
        assert len(core.other_segments) == 2, "DisclosedVendors, then Publisher TC"
