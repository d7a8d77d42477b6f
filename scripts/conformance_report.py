"""Summarise kosoku's Autobahn TestSuite reports for trio_ws into docs/conformance.md.

Reads ``reports/autobahn/server`` and ``reports/autobahn/client`` (written by
``tests/conformance/test_autobahn.py``), and the accepted NON-STRICT reasons from that test's
``NON_STRICT_ACCEPTED`` literal. Writes counts per behaviour and per section for both sides, the
NON-STRICT cases with their reasons, every case that did not pass, and how to regenerate.

Usage: ``.venv/bin/python scripts/conformance_report.py [--reports DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = ROOT / "tests" / "conformance" / "test_autobahn.py"

SIDES = ("server", "client")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
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
    "TRIO_WS_AUTOBAHN_FULL=1 .venv/bin/pytest -m conformance tests/conformance\n"
    ".venv/bin/python scripts/conformance_report.py"
)

Report = dict[str, Any]


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def load_side(outdir: Path) -> tuple[str, dict[str, Report]]:
    """Return the agent name and case id -> per-case report for one side's report folder."""
    index = json.loads((outdir / "index.json").read_text())
    if len(index) != 1:
        raise SystemExit(f"{outdir}/index.json: expected one agent, got {sorted(index)}")
    ((agent, entries),) = index.items()
    reports = {
        case: json.loads((outdir / entry["reportfile"]).read_text())
        for case, entry in entries.items()
    }
    return agent, dict(sorted(reports.items(), key=lambda item: case_key(item[0])))


