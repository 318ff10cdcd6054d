"""Done-when check: a suite outside the package, with the package installed from this checkout
as a user would (``pip install '.[testing]'`` into a fresh venv), runs the README's downstream
test against the shipped cassettes with every network connect refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.testing.test_plugin import INI, readme_test

CHECKOUT = Path(__file__).parents[2]
NO_NETWORK = """
import socket


def refuse(self, address):
    raise OSError(f"network disabled in this suite: connect to {address!r}")


socket.socket.connect = refuse
socket.socket.connect_ex = refuse
"""


@pytest.mark.installs
def test_a_downstream_suite_passes_offline(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{CHECKOUT}[testing]"],
        check=True,
        capture_output=True,
    )
    suite = tmp_path / "downstream"
    (suite / "tests").mkdir(parents=True)
    (suite / "pytest.ini").write_text(INI)
    (suite / "tests" / "conftest.py").write_text(NO_NETWORK)
    (suite / "tests" / "test_consent.py").write_text(readme_test())
    run = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=suite, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
