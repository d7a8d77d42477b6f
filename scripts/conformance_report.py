"""Summarise kosoku's Autobahn TestSuite reports for trio_ws into docs/conformance.md.

Reads ``reports/autobahn/server`` and ``reports/autobahn/client`` (written by
``tests/conformance/test_autobahn.py``) and imports that test module for the reasons it accepts
NON-STRICT and UNIMPLEMENTED cases. Writes counts per behaviour and per section for both sides,
the accepted cases with their reasons, every other case that did not pass, and how to
regenerate the page.

Usage: ``.venv/bin/python scripts/conformance_report.py [--reports DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = ROOT / "tests" / "conformance" / "test_autobahn.py"

SIDES = ("server", "client")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
SHORT = {"OK": "OK", "NON-STRICT": "NS", "INFORMATIONAL": "INFO", "UNIMPLEMENTED": "UNIMPL"}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}
SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Misc (auto-fragmentation)",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}
REGENERATE = (
    ".venv/bin/pytest -m conformance tests/conformance\n"
    ".venv/bin/python scripts/conformance_report.py"
)

Report = dict[str, Any]
Side = tuple[str, dict[str, Report]]  # agent, case id -> report
Reasons = dict[str, dict[str, str]]  # side -> case id -> reason


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def load_side(outdir: Path) -> Side:
    """The agent name and case id -> per-case report for one side's report folder."""
    index = json.loads((outdir / "index.json").read_text())
    if len(index) != 1:
        raise SystemExit(f"{outdir}/index.json: expected one agent, got {sorted(index)}")
    ((agent, entries),) = index.items()
    reports = {
        case: json.loads((outdir / entry["reportfile"]).read_text())
        for case, entry in entries.items()
    }
    return agent, dict(sorted(reports.items(), key=lambda item: case_key(item[0])))


