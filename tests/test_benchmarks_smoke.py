"""Smoke tests of the benchmark harness: it runs end to end and reports numbers for trio_ws,
``--compare`` produces a before/after table from two different trees, the trio client
driver does not add a scheduler pass per message, the TLS (``wss_*``) and compressed idle
(``idle_deflate``) scenarios run, every TLS client checks the certificate and the host
name, and every client that asks for permessage-deflate fails the run without it.

Not timing assertions: they only check that every run produced a positive figure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from benchmarks._common import QUICK, is_tls
from benchmarks._trio_driver import _Window

REPO_ROOT = Path(__file__).resolve().parent.parent

needs_picows = pytest.mark.skipif(
    importlib.util.find_spec("picows") is None,
    reason="the benchmark's fixed peer (picows) is not installed",
)
needs_trustme = pytest.mark.skipif(
    importlib.util.find_spec("trustme") is None, reason="trustme is not installed"
)

#: The scenarios issue 17 added: over TLS, and idle with permessage-deflate negotiated.
NEW_SCENARIOS = ["wss_rtt64", "wss_pipe64", "wss_big1m", "idle_deflate"]
#: Client drivers that can negotiate permessage-deflate (trio-websocket cannot).
DEFLATE_CLIENTS = ["trio_ws", "aiohttp", "websockets_asyncio", "websockets_trio", "picows"]
TLS_CLIENTS = [*DEFLATE_CLIENTS, "trio_websocket"]


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


def _bench(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_new_scenarios_are_bounded_in_quick_mode() -> None:
    for scenario in NEW_SCENARIOS:
        params = QUICK[scenario]
        assert params.max_time <= 5.0 and params.count <= 1000, (scenario, params)
    assert QUICK["idle_deflate"].compress and QUICK["idle_deflate"].size == 1024
    assert all(is_tls(s) for s in NEW_SCENARIOS[:3]) and not is_tls("idle_deflate")


@needs_picows
@needs_trustme
@pytest.mark.slow
def test_quick_tls_and_idle_deflate_scenarios_report_positive_numbers(tmp_path: Path) -> None:
    impls = ["trio_ws", "aiohttp", "trio_websocket"]
    proc = _bench(
        tmp_path,
        "--quick",
        "--impls",
        ",".join(impls),
        "--scenarios",
        ",".join(NEW_SCENARIOS),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    data = json.loads((tmp_path / "latest.json").read_text())
    runs = data["runs"]
    expected = {
        (side, scenario, impl)
        for side in ("server", "client")
        for scenario in NEW_SCENARIOS
        for impl in impls
        # trio-websocket has no permessage-deflate: its idle_deflate cells are n/a.
        if not (impl == "trio_websocket" and scenario == "idle_deflate")
    }
    assert {(r["side"], r["scenario"], r["impl"]) for r in runs} == expected
    for run in runs:
        assert run["error"] is None, run
        assert run["value"] > 0, run
    for side in ("server", "client"):
        assert data["summary"][side]["idle_deflate"]["trio_ws"]["median"] > 0
    table = (tmp_path / "latest.md").read_text()
    for scenario in NEW_SCENARIOS:
        assert table.count(f"| {scenario} |") == 2, scenario
    assert "| idle_deflate | KiB/conn (lower is better) |" in table


@needs_picows
@needs_trustme
@pytest.mark.slow
def test_compare_accepts_tls_and_idle_deflate_scenarios(tmp_path: Path) -> None:
    scenarios = ["wss_pipe64", "idle_deflate"]
    proc = _bench(
        tmp_path,
        "--compare",
        "HEAD",
        "--quick",
        "--impls",
        "trio_ws",
        "--scenarios",
        ",".join(scenarios),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "compare-latest.json").read_text())
    assert {(r["scenario"], r["side"]) for r in data["rows"]} == {
        (scenario, side) for scenario in scenarios for side in ("server", "client")
    }
    for row in data["rows"]:
        assert row["before"] > 0 and row["after"] > 0, row


def test_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = _bench(tmp_path, "--quick", "--scenarios", "wss_fanout", timeout=60)
    assert proc.returncode == 2
    assert "unknown scenario 'wss_fanout'" in proc.stderr


# --- the drivers, one at a time, against a fixed peer ----------------------------------


@contextmanager
def _server(impl: str, *args: str) -> Iterator[int]:
    """Start ``benchmarks.server_<impl>`` with ``args``; yield its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.server_{impl}", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the server printed nothing within 60 s"
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _client(impl: str, url: str, scenario: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks.client_<impl>`` for a tiny ``scenario`` (its quick parameters)."""
    params = QUICK[scenario]
    argv = ["--count", "20", "--size", str(params.size), "--window", "10", "--max-time", "2"]
    if params.compress:
        argv.append("--compress")
    module = f"benchmarks.client_{impl}"
    return subprocess.run(
        [sys.executable, "-m", module, "--url", url, "--scenario", scenario, *argv, *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,  # an idle scenario's wait for the harness ends at once
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good CA, a server certificate it signed for 127.0.0.1, one it signed for another
    name only, and an unrelated CA."""
    import trustme

    tmp = tmp_path_factory.mktemp("certs")
    good = trustme.CA()
    files = {name: tmp / f"{name}.pem" for name in ("ca", "other_ca", "server", "wrong_name")}
    good.cert_pem.write_to_path(str(files["ca"]))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    cert = good.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    wrong = good.issue_cert("elsewhere.example")
    wrong.private_key_and_cert_chain_pem.write_to_path(str(files["wrong_name"]))
    return files


def _verify_failed(impl: str, stderr: str) -> bool:
    # ssl says "certificate verify failed"; aiofastnet (picows) "CERTIFICATE_VERIFY_FAILED".
    # trio-websocket swallows the TLS error and reports only its connect timeout
    # (python-trio/trio-websocket#199); the successful run with the right CA shows that
    # the timeout is the certificate's doing.
    text = stderr.lower()
    if impl == "trio_websocket":
        return "connectiontimeout" in text
    return "certificate verify failed" in text or "certificate_verify_failed" in text


def _name_mismatch(impl: str, stderr: str) -> bool:
    if impl == "trio_websocket":
        return "connectiontimeout" in stderr.lower()
    return "mismatch" in stderr.lower()


@needs_picows
@needs_trustme
@pytest.mark.slow
@pytest.mark.parametrize("impl", TLS_CLIENTS)
def test_tls_client_checks_certificate_and_host_name(impl: str, certs: dict[str, Path]) -> None:
    # Each TLS client driver (and the picows load client of the server benchmarks) connects
    # with the run's CA, fails against an unknown CA and against a certificate for another
    # name: a driver that turned verification off would pass the last two.
    with _server("picows", "--certfile", str(certs["server"])) as port:
        url = f"wss://127.0.0.1:{port}/ws"
        ok = _client(impl, url, "wss_rtt64", "--cafile", str(certs["ca"]))
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert ok.stdout.startswith("RESULT "), ok.stdout
        unknown_ca = _client(impl, url, "wss_rtt64", "--cafile", str(certs["other_ca"]))
        assert unknown_ca.returncode != 0 and "RESULT" not in unknown_ca.stdout
        assert _verify_failed(impl, unknown_ca.stderr), unknown_ca.stderr[-3000:]
    with _server("picows", "--certfile", str(certs["wrong_name"])) as port:
        url = f"wss://127.0.0.1:{port}/ws"
        wrong_name = _client(impl, url, "wss_rtt64", "--cafile", str(certs["ca"]))
        assert wrong_name.returncode != 0 and "RESULT" not in wrong_name.stdout
        assert _name_mismatch(impl, wrong_name.stderr), wrong_name.stderr[-3000:]


@needs_picows
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["deflate", "idle_deflate"])
@pytest.mark.parametrize("impl", DEFLATE_CLIENTS)
def test_client_fails_when_deflate_is_not_negotiated(impl: str, scenario: str) -> None:
    # A server that declines permessage-deflate (started without --compress): the scenario
    # must fail instead of quietly measuring uncompressed messages.
    with _server("picows") as port:
        proc = _client(impl, f"ws://127.0.0.1:{port}/ws", scenario)
    assert proc.returncode != 0 and "RESULT" not in proc.stdout, proc.stdout
    assert "permessage-deflate was requested but not negotiated" in proc.stderr, proc.stderr[-3000:]


@needs_picows
@pytest.mark.slow
@pytest.mark.parametrize("impl", DEFLATE_CLIENTS)
def test_client_negotiates_deflate(impl: str) -> None:
    with _server("picows", "--compress") as port:
        proc = _client(impl, f"ws://127.0.0.1:{port}/ws", "deflate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("RESULT "), proc.stdout
