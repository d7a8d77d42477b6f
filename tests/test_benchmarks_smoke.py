"""Smoke tests of the benchmark harness: it runs end to end and reports numbers for trio_ws,
``--compare`` produces a before/after table from two different trees, and the trio client
driver does not add a scheduler pass per message.

Not timing assertions: they only check that every run produced a positive figure.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from benchmarks._trio_driver import _Window

REPO_ROOT = Path(__file__).resolve().parent.parent

needs_picows = pytest.mark.skipif(
    importlib.util.find_spec("picows") is None,
    reason="the benchmark's fixed peer (picows) is not installed",
)


@needs_picows
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


@needs_picows
@pytest.mark.slow
def test_compare_against_head_reports_both_trees(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--compare",
            "HEAD",
            "--quick",
            "--impls",
            "trio_ws",
            "--scenarios",
            "rtt64",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    data = json.loads((tmp_path / "compare-latest.json").read_text())
    before = Path(data["sides"]["before"]["trio_ws_file"])
    after = Path(data["sides"]["after"]["trio_ws_file"])
    # The working tree side imports this checkout; HEAD's side a worktree elsewhere.
    assert after.resolve() == REPO_ROOT / "trio_ws" / "__init__.py"
    assert before.resolve() != after.resolve()
    compare_dir = next(p for p in before.parents if p.name.startswith("trio_ws-compare-"))
    assert not before.resolve().is_relative_to(REPO_ROOT)

    runs = data["runs"]
    assert {(r["side"], r["tree"]) for r in runs} == {
        (side, tree) for side in ("server", "client") for tree in ("before", "after")
    }
    for run in runs:
        assert run["error"] is None, run
        assert run["value"] > 0, run
        # Every child named the tree it ran, and it is the one its side was meant to run.
        expected = before if run["tree"] == "before" else after
        assert Path(run["detail"]["trio_ws_file"]).resolve() == expected.resolve(), run

    rows = data["rows"]
    assert {(r["scenario"], r["side"], r["impl"]) for r in rows} == {
        ("rtt64", "server", "trio_ws"),
        ("rtt64", "client", "trio_ws"),
    }
    for row in rows:
        assert row["before"] > 0 and row["after"] > 0, row
        assert row["ratio"] == pytest.approx(row["after"] / row["before"])
    table = (tmp_path / "compare-latest.md").read_text()
    assert "| scenario | role | impl | unit | before: HEAD" in table
    assert table.count("| rtt64 |") == 2
    assert str(before) in table and str(after) in table
    assert "| scenario | role |" in proc.stdout

    # The temporary worktree is gone, from disk and from git's list.
    assert not compare_dir.exists()
    worktrees = subprocess.run(
        ["git", "worktree", "list", "--porcelain"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(compare_dir) not in worktrees


async def test_trio_driver_window_waits_only_when_full() -> None:
    # trio.Semaphore.acquire yields even with a permit free: one scheduler pass per message,
    # which capped every trio client's pipe64 at the driver's speed, not the library's.
    window = _Window(3)
    others_ran = False

    async def other() -> None:
        nonlocal others_ran
        others_ran = True

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(3):
                await window.take()
            assert not others_ran  # three takes with credit free: no yield
            taken = trio.Event()

            async def taker() -> None:
                await window.take()
                taken.set()

            nursery.start_soon(taker)
            await trio.testing.wait_all_tasks_blocked()
            assert others_ran and not taken.is_set()  # window full: it waits
            window.give()
            await taken.wait()
            assert window.free == 0
