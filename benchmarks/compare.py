"""``python -m benchmarks --compare REV``: the working tree against a git revision.

REV is checked out into a temporary ``git worktree`` under the system temporary directory.
The child processes of that side ("before") import ``trio_ws`` from it: their working
directory and the first ``PYTHONPATH`` entry are a directory holding only a ``trio_ws``
link into the worktree, so the ``benchmarks`` package (the harness, the drivers and the
fixed peer) still comes from this working tree and both sides run the same harness.  The
other side ("after") is this working tree as it is, local changes included.  Runs of the
two sides and of ``trio_ws`` / ``trio_ws_pure`` are interleaved (the order rotates on
every repeat), and every run's log must name the tree it was meant to import or the run
counts as failed.  The worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from benchmarks._common import FULL, LOWER_IS_BETTER, QUICK, SCENARIOS, UNITS, skip_reason
from benchmarks.runner import (
    IMPL_LABELS,
    NOISY,
    REPO_ROOT,
    Run,
    Tree,
    _fmt,
    _git_state,
    _load_md,
    _machine_md,
    child_env,
    impl_available,
    machine_description,
    run_one,
    run_tls,
    tls_unavailable,
)

#: Flag a row when the after median is below this fraction of the before median ...
SLOWER = 0.9
#: ... or, where lower is better (idle memory), above this multiple of it.
BIGGER = 1.1

#: What a child of either side must be able to import (both roles), and where it found it.
PROBE = (
    "import trio_ws, trio_ws.web; trio_ws.ClientSession; trio_ws.web.serve; "
    "trio_ws.web.WebSocketResponse; print(trio_ws.__file__)"
)


class CompareError(Exception):
    """The comparison cannot run (bad revision, worktree or imports from the wrong tree)."""


def _git(*args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextmanager
def revision_tree(rev: str) -> Iterator[Tree]:
    """Check ``rev`` out into a temporary worktree; yield the "before" side's :class:`Tree`.

    The worktree and its directory are removed on exit, also after an error or an interrupt.
    Raises :class:`CompareError` if ``rev`` is not a commit or has no ``trio_ws`` package.
    """
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    short = _git("rev-parse", "--short", sha)
    tmp = Path(tempfile.mkdtemp(prefix=f"trio_ws-compare-{short}-"))
    worktree = tmp / "tree"
    overlay = tmp / "path"
    added = False
    try:
        _git("worktree", "add", "--detach", "--quiet", str(worktree), sha)
        added = True
        package = worktree / "trio_ws"
        if not (package / "__init__.py").is_file():
            raise CompareError(f"revision {rev} ({short}) has no trio_ws package")
        overlay.mkdir()
        (overlay / "trio_ws").symlink_to(package, target_is_directory=True)
        name = short if rev == short else f"{rev} ({short})"
        yield Tree("before", name, cwd=overlay, path_first=overlay)
    finally:
        removed = True
        if added:
            try:
                _git("worktree", "remove", "--force", str(worktree))
            except CompareError as exc:
                print(f"warning: {exc}", file=sys.stderr)
                removed = False
        shutil.rmtree(tmp, ignore_errors=True)
        if not removed:
            with suppress(CompareError):
                _git("worktree", "prune")  # forget the worktree whose directory is gone


def working_tree() -> Tree:
    """The "after" side: this working tree, as the ordinary benchmark run uses it."""
    return Tree("after", "working tree" + _git_state(), cwd=REPO_ROOT)


def expected_root(tree: Tree) -> Path:
    """The directory ``trio_ws`` must be imported from on the side of ``tree``."""
    base = tree.path_first if tree.path_first is not None else REPO_ROOT
    return (base / "trio_ws").resolve()


def imported_from(tree: Tree) -> Path:
    """Import trio_ws as that side's children do; return its ``__file__``.

    Raises :class:`CompareError` if the import fails or finds another tree's trio_ws.
    """
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree.cwd,
        env=child_env(tree),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise CompareError(f"{tree.label} ({tree.name}): {lines[-1] if lines else 'failed'}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    check_file(tree, str(path))
    return path


def check_file(tree: Tree, file: str) -> None:
    """Raise :class:`CompareError` unless ``file`` is inside ``tree``'s trio_ws package."""
    if not Path(file).resolve().is_relative_to(expected_root(tree)):
        raise CompareError(
            f"{tree.label} side imported trio_ws from {file}, expected {expected_root(tree)}"
        )


