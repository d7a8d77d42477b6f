"""The benchmark harness: starts servers and clients, collects results, writes reports."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO

from benchmarks._common import (
    FIXED_PEER,
    FULL,
    IDLE_SCENARIOS,
    IMPLS,
    IMPORTED,
    LOWER_IS_BETTER,
    QUICK,
    SCENARIOS,
    UNITS,
    Params,
    is_tls,
    params_to_argv,
    raise_fd_limit,
    skip_reason,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
BASELINE = "trio_ws"
#: The implementations ``--compare`` runs on both sides of the comparison.
COMPARE_IMPLS = ("trio_ws", "trio_ws_pure")
SERVER_CPU = 0
CLIENT_CPU = 1
#: Cells whose runs spread by more than this fraction of the median are marked noisy.
NOISY = 0.3

DISTRIBUTIONS = {
    "trio_ws": "trio_ws",
    "numpy (trio_ws speedups)": "numpy",
    "trio": "trio",
    "wsproto": "wsproto",
    "h11": "h11",
    "trio-websocket": "trio-websocket",
    "websockets": "websockets",
    "aiohttp": "aiohttp",
    "picows": "picows",
}

IMPL_LABELS = {
    "trio_ws": "trio_ws",
    "trio_ws_pure": "trio_ws (no speedups)",
    "trio_websocket": "trio-websocket",
    "websockets_trio": "websockets (trio)",
    "websockets_asyncio": "websockets (asyncio)",
    "aiohttp": "aiohttp",
}


@dataclass(frozen=True)
class Tree:
    """Where the child processes of one side of a ``--compare`` run import ``trio_ws`` from.

    ``path_first`` goes in front of ``PYTHONPATH`` and ``cwd`` is the children's working
    directory (``python -m`` puts it first on ``sys.path``, ahead of ``PYTHONPATH``).  The
    ``benchmarks`` package always comes from this working tree, so both sides run the same
    harness.
    """

    label: str
    name: str
    cwd: Path
    path_first: Path | None = None


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one run's TLS setup: a CA, and a server certificate it signed.

    The server certificate is for ``127.0.0.1`` and ``localhost``; ``server`` holds its
    private key and chain, ``ca`` the CA certificate the clients trust (and nothing else).
    """

    ca: Path
    server: Path


@contextmanager
def tls_files() -> Iterator[TlsFiles]:
    """Make a CA and a server certificate with ``trustme``, in a temporary directory.

    Made once per run (every TLS run shares them) and removed on exit. Raises
    ``ImportError`` if trustme is not installed (it comes with the ``test`` extra).
    """
    import trustme

    with tempfile.TemporaryDirectory(prefix="trio_ws-bench-tls-") as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        files = TlsFiles(ca=Path(tmp) / "ca.pem", server=Path(tmp) / "server.pem")
        ca.cert_pem.write_to_path(str(files.ca))
        cert.private_key_and_cert_chain_pem.write_to_path(str(files.server))
        yield files


