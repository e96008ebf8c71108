"""`serialgen demo` wall time, as a user runs it: a fresh process, the bundled models loaded,
the bundled reference detected and standardized once, the 4 bundled prompts drawn (DDIM 20
steps). Target: under a minute on 2 CPU cores. Repeated runs give a spread.

    python benchmarks/demo_speed.py [--repeats 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    command = [str(Path(sys.executable).parent / "serialgen"), "demo", "--steps", str(args.steps)]
    times = []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            done = subprocess.run(command + ["--out", out], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                sys.exit(f"serialgen demo failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
        print(f"run {k + 1}: {times[-1]:.1f} s")
    print(f"serialgen demo, 4 prompts, {args.steps} steps: median {statistics.median(times):.1f} s "
          f"(min {min(times):.1f}, max {max(times):.1f}) over {len(times)} runs; target < 60 s")


if __name__ == "__main__":
    main()
