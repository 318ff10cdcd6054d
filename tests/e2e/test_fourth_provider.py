"""Done-when check for providers as plugins: a fourth provider defined entirely outside the project's
tree (``tests/plugins/acme_consent``: its adapter, wire schema, simulator, cassettes and entry point),
installed with pip, and nothing edited anywhere else. It passes the shared adapter contract (recording
against its simulator and replaying its own cassettes), appears in ``serve --demo``, receives
decisions and is read back by a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import CLI, Processes, clean_env, free_port, until

CHECKOUT = Path(__file__).parents[2]
PLUGIN = CHECKOUT / "tests" / "plugins" / "acme_consent"
TOKEN = "fourth-provider-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.installs


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An environment in which the Acme package is installed (into a directory of its own on the path)."""
    target, source = tmp_path_factory.mktemp("acme-installed"), tmp_path_factory.mktemp("acme") / "source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True)  # builds in a copy
    assert (target / "acme_consent-1.0.0.dist-info" / "entry_points.txt").is_file()
    yield clean_env({"PYTHONPATH": os.pathsep.join([str(target), str(CHECKOUT)])})


def test_it_passes_the_shared_adapter_contract(installed: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "acme_contract.py"],
        cwd=PLUGIN,
        env=installed,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "19 passed" in run.stdout, run.stdout[-2000:]


async def test_it_is_in_the_demo_receives_decisions_and_is_read_back(
    installed: dict[str, str], processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    demo = processes.start(
        "demo", [CLI, "serve", "--demo", "--port", str(port)], installed | {"CONSENT_GATEWAY_TOKEN": TOKEN}, tmp_path
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=HEADERS) as client:

        async def ready() -> bool:
            assert demo.alive, demo.tail()
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(ready, 60, "the demo", why=demo.tail)
        assert "/simulators/{acme,intempt,masivo,wix}" in demo.tail(), demo.tail()

        decision = {
            "subject": {"id": "acme-1", "email": "ana@example.com"},
            "purposes": {"email_marketing": "granted", "sms_marketing": "denied"},
            "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            "occurred_at": "2026-11-23T10:00:00Z",
        }
        recorded = await client.post("/v1/consents?wait=20", json=decision)
        assert recorded.status_code == 200, recorded.text
        delivered = {d["provider"]: d["status"] for d in recorded.json()["deliveries"]}
        assert delivered["acme"] == "succeeded", delivered
        held = (await client.get("/simulators/acme/_inspect")).json()["state"]["people"]["acme-1"]
        assert {name: channel["subscribed"] for name, channel in held.items()} == {"newsletter": True, "texts": False}

        run = await client.post("/v1/reconciliation/runs", json={"providers": ["acme"], "subjects": ["acme-1"]})
        assert run.status_code == 202, run.text

        async def done() -> bool:
            status = (await client.get(f"/v1/reconciliation/runs/{run.json()['id']}")).json()["status"]
            assert status != "failed"
            return bool(status == "done")

        await until(done, 60, "the read-back run", every=0.2, why=demo.tail)
        subject = (await client.get("/v1/subjects/acme-1")).json()
        [row] = [row for row in subject["providers"] if row["provider"] == "acme"]
        assert row["status"] == "in_sync" and row["observed"] == {"newsletter": "granted", "texts": "denied"}, row