def child_env(tree: Tree | None = None) -> dict[str, str]:
    """Environment of a benchmark child process (``tree`` picks where trio_ws comes from)."""
    env = dict(os.environ)
    first = [str(tree.path_first)] if tree is not None and tree.path_first is not None else []
    env["PYTHONPATH"] = os.pathsep.join(
        [*first, str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


@dataclass
class Run:
    side: str
    scenario: str
    impl: str
    repeat: int
    tree: str = ""
    value: float | None = None
    unit: str = ""
    truncated: bool = False
    error: str | None = None
    detail: dict[str, object] = field(default_factory=dict)


class Child:
    """A benchmark subprocess whose stdout lines are read by a background thread."""

    def __init__(
        self, argv: list[str], cpu: int | None, log: IO[bytes], stdin: bool, tree: Tree | None
    ) -> None:
        env = child_env(tree)

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO_ROOT if tree is None else tree.cwd,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=pin,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            raise TimeoutError("no answer from child process") from None
        if line is None:
            raise RuntimeError(f"child process exited (code {self.proc.wait()})")
        return line

    def tell(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def _rss(pid: int) -> int:
    """Resident set size of a process, in bytes (psutil if present, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process(pid).memory_info().rss)


def _pinning() -> tuple[int | None, int | None]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[SERVER_CPU], cpus[CLIENT_CPU]


def run_one(
    side: str,
    scenario: str,
    impl: str,
    repeat: int,
    params: Params,
    logdir: Path,
    tree: Tree | None = None,
    tls: TlsFiles | None = None,
) -> Run:
    """One measurement: ``impl`` on ``side``, the fixed peer on the other side.

    With ``tree``, the child running ``impl`` imports trio_ws from that tree (the fixed
    peer's child does not import trio_ws, and runs the same way). A ``wss_*`` scenario
    needs ``tls`` (the server gets its certificate, the client the CA); without it the run
    fails.
    """
    label = tree.label if tree is not None else ""
    run = Run(side, scenario, impl, repeat, tree=label, unit=UNITS[scenario])
    server_impl = impl if side == "server" else FIXED_PEER
    client_impl = FIXED_PEER if side == "server" else impl
    server_cpu, client_cpu = _pinning()
    log_path = logdir / f"{side}-{scenario}-{impl}{'-' + label if label else ''}-{repeat}.log"
    budget = params.max_time * 3 + 60
    started = time.monotonic()
    server = client = None
    with open(log_path, "wb") as log:
        try:
            secure = is_tls(scenario)
            if secure and tls is None:
                raise RuntimeError(f"{scenario} needs the run's TLS files")
            server_argv = ["-m", f"benchmarks.server_{server_impl}"]
            if params.compress:
                server_argv.append("--compress")
            if secure and tls is not None:
                server_argv += ["--certfile", str(tls.server)]
            server = Child(server_argv, server_cpu, log, stdin=False, tree=tree)
            ready = server.next_line(60)
            if not ready.startswith("READY "):
                raise RuntimeError(f"unexpected server output: {ready!r}")
            port = int(ready.split()[1])
            client_argv = [
                "-m",
                f"benchmarks.client_{client_impl}",
                "--url",
                f"{'wss' if secure else 'ws'}://127.0.0.1:{port}/ws",
                "--scenario",
                scenario,
                *params_to_argv(params),
            ]
            if secure and tls is not None:
                client_argv += ["--cafile", str(tls.ca)]
            client = Child(client_argv, client_cpu, log, stdin=True, tree=tree)
            measured = server if side == "server" else client
            rss: dict[str, int] = {}
            deadline = time.monotonic() + budget
            while True:
                line = client.next_line(deadline - time.monotonic())
                if line.startswith("PHASE "):
                    rss[line.split()[1]] = _rss(measured.proc.pid)
                    client.tell("go")
                elif line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT ") :])
                    break
            client.proc.wait(max(deadline - time.monotonic(), 1))
            if scenario in IDLE_SCENARIOS:
                conns = int(result["done"])
                run.value = (rss["loaded"] - rss["base"]) / conns / 1024
                run.detail = {"rss_base": rss["base"], "rss_loaded": rss["loaded"], "conns": conns}
            else:
                run.value = float(result["value"])
                run.truncated = bool(result["truncated"])
                run.detail = {"done": result["done"], "elapsed": result["elapsed"]}
            run.detail["wall_s"] = round(time.monotonic() - started, 2)
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            for child in (client, server):
                if child is not None:
                    child.stop()
    logged = log_path.read_text(errors="replace").strip().splitlines()
    for line in logged:
        words = line.split(maxsplit=2)
        if len(words) == 3 and words[0] == IMPORTED and words[1] == "trio_ws":
            run.detail["trio_ws_file"] = words[2]
    if run.error is not None:
        tail = logged[-8:]
        run.error += "\n    " + "\n    ".join(tail) if tail else ""
    return run


SERVER_CHECKS = {
    "trio_ws": "import trio_ws.web; trio_ws.web.serve; trio_ws.web.WebSocketResponse",
    "trio_ws_pure": "import trio_ws.web; trio_ws.web.serve; trio_ws.web.WebSocketResponse",
    "trio_websocket": "import trio_websocket",
    "websockets_trio": "import websockets.trio.server",
    "websockets_asyncio": "import websockets.asyncio.server",
    "aiohttp": "import aiohttp.web",
    "picows": "import picows",
}
CLIENT_CHECKS = {
    "trio_ws": "import trio_ws; trio_ws.ClientSession",
    "trio_ws_pure": "import trio_ws; trio_ws.ClientSession",
    "trio_websocket": "import trio_websocket",
    "websockets_trio": "import websockets.trio.client",
    "websockets_asyncio": "import websockets.asyncio.client",
    "aiohttp": "import aiohttp",
    "picows": "import picows",
}


def impl_available(impl: str, side: str) -> str | None:
    """``None`` if ``impl`` can run on ``side`` (server or client) here, else why not."""
    check = (SERVER_CHECKS if side == "server" else CLIENT_CHECKS)[impl]
    proc = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def summarize(runs: list[Run]) -> dict[str, dict[str, dict[str, dict[str, object]]]]:
    """``summary[side][scenario][impl] = {median, n, values, ratio, errors}``."""
    summary: dict[str, dict[str, dict[str, dict[str, object]]]] = {}
    for run in runs:
        cell = (
            summary.setdefault(run.side, {})
            .setdefault(run.scenario, {})
            .setdefault(run.impl, {"values": [], "errors": [], "truncated": False})
        )
        if run.value is not None:
            cell["values"].append(run.value)  # type: ignore[union-attr]
            cell["truncated"] = bool(cell["truncated"]) or run.truncated
        if run.error is not None:
            cell["errors"].append(run.error)  # type: ignore[union-attr]
    for scenarios in summary.values():
        for cells in scenarios.values():
            for cell in cells.values():
                values = cell["values"]
                assert isinstance(values, list)
                cell["median"] = statistics.median(values) if values else None
                cell["n"] = len(values)
            base = cells.get(BASELINE, {}).get("median")
            for cell in cells.values():
                median = cell["median"]
                ok = isinstance(base, float) and base > 0 and isinstance(median, float)
                cell["ratio"] = median / base if ok else None  # type: ignore[operator]
    return summary


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_tables(
    summary: dict[str, dict[str, dict[str, dict[str, object]]]], impls: list[str]
) -> str:
    out = []
    titles = {
        "server": "Server side (implementation = echo server, fixed picows load client)",
        "client": "Client side (implementation = client, fixed picows echo server)",
    }
    for side in ("server", "client"):
        if side not in summary:
            continue
        out.append(f"### {titles[side]}\n")
        header = "| scenario | unit | " + " | ".join(IMPL_LABELS.get(i, i) for i in impls) + " |"
        out.append(header)
        out.append("|" + "---|" * (len(impls) + 2))
        for scenario in SCENARIOS:
            cells = summary[side].get(scenario)
            if cells is None:
                continue
            unit = UNITS[scenario] + (" (lower is better)" if scenario in LOWER_IS_BETTER else "")
            row = [scenario, unit]
            for impl in impls:
                cell = cells.get(impl)
                if cell is None:
                    row.append("n/a")
                    continue
                median = cell["median"]
                if not isinstance(median, float):
                    row.append("error")
                    continue
                text = _fmt(median)
                ratio = cell["ratio"]
                if impl != BASELINE and isinstance(ratio, float):
                    text += f" (x{ratio:.2f})"
                if cell["truncated"]:
                    text += " †"
                values = cell["values"]
                assert isinstance(values, list)
                if len(values) > 1 and (max(values) - min(values)) > NOISY * median:
                    text += " ~"
                row.append(text)
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out.append(
        "Cells are medians over the repeats; (xR) is that median divided by trio_ws's median. "
        "Higher is better except for `idle` and `idle_deflate` (server or client RSS per idle "
        "connection, lower is better). `wss_*` rows run over TLS against the picows peer over "
        "TLS (trustme CA, certificate and hostname checked). † = at least one run hit its "
        "time bound before finishing its count (the figure "
        f"is still work done / time taken). ~ = the runs spread by more than {NOISY:.0%} of the "
        "median (max - min), so read that ratio with care. n/a = not run: not supported "
        "(trio-websocket has no permessage-deflate: `deflate`, `idle_deflate`) or not "
        "importable (see Skipped)."
    )
    return "\n".join(out) + "\n"


def _git_state() -> str:
    """`` at <last commit touching trio_ws/>`` plus ``+ local changes`` if it is modified."""
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "trio_ws"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "trio_ws"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode != 0:
        return ""
    return f" at {head.stdout.strip()}" + (" + local changes" if dirty.stdout.strip() else "")


def machine_description() -> dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for label, dist in DISTRIBUTIONS.items():
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[label] = "not installed"
    if versions["trio_ws"] == "not installed":
        try:
            out = subprocess.run(
                [sys.executable, "-c", "import trio_ws; print(trio_ws.__version__)"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if out.returncode == 0:
                versions["trio_ws"] = out.stdout.strip() + " (working tree)"
        except (OSError, subprocess.SubprocessError):
            pass
    versions["trio_ws"] += _git_state()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "versions": versions,
    }


def _machine_md(machine: dict[str, object]) -> str:
    versions = machine["versions"]
    assert isinstance(versions, dict)
    libs = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (
        f"- CPU: {machine['cpu']}, {machine['cores']} cores (server pinned to core "
        f"{SERVER_CPU}, client to core {CLIENT_CPU})\n"
        f"- Python {machine['python']} ({machine['implementation']}), Linux {machine['kernel']}\n"
        f"- Libraries: {libs}\n"
    )


def _load_md(args: argparse.Namespace) -> str:
    load = args.load_avg
    return (
        f"- Load average (1 min) at start / end: {load['start']:.2f} / {load['end']:.2f} "
        "(anything above ~0.3 means other processes shared the two cores)\n"
    )


def write_reports(
    out: Path,
    runs: list[Run],
    impls: list[str],
    args: argparse.Namespace,
    elapsed: float,
    skipped: dict[str, str],
) -> tuple[Path, Path, str]:
    summary = summarize(runs)
    machine = machine_description()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    table = markdown_tables(summary, impls)
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    data = {
        "timestamp": stamp,
        "command": command.strip(),
        "quick": args.quick,
        "repeats": args.repeats,
        "elapsed_s": elapsed,
        "load_avg_1min": args.load_avg,
        "machine": machine,
        "params": {s: asdict((QUICK if args.quick else FULL)[s]) for s in args.scenarios},
        "skipped": skipped,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    json_path = out / f"results-{stamp}.json"
    md_path = out / f"results-{stamp}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    body = f"# Benchmark results {stamp}\n\nCommand: `{command.strip()}`\n\n"
    body += _machine_md(machine) + _load_md(args) + "\n" + table
    if skipped:
        body += "\nSkipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n"
    md_path.write_text(body)
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "latest.md").write_text(body)
    return json_path, md_path, table


RESULTS_INTRO = """\
# trio_ws benchmark results

Produced by `.venv/bin/python -m benchmarks` (see `benchmarks/README.md` for the method);
this file is rewritten by every run without `--quick`.

Each implementation runs once as an echo **server** driven by one fixed, fast load client
(picows, callback based, on asyncio), and once as a **client** against one fixed, fast echo
server (picows), so only one side differs between columns. The server process is pinned to
one core and the client process to the other. Runs of the implementations are interleaved and
repeated; the figures are medians.

Scenarios (compression off unless stated): `rtt64` sequential round trips of 64-byte messages
on one connection; `pipe64` 64-byte messages with a bounded in-flight window; `big1m` 1 MiB
messages echoed (MB/s of payload one way); `fanout` 200 connected clients, the server
broadcasts 64-byte messages to all (deliveries/s); `handshake` connect, one message, close;
`idle` RSS growth per idle connection over 2,000 connections (KiB, lower is better);
`deflate` like `pipe64` with 1 KiB JSON-like text and permessage-deflate; `idle_deflate`
like `idle` over 500 connections that negotiated permessage-deflate (as browsers do) and
each echoed one 1 KiB text message; `wss_rtt64`, `wss_pipe64`, `wss_big1m` as the plain
scenarios over TLS (both peers; a trustme CA made for the run, certificate and hostname
checks on; the fixed peer is picows over TLS).

`trio_ws` runs with its optional `speedups` extra (numpy masking); `trio_ws (no speedups)` is
the pure-Python install. How the figures compare with the performance targets, and for a
target not met the profile of where the time goes and what would be needed, is in
`docs/performance.md` (section "Targets").
"""


def write_results_md(
    runs_md: str, machine: dict[str, object], args: argparse.Namespace, elapsed: float
) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = ".venv/bin/python -m benchmarks " + " ".join(sys.argv[1:])
    text = RESULTS_INTRO + "\n## Latest run\n\n"
    text += f"- Date: {stamp}; command: `{command.strip()}`; repeats: {args.repeats}; "
    text += f"wall time {elapsed / 60:.1f} min\n"
    text += _machine_md(machine) + _load_md(args) + "\n" + runs_md
    RESULTS_MD.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare trio_ws with other WebSocket implementations, as server and client.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI smoke, < 60 s)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--impls",
        default=None,
        help=f"comma-separated subset of {','.join(IMPLS)} "
        f"(with --compare: of {','.join(COMPARE_IMPLS)}, the default)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per cell (default 3, with --compare 5; quick 1)",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        default=None,
        help="run the working tree and git revision REV (checked out in a temporary worktree) "
        "interleaved, trio_ws columns only, and print a before/after table",
    )
    parser.add_argument("--side", choices=("server", "client", "both"), default="both")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="output directory")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    allowed = COMPARE_IMPLS if args.compare is not None else IMPLS
    impls = ",".join(allowed) if args.impls is None else args.impls
    args.impls = [i.strip() for i in impls.split(",") if i.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    for i in args.impls:
        if i not in allowed:
            what = "--compare runs only" if args.compare is not None else "known:"
            parser.error(f"unknown implementation {i!r} ({what} {','.join(allowed)})")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5 if args.compare is not None else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks the command line asks for; return the process exit code."""
    args = parse_args(argv)
    raise_fd_limit()
    if args.compare is not None:
        from benchmarks.compare import run_comparison

        return run_comparison(args)
    started = time.monotonic()
    args.load_avg = {"start": os.getloadavg()[0]}
    if args.load_avg["start"] > 0.5:
        print(
            f"warning: load average is {args.load_avg['start']:.2f}; other processes compete "
            "for the cores and will make the figures noisy",
            file=sys.stderr,
        )
    out: Path = args.out
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)

    sides = ["server", "client"] if args.side == "both" else [args.side]
    skipped: dict[str, str] = {}
    for impl in [FIXED_PEER, *args.impls]:
        for side in sides:
            reason = impl_available(impl, side)
            if reason is not None:
                skipped[f"{impl} ({side})"] = reason
                print(f"skipping {impl} as {side}: {reason}", file=sys.stderr)
    if any(key.startswith(FIXED_PEER) for key in skipped):
        print("the fixed peer (picows) is not importable: pip install picows", file=sys.stderr)
        return 2
    impls = [i for i in args.impls if not all(f"{i} ({side})" in skipped for side in sides)]
    table_params = QUICK if args.quick else FULL
    missing = tls_unavailable(args.scenarios)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    with run_tls(args.scenarios) as tls:
        runs = _run_plan(args, sides, impls, skipped, table_params, logdir, tls)

    elapsed = time.monotonic() - started
    args.load_avg["end"] = os.getloadavg()[0]
    json_path, md_path, table = write_reports(out, runs, impls, args, elapsed, skipped)
    print(table)
    print(f"wrote {json_path} and {md_path} ({elapsed:.0f} s)", file=sys.stderr)
    if not args.quick:
        write_results_md(table, machine_description(), args, elapsed)
        print(f"wrote {RESULTS_MD}", file=sys.stderr)
    errors = [r for r in runs if r.error is not None]
    return 1 if errors else 0


def tls_unavailable(scenarios: list[str]) -> str | None:
    """Why the TLS scenarios among ``scenarios`` cannot run here, or ``None`` if they can."""
    if any(is_tls(s) for s in scenarios) and importlib.util.find_spec("trustme") is None:
        return "the wss_* scenarios need trustme for their certificates: pip install trustme"
    return None


@contextmanager
def run_tls(scenarios: list[str]) -> Iterator[TlsFiles | None]:
    """The run's TLS files if any of ``scenarios`` runs over TLS, else ``None``."""
    if not any(is_tls(s) for s in scenarios):
        yield None
        return
    with tls_files() as files:
        yield files


def _run_plan(
    args: argparse.Namespace,
    sides: list[str],
    impls: list[str],
    skipped: dict[str, str],
    table_params: dict[str, Params],
    logdir: Path,
    tls: TlsFiles | None,
) -> list[Run]:
    plan = []
    for repeat in range(args.repeats):
        for side in sides:
            for scenario in args.scenarios:
                # Rotate the order every repeat so no implementation always runs first.
                shift = (repeat + args.scenarios.index(scenario)) % max(len(impls), 1)
                for impl in impls[shift:] + impls[:shift]:
                    if skip_reason(scenario, impl) is not None:
                        continue
                    if f"{impl} ({side})" in skipped:
                        continue
                    plan.append((repeat, side, scenario, impl))

    runs: list[Run] = []
    for n, (repeat, side, scenario, impl) in enumerate(plan, 1):
        run = run_one(side, scenario, impl, repeat, table_params[scenario], logdir, tls=tls)
        runs.append(run)
        if run.error is None and run.value is not None:
            status = f"{_fmt(run.value)} {run.unit}" + (" (time-bounded)" if run.truncated else "")
        else:
            status = f"ERROR {run.error}"
        print(f"[{n}/{len(plan)}] {side:6} {scenario:12} {impl:18} {status}", file=sys.stderr)
    return runs
