"""`consent-gateway simulate`, as a developer runs it: its log keeps no secret and no contact data."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.processes import Processes

API_KEY = "pfx.simulate-secret-0123456789"
EMAIL, PHONE = "leak.check@example.com", "+14155550199"


async def test_the_simulators_log_no_api_key_and_no_contact_data(processes: Processes) -> None:
    base = await processes.simulators()
    async with httpx.AsyncClient(base_url=base) as client:
        record = {"action": "accept", "timestamp": 1_790_000_000, "validUntil": "unlimited", "source": "web"}
        await client.post(
            "/intempt/v1/acme/projects/web/consents/data", params={"apiKey": API_KEY}, json=record | {"email": EMAIL}
        )
        await client.get(f"/wix/marketing-consent/v1/marketing-consent/get-by?email={quote(EMAIL)}")
        await client.get("/wix/marketing-consent/v1/marketing-consent/get-by", params={"phone": PHONE})
    [simulate] = processes.all
    simulate.kill()
    log = simulate.log.read_text()
    assert "/consents/data" in log and "get-by" in log, "the requests are logged"
    for secret in (API_KEY, EMAIL, quote(EMAIL), PHONE, quote(PHONE)):
        assert secret not in log, secret