def accepted_reasons(test_file: Path) -> tuple[Reasons, Reasons]:
    """The test module's NON_STRICT_ACCEPTED and UNIMPLEMENTED_ACCEPTED.

    Importing the module only defines names; it runs nothing.
    """
    spec = importlib.util.spec_from_file_location("_trio_ws_autobahn_test", test_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {test_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NON_STRICT_ACCEPTED, module.UNIMPLEMENTED_ACCEPTED


def revision() -> str:
    """The checkout's commit, marked when trio_ws/ has uncommitted changes; "" without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "trio_ws"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"{head} with uncommitted changes to trio_ws/" if dirty else head


def wall_time(reports: dict[str, Report]) -> float:
    """Seconds from the first case's start to the last case's end."""
    spans = [
        (
            datetime.datetime.fromisoformat(r["started"].replace("Z", "+00:00")).timestamp(),
            float(r["duration"]) / 1000,
        )
        for r in reports.values()
    ]
    start = min(begin for begin, _ in spans)
    return max(begin + length for begin, length in spans) - start


def escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def summary(description: str, limit: int = 160) -> str:
    """The case description's first paragraph, without markup, cut after a sentence if long."""
    text = escape(re.sub(r"</?[a-z]+>", "", description.split("<br>")[0]))
    if len(text) > limit and ". " in text[:limit]:
        text = text[: text.index(". ") + 1]
    return text


def ranges(cases: list[str]) -> str:
    """``13.2.1 to 13.2.18, 13.5.1`` for a sorted list of case ids."""
    out: list[str] = []
    run: list[str] = []
    for case in cases:
        if run:
            head, _, last = run[-1].rpartition(".")
            this_head, _, this = case.rpartition(".")
            if this_head == head and last.isdigit() and int(this) == int(last) + 1:
                run.append(case)
                continue
            out.append(run[0] if len(run) == 1 else f"{run[0]} to {run[-1]}")
        run = [case]
    if run:
        out.append(run[0] if len(run) == 1 else f"{run[0]} to {run[-1]}")
    return ", ".join(out)


def render_accepted(
    add: Callable[[str], None], sides: dict[str, Side], reasons: Reasons, behavior: str
) -> None:
    """The cases that came out as ``behavior`` (or are accepted as such) and why.

    A table with one row per case when there are few, one line per side and reason otherwise.
    """
    cases: dict[str, Report] = {}
    for side, (_, reports) in sides.items():
        for case, report in reports.items():
            if report["behavior"] == behavior or case in reasons.get(side, {}):
                cases.setdefault(case, report)
    if not cases:
        add("None.")
        add("")
        return
    letters: dict[str, str] = {}  # reason text -> its letter

    def letter(reason: str) -> str:
        return letters.setdefault(reason, chr(ord("A") + len(letters)))

    if len(cases) <= 20:
        add("| case | what it tests | " + " | ".join(sides) + " | reason |")
        add("|---|---|" + "---|" * len(sides) + "---|")
        for case in sorted(cases, key=case_key):
            cells = [case, summary(cases[case]["description"])]
            keys: list[str] = []
            for side, (_, reports) in sides.items():
                got = reports[case]["behavior"] if case in reports else "not run"
                reason = reasons.get(side, {}).get(case)
                if reason is None:
                    cells.append(got + (" (no reason: the test fails)" if got == behavior else ""))
                    continue
                if letter(reason) not in keys:
                    keys.append(letter(reason))
                cells.append(got)
            cells.append(", ".join(keys))
            add("| " + " | ".join(cells) + " |")
        add("")
    else:
        for side, (_, reports) in sides.items():
            by_reason: dict[str, list[str]] = {}
            for case in sorted(cases, key=case_key):
                if case in reports and (
                    reports[case]["behavior"] == behavior or case in reasons.get(side, {})
                ):
                    reason = reasons.get(side, {}).get(case, "")
                    by_reason.setdefault(reason, []).append(case)
            for reason, listed in by_reason.items():
                counts = Counter(reports[case]["behavior"] for case in listed)
                got = ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
                why = f"reason {letter(reason)}" if reason else "no reason: the test fails"
                add(f"- {side}: {ranges(listed)} ({got}; {why})")
        add("")
    for reason, key in letters.items():
        add(f"- **{key}**: {escape(reason)}")
    add("")


def render(sides: dict[str, Side], non_strict: Reasons, unimplemented: Reasons) -> str:
    lines: list[str] = []
    add = lines.append
    add("# Autobahn TestSuite conformance")
    add("")
    add(
        "trio_ws is checked against the [Autobahn TestSuite](https://github.com/crossbario/"
        "autobahn-testsuite) cases, run by [kosoku](https://pypi.org/project/kosoku/) "
        f"{importlib.metadata.version('kosoku')}: as a **server** (kosoku's fuzzing client drives "
        "`tests/conformance/autobahn_server.py`, an echo server) and as a **client** "
        "(`tests/conformance/autobahn_client.py` runs every case against kosoku's fuzzing "
        "server). Both echo peers enable permessage-deflate and lift the message size limit."
    )
    add("")
    add(
        "Verdicts: **OK** is exactly what the case requires; **NON-STRICT** stays within the "
        "RFC's MUSTs but misses a SHOULD or a canonical behaviour; **INFORMATIONAL** cases probe "
        "behaviour the RFC leaves open; **UNIMPLEMENTED** means a feature the case needs was not "
        "negotiated or is missing; **FAILED** breaks a MUST. The closing handshake gets its own "
        "verdict, counted under *close not OK*."
    )
    add("")
    rev = revision()
    add(
        "*Generated by `scripts/conformance_report.py`"
        + (f" at commit `{rev}`" if rev else "")
        + "; do not edit by hand.*"
    )
    add("")

    add("## Summary")
    add("")
    add("| | " + " | ".join(sides) + " |")
    add("|---|" + "---:|" * len(sides))
    add("| agent | " + " | ".join(f"`{agent}`" for agent, _ in sides.values()) + " |")
    add("| cases run | " + " | ".join(str(len(reports)) for _, reports in sides.values()) + " |")
    for behavior in BEHAVIORS:
        counts = [
            Counter(r["behavior"] for r in reports.values())[behavior]
            for _, reports in sides.values()
        ]
        add(f"| {behavior} | " + " | ".join(map(str, counts)) + " |")
    close_bad = [
        sum(r["behaviorClose"] not in PASSING_CLOSE for r in reports.values())
        for _, reports in sides.values()
    ]
    add("| close not OK | " + " | ".join(map(str, close_bad)) + " |")
    times = [f"{wall_time(reports) / 60:.1f} min" for _, reports in sides.values()]
    add("| wall time | " + " | ".join(times) + " |")
    add("")
    all_sections = sorted(SECTIONS, key=int)
    left_out: dict[str, list[str]] = {}
    for side, (_, reports) in sides.items():
        ran = {case.split(".")[0] for case in reports}
        missing = ", ".join(section for section in all_sections if section not in ran)
        if missing:
            left_out.setdefault(missing, []).append(side)
    for missing, which in left_out.items():
        runs = "runs" if len(which) > 1 else "run"
        add(
            f"The {' and '.join(which)} {runs} left out sections {missing} "
            "(`TRIO_WS_AUTOBAHN_QUICK=1`); run without it for the whole suite."
        )
        add("")

    add("## Per section")
    add("")
    header = ["section", "cases"] + [
        f"{side} {SHORT.get(b, b)}" for side in sides for b in BEHAVIORS
    ]
    add("| " + " | ".join(header) + " |")
    add("|---|" + "---:|" * (len(header) - 1))
    for section in all_sections:
        per_side = {
            side: [r for case, r in reports.items() if case.split(".")[0] == section]
            for side, (_, reports) in sides.items()
        }
        cases = max(len(rows) for rows in per_side.values())
        if not cases:
            continue
        cells = [f"{section} {SECTIONS[section]}", str(cases)]
        for side in sides:
            found = Counter(r["behavior"] for r in per_side[side])
            cells += [str(found[b]) if per_side[side] else "-" for b in BEHAVIORS]
        add("| " + " | ".join(cells) + " |")
    add("")

    add("## NON-STRICT cases")
    add("")
    add(
        "Each case below is listed in `NON_STRICT_ACCEPTED` in the test, with the reason it is "
        "accepted; any other NON-STRICT case fails the test. A listed case may also come out OK: "
        "those that depend on timing change from run to run."
    )
    add("")
    render_accepted(add, sides, non_strict, "NON-STRICT")
    add("## UNIMPLEMENTED cases")
    add("")
    add(
        "Each case below is listed in `UNIMPLEMENTED_ACCEPTED` in the test, with the reason; any "
        "other UNIMPLEMENTED case fails the test."
    )
    add("")
    render_accepted(add, sides, unimplemented, "UNIMPLEMENTED")

    add("## Other cases that do not pass")
    add("")
    any_bad = False
    for side, (_, reports) in sides.items():
        rows = [
            r
            for case, r in reports.items()
            if r["behaviorClose"] not in PASSING_CLOSE
            or not (
                r["behavior"] in PASSING
                or (r["behavior"] == "UNIMPLEMENTED" and case in unimplemented.get(side, {}))
            )
        ]
        if not rows:
            continue
        any_bad = True
        add(f"### {side.capitalize()}")
        add("")
        add("| case | behaviour | close | what it tests | kosoku says |")
        add("|---|---|---|---|---|")
        for r in rows:
            said = r["result"] if r["behavior"] not in PASSING else r["resultClose"]
            add(
                f"| {r['id']} | {r['behavior']} | {r['behaviorClose']} | "
                f"{summary(r['description'])} | {escape(said)} |"
            )
        add("")
    if not any_bad:
        add("None.")
        add("")

    add("## Regenerate")
    add("")
    add("```sh")
    add(REGENERATE)
    add("```")
    add("")
    add(
        "The tests run all 517 cases per side (12 to 13 minutes in all on a 2-core machine); "
        "`TRIO_WS_AUTOBAHN_QUICK=1` leaves out sections 9, 12 and 13 (under 10 seconds). Reports "
        "land in `reports/autobahn/{server,client}/` (`index.html` to browse, one JSON file per "
        "case with the wire log)."
    )
    add("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports" / "autobahn")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "conformance.md")
    parser.add_argument("--test-file", type=Path, default=TEST_FILE)
    args = parser.parse_args(argv)

    sides: dict[str, Side] = {}
    for side in SIDES:
        outdir = args.reports / side
        if not (outdir / "index.json").exists():
            raise SystemExit(f"no reports in {outdir}; run the conformance tests first")
        sides[side] = load_side(outdir)
    non_strict, unimplemented = accepted_reasons(args.test_file)
    args.out.write_text(render(sides, non_strict, unimplemented))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
