"""The benchmark harness runs end to end on a tiny load and prints one JSON object with every
figure and its target. No figure is checked against its target: that is the harness's report,
not a test (issue #9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "all",
    "--database",
    "sqlite",
    "--load-generator",
    "python",  # what a fresh install without wrk uses
    "--connections",
    "4",
    "--seconds",
    "0.5",
    "--rounds",
    "1",
    "--batch-decisions",
    "200",
    "--group-decisions",
    "32",
    "--fanout-decisions",
    "2",
    "--sequential-decisions",
    "1",
    "--delivery-decisions",
    "10",
    "--high-concurrency",
    "8",
    "--view-subjects",
    "50",
    "--read-subjects",
    "20",
    "--events-subjects",
    "3",
    "--backfill-subjects",
    "4",
    "--backfill-seconds",
    "5",
]
FIGURES = {
    "ingest": ("rps", "ceiling_rps", "ratio", "p99_ms", "cpu_s_per_decision", "ceiling_cpu_s_per_request", "targets"),
    "batch": ("seconds", "decisions", "decisions_per_s", "cpu_s_per_decision", "peak_rss_mb", "targets"),
    "groups": ("cpu_ms_per_decision", "ms_per_group", "ms_per_decision", "targets"),
    "fanout": ("p50_ms", "p99_ms", "p50_ratio", "p99_ratio", "sequential_ratio", "limit_ms", "chains", "targets"),
    "delivery": ("per_s", "ratio", "limit_per_s", "flow_lengths", "cpu_s_per_push", "concurrency_8", "targets"),
    "reconciliation": ("view", "readback", "targets"),
    "events": ("p50_ms", "p99_ms", "max_ms", "events", "targets"),
    "backfill": ("wall_s", "wix_requests", "items_per_request", "items_per_min", "bulk_size", "ratio", "targets"),
}


def run_harness() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # the whole of stdout is one JSON object
    assert isinstance(printed, dict)
    return printed


@pytest.mark.xdist_group("heavy")  # the long multi-process tests share one worker (README)
def test_harness_prints_every_figure_with_its_target() -> None:
    printed = run_harness()
    assert printed["load_generator"]["name"] == "python"
    assert "postgresql" not in printed  # --database sqlite: the PostgreSQL parts are not run
    sqlite = printed["sqlite"]
    for part, keys in FIGURES.items():
        assert "error" not in sqlite[part], sqlite[part]
        assert set(keys) <= set(sqlite[part]), (part, sorted(sqlite[part]))
    assert "gateway" in sqlite["rss_mb"] and "targets" in sqlite["rss_mb"]
    assert "skipped" in sqlite["workers"]  # needs PostgreSQL
    assert {"seconds", "command", "logs"} <= set(printed)
