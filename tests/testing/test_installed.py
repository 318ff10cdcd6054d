"""Done-when check: a suite outside the package, with the package installed from this checkout
as README says (``pip install "consent-gateway[testing] @ file://…"`` into a fresh venv) and
configured with README's ini, runs the README's downstream test against the shipped cassettes with
every network connect refused and every warning an error; a test that misses its cassette fails
at once with the diff first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testing.test_plugin import THROUGH_THE_GATEWAY, readme_block, readme_test

CHECKOUT = Path(__file__).parents[2]
NOT_SOURCE = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.db*")
NO_NETWORK = """
import socket


def refuse(self, address):
    raise OSError(f"network disabled in this suite: connect to {address!r}")


socket.socket.connect = refuse
socket.socket.connect_ex = refuse
"""


@pytest.mark.installs
@pytest.mark.xdist_group("heavy")
def test_a_downstream_suite_passes_offline(tmp_path: Path) -> None:
    source = tmp_path / "consent-gateway"  # a copy: pip's build/ must not be left in (or taken from) the checkout
    shutil.copytree(CHECKOUT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    requirement = f"consent-gateway[testing] @ {source.as_uri()}"  # README's form, with a path for the git URL
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        check=True,
        capture_output=True,
    )
    suite = tmp_path / "downstream"
    (suite / "tests").mkdir(parents=True)
    (suite / "pytest.ini").write_text(readme_block("downstream-ini", "ini"))
    (suite / "tests" / "conftest.py").write_text(NO_NETWORK)
    (suite / "tests" / "test_consent.py").write_text(readme_test())
    (suite / "tests" / "test_missed.py").write_text(THROUGH_THE_GATEWAY.replace("test_a_signup", "test_missed"))
    pytest_ = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "error"]
    run = subprocess.run([*pytest_, "tests/test_consent.py"], cwd=suite, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed in" in run.stdout and "warning" not in run.stdout + run.stderr
    missed = subprocess.run(
        [*pytest_, "tests/test_missed.py::test_missed_reaches_masivo_and_wix"],
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed in" in missed.stdout and "error" not in missed.stdout.splitlines()[-1], missed.stdout[-3000:]
    first = next(line for line in missed.stdout.splitlines() if line.startswith("E "))
    assert "CassetteMiss: cassette masivo/signup: no recording of this request" in first