def accepted_reasons(test_file: Path) -> dict[str, dict[str, str]]:
    """The test module's NON_STRICT_ACCEPTED (it only defines things when imported)."""
    spec = importlib.util.spec_from_file_location("_trio_ws_autobahn_test", test_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {test_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reasons: dict[str, dict[str, str]] = module.NON_STRICT_ACCEPTED
    return reasons


def wall_time(reports: dict[str, Report]) -> float:
    """Seconds from the first case's start to the last case's end."""
    spans = [
        (
            datetime.datetime.fromisoformat(r["started"].replace("Z", "+00:00")).timestamp(),
            r["duration"] / 1000,
        )
        for r in reports.values()
    ]
    start = min(begin for begin, _ in spans)
    return max(begin + length for begin, length in spans) - start


def passes(report: Report) -> bool:
    return report["behavior"] in PASSING and report["behaviorClose"] in PASSING_CLOSE


def escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def summary(description: str, limit: int = 160) -> str:
    """The case description's first paragraph, without markup, cut after a sentence if long."""
    text = escape(re.sub(r"</?[a-z]+>", "", description.split("<br>")[0]))
    if len(text) > limit and ". " in text[:limit]:
        text = text[: text.index(". ") + 1]
    return text


def render_non_strict(
    add: Callable[[str], None],
    sides: dict[str, tuple[str, dict[str, Report]]],
    reasons: dict[str, dict[str, str]],
) -> None:
    """One row per case that is NON-STRICT on either side, or accepted as such; reasons below."""
    cases: dict[str, Report] = {}
    for side, (_, reports) in sides.items():
        for case, report in reports.items():
            if report["behavior"] == "NON-STRICT" or case in reasons.get(side, {}):
                cases.setdefault(case, report)
    if not cases:
        add("None.")
        add("")
        return
    keys: dict[str, str] = {}  # reason text -> its letter
    add("| case | what it tests | " + " | ".join(sides) + " | reason |")
    add("|---|---|" + "---|" * len(sides) + "---|")
    for case in sorted(cases, key=case_key):
        cells = [case, summary(cases[case]["description"])]
        letters: list[str] = []
        for side, (_, reports) in sides.items():
            behavior = reports[case]["behavior"] if case in reports else "not run"
            reason = reasons.get(side, {}).get(case)
            if reason is None:
                cells.append(
                    behavior + (" (no reason: the test fails)" if behavior == "NON-STRICT" else "")
                )
                continue
            letter = keys.setdefault(reason, chr(ord("A") + len(keys)))
            if letter not in letters:
                letters.append(letter)
            cells.append(behavior)
        cells.append(", ".join(letters))
        add("| " + " | ".join(cells) + " |")
    add("")
    add(
        "A case listed with a reason may also come out OK: those that depend on timing change "
        "from run to run."
    )
    add("")
    for reason, letter in keys.items():
        add(f"- **{letter}**: {escape(reason)}")
    add("")


def render(
    sides: dict[str, tuple[str, dict[str, Report]]], reasons: dict[str, dict[str, str]]
) -> str:
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
        "behaviour the RFC leaves open; **UNIMPLEMENTED** means a feature the case needs is "
        "missing; **FAILED** breaks a MUST. The closing handshake gets its own verdict, counted "
        "under *close not OK*."
    )
    add("")
    add("*Generated by `scripts/conformance_report.py`; do not edit by hand.*")
    add("")

    add("## Summary")
    add("")
    add("| | " + " | ".join(SIDES) + " |")
    add("|---|" + "---:|" * len(sides))
    add("| agent | " + " | ".join(f"`{sides[s][0]}`" for s in sides) + " |")
    add("| cases run | " + " | ".join(str(len(sides[s][1])) for s in sides) + " |")
    for behavior in BEHAVIORS:
        counts = [Counter(r["behavior"] for r in sides[s][1].values())[behavior] for s in sides]
        add(f"| {behavior} | " + " | ".join(map(str, counts)) + " |")
    close_bad = [
        sum(r["behaviorClose"] not in PASSING_CLOSE for r in sides[s][1].values()) for s in sides
    ]
    add("| close not OK | " + " | ".join(map(str, close_bad)) + " |")
    add("| wall time | " + " | ".join(f"{wall_time(sides[s][1]):.0f} s" for s in sides) + " |")
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
            "(`TRIO_WS_AUTOBAHN_FULL=1` runs the whole suite)."
        )
        add("")

    add("## Per section")
    add("")
    short = {"OK": "OK", "NON-STRICT": "NS", "INFORMATIONAL": "INFO", "UNIMPLEMENTED": "UNIMPL"}
    short["FAILED"] = "FAILED"
    header = ["section", "cases"] + [f"{side} {short[b]}" for side in sides for b in BEHAVIORS]
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
            counts = Counter(r["behavior"] for r in per_side[side])
            cells += [str(counts[b]) if per_side[side] else "-" for b in BEHAVIORS]
        add("| " + " | ".join(cells) + " |")
    add("")

    add("## NON-STRICT cases")
    add("")
    render_non_strict(add, sides, reasons)

    add("## Cases that do not pass")
    add("")
    any_bad = False
    for side, (_, reports) in sides.items():
        rows = [r for r in reports.values() if not passes(r)]
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
        add("None: every case is OK, NON-STRICT (with a reason above) or INFORMATIONAL.")
        add("")

    add("## Regenerate")
    add("")
    add("```sh")
    add(REGENERATE)
    add("```")
    add("")
    add(
        "The default `pytest -m conformance` run leaves out sections 9, 12 and 13 "
        "(performance and compression); `TRIO_WS_AUTOBAHN_FULL=1` runs all 517 cases. "
        "Reports land in `reports/autobahn/{server,client}/` (`index.html` for browsing, one "
        "JSON file per case with the wire log)."
    )
    add("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports" / "autobahn")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "conformance.md")
    parser.add_argument("--test-file", type=Path, default=TEST_FILE)
    args = parser.parse_args(argv)

    sides: dict[str, tuple[str, dict[str, Report]]] = {}
    for side in SIDES:
        outdir = args.reports / side
        if not (outdir / "index.json").exists():
            raise SystemExit(f"no reports in {outdir}; run the conformance tests first")
        sides[side] = load_side(outdir)
    args.out.write_text(render(sides, accepted_reasons(args.test_file)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
