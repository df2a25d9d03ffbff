"""Start-up cost of the CLI: `import harness.cli` (from python -X importtime) and the wall time of
`harness --help`, `harness targets`, `harness profiles`, each the median of --runs fresh interpreters.
Point --checkout at another clone (e.g. an older commit in a git worktree) to compare side by side.

Usage: python bench/startup.py [--runs 7] [--checkout PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def import_seconds(checkout: Path) -> float:
    """Cumulative import time of harness.cli as python -X importtime reports it (its last line)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import harness.cli"], capture_output=True,
                          text=True, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)}, check=True)
    line = next(line for line in reversed(proc.stderr.splitlines()) if line.rstrip().endswith("| harness.cli"))
    return int(line.split("|")[1]) / 1e6


def command_seconds(checkout: Path, *argv: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, cwd=checkout,
                   env={**os.environ, "PYTHONPATH": str(checkout)}, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--checkout", type=Path, default=ROOT)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, cwd=checkout,
                   env={**os.environ, "PYTHONPATH": str(checkout)}, check=True)  # bytecode compiled once
    rows = [("import harness.cli (-X importtime)", lambda: import_seconds(checkout))]
    rows += [(f"harness {' '.join(argv)} (wall)", lambda argv=argv: command_seconds(checkout, *argv))
             for argv in (("--help",), ("targets",), ("profiles",))]
    print(f"{checkout}: median of {args.runs} fresh interpreters")
    for label, measure in rows:
        values = sorted(measure() for _ in range(args.runs))
        print(f"  {label:40s} {statistics.median(values):6.3f} s  (min {values[0]:.3f}, max {values[-1]:.3f})")


if __name__ == "__main__":
    main()
