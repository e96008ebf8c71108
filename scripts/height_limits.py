"""What limits Stage I's body height: the standard-pose estimator, or the drawing at its pose.

    python scripts/height_limits.py --data data/world128 [--split validation] [--samples 64]
        [--weights runs/stage1-p5/model] [--seed 0]

On held-out characters (one reference each, as `serialgen eval stage1` picks them):
- the keypoint span (highest head keypoint to lowest ankle) of the standard pose the
  standardizer's StandardPoseEstimator predicts from the reference's keypoints, and of the config's
  template A-pose, each against the span of the world's true standard keypoints: the share within
  5%, the ceiling of the height score for a model that draws exactly at its target pose;
- the standardized image's figure height (`evaluation.stage1.figure_height`, the score's measure)
  against the true standard render's: the share within 5% (the score) and where the difference
  lies, at the figure's top row or its bottom row.
"""

from __future__ import annotations

import argparse

import numpy as np

from serialgen.data.heldout import held_out_picks
from serialgen.data.memory import WorldArrays
from serialgen.evaluation import bootstrap_ci
from serialgen.evaluation.stage1 import figure_height
from serialgen.pipelines.standardize import StandardizePipeline
from serialgen.preprocess import Reference

HEAD, ANKLES = [0, 14, 15, 16, 17], [10, 13]  # nose, eyes, ears; ankles (OpenPose order)


def span(keypoints: np.ndarray) -> np.ndarray:
    """(N, 18, 3) keypoints -> (N,) rows from the highest head keypoint to the lowest ankle."""
    return keypoints[:, ANKLES, 1].max(1) - keypoints[:, HEAD, 1].min(1)


def figure_rows(image: np.ndarray, ink: int = 40, min_pixels: int = 3, max_gap: int = 3) -> tuple[int, int]:
    """The first and last row of the figure as `figure_height` measures it."""
    rows = np.flatnonzero(((255 - np.asarray(image).astype(np.int16)).max(-1) > ink).sum(-1) >= min_pixels)
    if len(rows) == 0:
        return 0, -1
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > max_gap + 1) + 1)
    longest = max(runs, key=len)
    return int(longest[0]), int(longest[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a world folder (`serialgen synth`)")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--samples", type=int, default=64, help="held-out characters (default 64)")
    parser.add_argument("--weights", help="standardizer folder (default: the bundled one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    test = WorldArrays.load(args.data, args.split, keys=("image", "foreground"), per_character=("standard_image",),
                            limit=args.samples * 16, progress=False)
    picks = held_out_picks(test, args.samples)
    pipe = StandardizePipeline.from_pretrained(args.weights)
    pipe.progress = False
    w, h = pipe.size
    refs = [Reference.from_world(test.images["image"][i], test.images["foreground"][i], test.meta[i]["keypoints"])
            for i in picks]
    truth_kp = np.array([test.meta[i]["standard_keypoints"] for i in picks], np.float32)
    template = np.stack([np.array(pipe.standardizer.config.template_keypoints) * [w, h, 1]] * len(picks))

    def report(name, values):
        ci = bootstrap_ci(np.asarray(values, np.float64), seed=args.seed)
        print(f"{name}: {ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]")

    print(f"{len(picks)} {args.split} characters; 95% bootstrap intervals over characters")
    for name, keypoints in (("estimator", pipe.target_keypoints(refs)), ("template A-pose", template)):
        report(f"{name}: keypoint span within 5% of the true standard pose's",
               np.abs(span(keypoints) / span(truth_kp) - 1) < 0.05)
    truth = [test.characters["standard_image"][test.character_row[i]] for i in picks]
    drawn = [np.asarray(im) for im in pipe(refs, seed=args.seed).images]
    ratio = np.array([figure_height(d) / max(figure_height(t), 1) for d, t in zip(drawn, truth, strict=True)])
    report("standardized: figure height within 5% of the true render's (the score)", np.abs(ratio - 1) < 0.05)
    report("standardized / true figure height", ratio)
    rows = np.array([figure_rows(d) for d in drawn]) - np.array([figure_rows(t) for t in truth])
    report("figure's top row, standardized - true (rows; + = lower)", rows[:, 0])
    report("figure's bottom row, standardized - true (rows; + = lower)", rows[:, 1])


if __name__ == "__main__":
    main()
