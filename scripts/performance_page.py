"""Rewrite the tables in docs/performance.md from benchmarks/RESULTS.md.

Usage: .venv/bin/python scripts/performance_page.py

The page keeps its prose; everything between the two marker comments is
replaced by the "Latest run" section of RESULTS.md, so the page and the
committed results never disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- results: begin (scripts/performance_page.py) -->"
END = "<!-- results: end -->"


def main() -> int:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    start = results.index("## Latest run")
    section = results[start:].split("\n", 1)[1].strip()
    # The "### Server side" and "### Client side" headings sit under the
    # page's "## Latest figures" as they sat under "## Latest run".
    page_path = ROOT / "docs" / "performance.md"
    page = page_path.read_text()
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        print(f"{page_path}: marker {BEGIN!r} not found", file=sys.stderr)
        return 1
    page_path.write_text(f"{head}{BEGIN}\n\n{section}\n\n{END}{tail}")
    print(f"wrote {page_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
