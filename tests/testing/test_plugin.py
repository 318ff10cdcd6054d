"""The pytest plugin as a downstream suite uses it, run by pytester."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.testing.scrub import find_leaks

pytest_plugins = ("pytester",)

README = Path(__file__).parents[2] / "README.md"


def readme_block(name: str, language: str) -> str:
    """A block the README shows downstream projects, exactly as a reader would copy it."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {name} -->\n```{language}\n(.*?)```", text, re.DOTALL)
    assert found, f"README has no {name} block"
    return found.group(1)


def readme_test() -> str:
    return readme_block("downstream-test", "python")


INI = readme_block("downstream-ini", "ini") + "filterwarnings = error\n"  # and no warning at all


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_the_readme_example_passes(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_consent=readme_test())
    suite.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


CHANGED_REQUEST = """
import pytest

@pytest.mark.asyncio
@pytest.mark.cassette("masivo/read_back")
async def test_reads(provider_cassette):
    async with provider_cassette.connect() as masivo:
        await masivo.get("/customers/someone-else/consent")
"""


def test_a_request_not_recorded_fails_with_a_diff(suite: pytest.Pytester) -> None:
    suite.makepyfile(CHANGED_REQUEST)
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*CassetteMiss*no recording of this request*", '*-  "path": "/customers/subject-1001/consent"*']
    )


THROUGH_THE_GATEWAY = readme_test().replace("subject-1001", "subject-9999")


def test_a_miss_through_the_gateway_fails_at_drain_with_the_diff_first(suite: pytest.Pytester) -> None:
    """The worker catches the miss as a crashed delivery; the test still fails at once, with the
    cassette's diff as the failure (not a traceback through respx, not a hang, no teardown error)."""
    suite.makepyfile(THROUGH_THE_GATEWAY)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-k", "signup", timeout=300)
    result.assert_outcomes(failed=1, deselected=1)
    errors = [line for line in result.outlines if line.startswith("E ")]
    assert errors[0].startswith("E           gateway.testing.replay.CassetteMiss: cassette masivo/signup"), errors[:3]
    assert '-      "customer_id": "subject-1001",' in "\n".join(errors[:12])
    report = result.outlines[[i for i, line in enumerate(result.outlines) if "FAILURES" in line][0] :]
    assert "respx" not in "\n".join(report[: report.index(errors[0])])  # no frame of the transport's


SWALLOWED = """
import httpx, pytest

@pytest.mark.asyncio
@pytest.mark.cassette("intempt/signup")
async def test_swallows(provider_cassette):
    async with provider_cassette.connect() as intempt:
        try:
            await intempt.post("/v1/elsewhere", json={})
        except Exception:
            pass  # as a retrying worker would
"""


def test_a_swallowed_miss_still_fails_the_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(SWALLOWED)
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*CassetteMiss*"])


UNUSED = """
import pytest

@pytest.mark.cassette("wix/signup")
def test_nothing(provider_cassette):
    pass

@pytest.mark.cassette("wix/signup", optional=True)
def test_nothing_optional(provider_cassette):
    pass
"""


def test_unused_interactions_fail_unless_optional(suite: pytest.Pytester) -> None:
    suite.makepyfile(UNUSED)
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*UnusedInteractions*4 recorded request(s) never made*"])


RECORDED = """
import pytest
from datetime import UTC, datetime
from adapters.base import drive, sender
from schemas.consent import PurposeRecord, SubjectState

WHEN = datetime(2026, 1, 2, tzinfo=UTC)

@pytest.mark.asyncio
@pytest.mark.cassette("intempt/newsletter", description="one category accepted", settings={"timestamp_unit": "s"})
async def test_records(provider_cassette):
    adapter = provider_cassette.adapter()
    state = SubjectState(
        subject_id="s-1", email="bo@example.com", occurred_at=WHEN,
        purposes={"email_marketing": PurposeRecord(state="granted", occurred_at=WHEN)},
    )
    async with provider_cassette.connect(adapter) as client:
        await drive(adapter.push(state, {}, {}), sender(client))
    assert {MARK}
"""


def test_record_once_writes_a_scrubbed_cassette_only_when_the_test_passed(suite: pytest.Pytester) -> None:
    suite.makepyfile(RECORDED.replace("{MARK}", "False"))
    suite.runpytest_subprocess("--gw-record=once").assert_outcomes(failed=1)
    written = suite.path / "tests" / "cassettes" / "intempt" / "newsletter.json"
    assert not written.exists()
    suite.makepyfile(RECORDED.replace("{MARK}", "True"))
    suite.runpytest_subprocess("--gw-record=once").assert_outcomes(passed=1)
    text = written.read_text(encoding="utf-8")
    cassette = json.loads(text)
    assert cassette["description"] == "one category accepted"
    assert cassette["settings"] == {"org": "intempt-org", "project": "intempt-project", "timestamp_unit": "s"}
    assert cassette["interactions"][0]["request"]["query"] == [["apiKey", "<redacted:api_key>"]]
    assert find_leaks(text, {"api_key": "intempt-api_key.not-a-real-secret"}) == []
    suite.runpytest_subprocess().assert_outcomes(passed=1)  # and it replays


def test_a_missing_cassette_says_how_to_record_it(suite: pytest.Pytester) -> None:
    suite.makepyfile(UNUSED.replace("wix/signup", "wix/nowhere"))
    result = suite.runpytest_subprocess()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*CassetteNotFound: no cassette 'wix/nowhere'*--gw-record=once*"])


def test_loading_the_plugin_imports_only_pytest() -> None:
    code = (
        "import sys, gateway.testing.plugin;"
        "extra = {'respx', 'httpx', 'adapters', 'gateway.testing.library'} & set(sys.modules);"
        "assert not extra, extra"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
