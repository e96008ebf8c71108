"""Loss gap of Stage II adapters by the kind of reference they are fed (docs/reproduction/discussion.md).

    python scripts/reference_kinds.py --data data/world128 --adapter stage2 --adapter stage2-paired \\
        --adapter runs/stage2-standard/model [--standardizer runs/stage1-p5/model] [--characters 48] [--seed 0]

For each held-out character, one reference of each kind: its first image as rendered (`real`),
that image standardized by the bundled Stage I (`stage1`) or by each `--standardizer` given
(`stage1 FOLDER`), and the world's true standard render (`true standard`). Each adapter (a bundled name or a folder) is scored with `adapter_loss_gap`
on every kind, with 95% bootstrap intervals over characters, then paired differences between
every two (adapter, kind) rows are printed as percentage points.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from serialgen.data.memory import WorldArrays
from serialgen.evaluation import adapter_loss_gap, bootstrap_ci
from serialgen.evaluation.gap import loss_gap_rows, standardized_rows
from serialgen.models.loading import bundled
from serialgen.pipelines import SerialGenPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory (its validation split is read)")
    parser.add_argument("--adapter", action="append", required=True, help="bundled name or adapter folder (repeat)")
    parser.add_argument("--standardizer", action="append", default=[],
                        help="Stage I folder whose standardizations are a kind of reference (repeat; default: the bundled)")
    parser.add_argument("--characters", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    test = WorldArrays.load(args.data, "validation", keys=("image", "foreground", "standard_image"), limit=args.characters * 16)
    firsts, targets = loss_gap_rows(test, args.characters)  # the report's rows: the same numbers
    kinds = {"real": test.images["image"][firsts]}
    for folder in args.standardizer or [None]:
        standardize = SerialGenPipeline.from_pretrained(standardizer=folder).standardize
        kinds["stage1" + (f" {folder}" if folder else "")] = standardized_rows(standardize, test, firsts, args.seed)
    kinds["true standard"] = test.images["standard_image"][firsts]
    per = {}
    for adapter in args.adapter:
        path = Path(adapter) if Path(adapter).exists() else bundled(adapter)
        personalize = SerialGenPipeline.from_pretrained(adapter=path, one_stage=True).personalize
        for kind, references in kinds.items():
            gaps = np.array(adapter_loss_gap(personalize, test, references, targets, seed=args.seed)["gap_per_target"])
            per[f"{adapter} / {kind}"] = gaps
            ci = bootstrap_ci(gaps * 100, 1000, args.seed)
            print(f"{adapter} / {kind}: loss gap {ci['mean']:.2f}% [{ci['lo']:.2f}, {ci['hi']:.2f}]", flush=True)
    for a, b in itertools.combinations(per, 2):
        ci = bootstrap_ci((per[a] - per[b]) * 100, 1000, args.seed)
        print(f"{a} - {b}: {ci['mean']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]")


if __name__ == "__main__":
    main()