def _check_run(run: Run, tree: Tree) -> None:
    """Turn a run that imported the wrong trio_ws (or did not say) into a failed run."""
    if run.error is not None:
        return
    file = run.detail.get("trio_ws_file")
    try:
        if not isinstance(file, str):
            raise CompareError("the run's log does not name the trio_ws it imported")
        check_file(tree, file)
    except CompareError as exc:
        run.error = str(exc)
        run.value = None


def plan_runs(
    args: argparse.Namespace, sides: list[str], trees: list[Tree]
) -> list[tuple[int, str, str, str, Tree]]:
    """Every run, interleaved: the order of (impl, tree) rotates by repeat and scenario."""
    variants = [(impl, tree) for impl in args.impls for tree in trees]
    plan = []
    for repeat in range(args.repeats):
        for side in sides:
            for index, scenario in enumerate(args.scenarios):
                shift = (repeat + index) % len(variants)
                for impl, tree in variants[shift:] + variants[:shift]:
                    if skip_reason(scenario, impl) is not None:
                        continue
                    plan.append((repeat, side, scenario, impl, tree))
    return plan


Cell = dict[str, object]


def summarize(runs: list[Run]) -> dict[tuple[str, str, str], dict[str, Cell]]:
    """``{(side, scenario, impl): {tree label: {values, median, errors}}}``."""
    cells: dict[tuple[str, str, str], dict[str, Cell]] = {}
    for run in runs:
        cell = cells.setdefault((run.side, run.scenario, run.impl), {}).setdefault(
            run.tree, {"values": [], "errors": 0}
        )
        if run.value is not None:
            cell["values"].append(run.value)  # type: ignore[attr-defined]
        if run.error is not None:
            cell["errors"] = int(cell["errors"]) + 1  # type: ignore[call-overload]
    for by_tree in cells.values():
        for cell in by_tree.values():
            values = cell["values"]
            assert isinstance(values, list)
            cell["median"] = statistics.median(values) if values else None
    return cells


def verdict(scenario: str, before: float, after: float) -> str:
    """The flag of one row: empty, or what got worse by more than the tolerance."""
    if scenario in LOWER_IS_BETTER:
        return f"**more memory** (> {BIGGER:.1f}x)" if after > BIGGER * before else ""
    return f"**slower** (< {SLOWER:.1f}x)" if after < SLOWER * before else ""


def _median_text(cell: Cell | None) -> str:
    if cell is None:
        return "n/a"
    median = cell["median"]
    values = cell["values"]
    assert isinstance(values, list)
    if not isinstance(median, float):
        return "error"
    text = _fmt(median)
    if len(values) > 1 and max(values) - min(values) > NOISY * median:
        text += " ~"
    return text


