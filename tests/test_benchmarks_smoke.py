"""Smoke test of the benchmark harness: it runs end to end and reports numbers for trio_ws.

Not a timing assertion: it only checks that every run produced a positive figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("picows", reason="the benchmark's fixed peer (picows) is not installed")


@pytest.mark.slow
def test_quick_benchmark_reports_positive_numbers_for_trio_ws(tmp_path: Path) -> None:
    scenarios = ["rtt64", "fanout"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--impls",
            "trio_ws,aiohttp",
            "--scenarios",
            ",".join(scenarios),
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["quick"] is True
    assert not any(key.startswith("trio_ws") for key in data["skipped"]), data["skipped"]
    runs = [r for r in data["runs"] if r["impl"] == "trio_ws"]
    assert {(r["side"], r["scenario"]) for r in runs} == {
        (side, scenario) for side in ("server", "client") for scenario in scenarios
    }
    for run in runs:
        assert run["error"] is None, run
        assert run["value"] > 0, run
    for side in ("server", "client"):
        for scenario in scenarios:
            cell = data["summary"][side][scenario]["trio_ws"]
            assert cell["median"] > 0
            assert cell["ratio"] == pytest.approx(1.0)
    assert (tmp_path / "latest.md").read_text().count("| rtt64 |") == 2
