"""Where the standardizer's sampler starts, compared on held-out characters (a validation world).

    python scripts/standardize_start.py --data data/val128 --samples 64 \\
        --start canvas --start silhouette:1.0 --start silhouette:0.8 --start silhouette:0.6 [--leak]

Each start (`canvas`, `noise`, or `silhouette:STRENGTH`) runs the bundled standardizer (or
--weights) on the same references and seed; printed: PSNR, SSIM, figure-box PSNR and SSIM, the
judge's appearance read-back, body height within 5% of the truth, and with --leak the backdrop
leak, each with a 95% bootstrap interval over characters, then each start's paired figure-PSNR
and appearance differences against the first. Saves a sheet (references, each start, the template
silhouette baseline, the truth).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from serialgen.atomic import save_image, write_json
from serialgen.data.heldout import held_out_references
from serialgen.data.memory import WorldArrays
from serialgen.evaluation import Judge, background_leak, bootstrap_ci, evaluate_stage1
from serialgen.evaluation.commands import table
from serialgen.pipelines.standardize import StandardizePipeline
from serialgen.sheet import grid


def parse_start(text: str) -> tuple[str, dict]:
    name, _, strength = text.partition(":")
    return text, ({"start": name, "strength": float(strength)} if strength else {"start": name})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory (its validation split is read)")
    parser.add_argument("--start", action="append", required=True, help="canvas | noise | silhouette:STRENGTH (repeat)")
    parser.add_argument("--weights", default=None, help="standardizer folder (default: bundled)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leak", action="store_true", help="also the backdrop leak (7x the time)")
    parser.add_argument("--out", default="runs/standardize_start", help="folder for the sheet and the scores")
    args = parser.parse_args()

    test = WorldArrays.load(args.data, "validation", keys=("image", "foreground"), per_character=("standard_image",),
                            limit=args.samples * 16)
    judge = Judge.from_pretrained()
    pipe = StandardizePipeline.from_pretrained(args.weights)
    refs, truth = held_out_references(test, min(args.samples, 8))
    rows, columns, per = [], [[r.image for r in refs]], {}
    for text in args.start:
        name, options = parse_start(text)
        scores = evaluate_stage1(pipe, test, args.samples, args.steps, args.guidance, args.seed, judge=judge, **options)
        columns.append(scores.pop("images")[:len(refs)])
        silhouettes = scores.pop("silhouettes")
        if args.leak:
            scores["leak"] = background_leak(pipe, judge, test, args.samples, args.steps, args.guidance, args.seed,
                                             **options)
        per[name] = {k: np.array(scores["per_character"][k]) for k in ("figure_psnr", "appearance")}
        rows.append((name, scores))
        print(table(rows[-1:], [("PSNR", "psnr_ci"), ("SSIM", "ssim_ci"), ("fig PSNR", "figure_psnr_ci"),
                                ("fig SSIM", "figure_ssim_ci"), ("appearance", "appearance_ci"),
                                ("height 5%", "height.within_5pct_ci"), ("leak", "leak.leak_ci")]), flush=True)
    first = args.start[0]
    for name in args.start[1:]:
        for key in ("figure_psnr", "appearance"):
            d = bootstrap_ci(per[name][key] - per[first][key])
            print(f"{name} - {first} {key}: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_image(out / "sheet.png", grid(columns + [silhouettes[:len(refs)], list(truth)]))
    write_json(out / "scores.json", dict(rows), indent=1)
    print(f"sheet: {out / 'sheet.png'}")


if __name__ == "__main__":
    main()
