"""Throughput of `serialgen synth`: pairs per second at 256x384 with 1 and 2 workers, and per
core-hour; with --ray, the same shards as Ray tasks on a local Ray with that many CPUs.

Goal: 20+ pairs/s on 2 cores. Each run writes a fresh dataset to a temporary directory; the time
includes worker (or Ray) start-up, rendering, PNG encoding and tar writing.

    python benchmarks/synth_speed.py [--characters 40] [--poses 8] [--size 256x384] [--ray]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from serialgen.data.shards import SynthSpec, parse_size, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--characters", type=int, default=40)
    parser.add_argument("--poses", type=int, default=8)
    parser.add_argument("--size", default="256x384")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ray", action="store_true", help="Ray tasks on a local Ray with --workers CPUs")
    args = parser.parse_args()
    width, height = parse_size(args.size)
    spec = SynthSpec(args.characters, args.poses, width, height, seed=0, samples_per_shard=32)
    print(f"{args.characters} characters x {args.poses} poses = {args.characters * args.poses} pairs at "
          f"{width}x{height}, {os.cpu_count()} CPUs")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            if args.ray:
                from serialgen.data.shards import synthesize_ray

                counts = synthesize_ray(spec, Path(tmp), num_cpus=workers, show_progress=False)
            else:
                counts = synthesize(spec, Path(tmp), workers=workers, show_progress=False)
            elapsed = time.perf_counter() - start
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*.tar"))
        rate = counts["samples"] / elapsed
        print(f"{'ray cpus' if args.ray else 'workers'}={workers}: {counts['samples']} pairs in {elapsed:.1f} s = "
              f"{rate:.1f} pairs/s, {rate * 3600 / workers:,.0f} pairs per core-hour "
              f"({size / counts['samples'] / 1024:.0f} KiB/pair)")


if __name__ == "__main__":
    main()
