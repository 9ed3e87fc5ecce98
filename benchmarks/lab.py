"""The multi-task lab's committed results: read the finished runs of a lab profile build (`make book PROFILE=lab`,
runs/lab/ and runs/lab/lab/), check that they are every run the lab profile lists today, with today's configs, test
split and training subsets, and write them to ladnn/resources/lab_quick_*.csv* for the quick book's chapter
"Multi-task lab" (ladnn.report.lab). Nothing is written when a run is missing or differs.

    make book PROFILE=lab              # trains the lab's runs (see the README for the time it takes)
    python benchmarks/lab.py           # then: export them
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ladnn.report import lab

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "lab"), help="the lab profile's runs folder")
    ap.add_argument("--out", default=str(ROOT / "ladnn" / "resources"), help="where the files go")
    a = ap.parse_args(argv)
    tables = lab.collect(a.runs)
    problems = lab.check_committed(tables, *lab.committed_must_match(ROOT))
    if problems:
        print("not written; the runs do not match the lab profile today:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    for f in lab.save(tables, a.out):
        print(f"wrote {f} ({f.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