def comparison_rows(cells: dict[tuple[str, str, str], dict[str, Cell]]) -> list[dict[str, object]]:
    """One row per (scenario, side, impl) in display order, with medians, ratio and flag."""
    rows = []
    keys = sorted(cells, key=lambda k: (SCENARIOS.index(k[1]), k[0] != "server", k[2]))
    for side, scenario, impl in keys:
        before = cells[(side, scenario, impl)].get("before")
        after = cells[(side, scenario, impl)].get("after")
        b = before["median"] if before is not None else None
        a = after["median"] if after is not None else None
        ratio = a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None
        flag = verdict(scenario, b, a) if isinstance(a, float) and isinstance(b, float) else ""
        if not isinstance(a, float) or not isinstance(b, float):
            flag = "**error** (see the logs)"
        rows.append(
            {
                "scenario": scenario,
                "side": side,
                "impl": impl,
                "unit": UNITS[scenario],
                "before": b,
                "after": a,
                "ratio": ratio,
                "flag": flag,
                "before_text": _median_text(before),
                "after_text": _median_text(after),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, object]], before: Tree, after: Tree) -> str:
    """The before/after table with its legend."""
    out = [
        f"| scenario | role | impl | unit | before: {before.name} | after: {after.name} "
        "| after/before | flag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["ratio"]
        unit = str(row["unit"]) + (
            " (lower is better)" if row["scenario"] in LOWER_IS_BETTER else ""
        )
        impl = IMPL_LABELS.get(str(row["impl"]), str(row["impl"]))
        out.append(
            f"| {row['scenario']} | {row['side']} | {impl} "
            f"| {unit} | {row['before_text']} | {row['after_text']} "
            f"| {f'x{ratio:.2f}' if isinstance(ratio, float) else '-'} | {row['flag']} |"
        )
    out.append("")
    out.append(
        "Medians over the repeats of each side. Role server = trio_ws is the echo server "
        "(fixed picows load client); client = trio_ws is the client (fixed picows echo "
        f"server). Flagged: after < {SLOWER:.1f}x before, or for `idle` and `idle_deflate` "
        f"(memory, lower is better) after > {BIGGER:.1f}x before. ~ = the runs spread by more than "
        f"{NOISY:.0%} of the median."
    )
    return "\n".join(out) + "\n"


def _sides_md(trees: list[Tree], files: dict[str, Path]) -> str:
    lines = []
    for tree in trees:
        shown = files[tree.label]
        real = shown.resolve()
        where = f"{shown}" + (f" (-> {real})" if real != shown else "")
        lines.append(f"- {tree.label}: {tree.name}; trio_ws imported from {where}\n")
    return "".join(lines)


def run_comparison(args: argparse.Namespace) -> int:
    """Run the interleaved comparison ``args`` describes; return the process exit code."""
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # so the worktree is removed on the way out

    signal.signal(signal.SIGTERM, terminate)
    try:
        with revision_tree(args.compare) as before:
            return _compare(args, before, working_tree())
    except CompareError as exc:
        print(f"--compare: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _compare(args: argparse.Namespace, before: Tree, after: Tree) -> int:
    started = time.monotonic()
    args.load_avg = {"start": os.getloadavg()[0]}
    if args.load_avg["start"] > 0.5:
        print(
            f"warning: load average is {args.load_avg['start']:.2f}; other processes compete "
            "for the cores and will make the figures noisy",
            file=sys.stderr,
        )
    sides = ["server", "client"] if args.side == "both" else [args.side]
    missing = tls_unavailable(args.scenarios)
    if missing is not None:
        raise CompareError(missing)
    for side in sides:
        reason = impl_available("picows", side)
        if reason is not None:
            raise CompareError(f"the fixed peer (picows) is not importable: {reason}")
    trees = [before, after]
    files = {tree.label: imported_from(tree) for tree in trees}
    if files["before"].resolve() == files["after"].resolve():
        raise CompareError(f"both sides import trio_ws from {files['before']}")
    header = _sides_md(trees, files)
    print(header, end="", file=sys.stderr)

    out: Path = args.out
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    table_params = QUICK if args.quick else FULL
    plan = plan_runs(args, sides, trees)
    runs: list[Run] = []
    with run_tls(args.scenarios) as tls:
        for n, (repeat, side, scenario, impl, tree) in enumerate(plan, 1):
            params = table_params[scenario]
            run = run_one(side, scenario, impl, repeat, params, logdir, tree, tls=tls)
            _check_run(run, tree)
            runs.append(run)
            if run.error is None and run.value is not None:
                status = f"{_fmt(run.value)} {run.unit}"
                status += " (time-bounded)" if run.truncated else ""
            else:
                status = f"ERROR {run.error}"
            print(
                f"[{n}/{len(plan)}] {side:6} {scenario:12} {impl:12} {tree.label:6} {status}",
                file=sys.stderr,
            )

    elapsed = time.monotonic() - started
    args.load_avg["end"] = os.getloadavg()[0]
    rows = comparison_rows(summarize(runs))
    table = markdown_table(rows, before, after)
    machine = machine_description()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    command = ("python -m benchmarks " + " ".join(sys.argv[1:])).strip()
    body = f"# Before/after comparison {stamp}\n\nCommand: `{command}`\n\n{header}"
    body += f"- Repeats: {args.repeats}; wall time {elapsed / 60:.1f} min\n"
    body += _machine_md(machine) + _load_md(args) + "\n" + table
    data = {
        "timestamp": stamp,
        "command": command,
        "quick": args.quick,
        "repeats": args.repeats,
        "elapsed_s": elapsed,
        "load_avg_1min": args.load_avg,
        "machine": machine,
        "sides": {
            tree.label: {"name": tree.name, "trio_ws_file": str(files[tree.label])}
            for tree in trees
        },
        "params": {s: asdict(table_params[s]) for s in args.scenarios},
        "rows": [{k: v for k, v in row.items() if not k.endswith("_text")} for row in rows],
        "runs": [asdict(r) for r in runs],
    }
    for name in (f"compare-{stamp}", "compare-latest"):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (out / f"{name}.md").write_text(body)
    print(header + "\n" + table)
    print(f"wrote {out / f'compare-{stamp}.md'} and .json ({elapsed:.0f} s)", file=sys.stderr)
    return 1 if any(r.error is not None for r in runs) else 0
