"""Refit a saved standardizer's StandardPoseEstimator, keeping every other weight.

    python scripts/refit_standard_pose.py --weights runs/stage1-p5/model --data data/world128 \\
        --steps 20000 --out runs/stage1-p5-pose20k [--hidden 256] [--seed 0]

The estimator (models/standard_pose.py) predicts each reference's standard keypoints, the target
pose Stage I draws at; it is fitted apart from the denoiser (`train.stage1.fit_standard_pose`) on
the training split's (keypoints, standard keypoints) pairs, which is what `serialgen train stage1`
does before its first step (`standard_pose_steps`). The denoiser trained on true standard poses,
so a better-fitted estimator is a drop-in change. Written atomically in the source's dtype; the
fit's loss curve goes to OUT/standard_pose.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from serialgen.atomic import write_json
from serialgen.data.memory import WorldArrays
from serialgen.models.standard_pose import StandardPoseEstimator
from serialgen.models.standardizer import Standardizer
from serialgen.train.stage1 import fit_standard_pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a saved standardizer folder with a StandardPoseEstimator")
    parser.add_argument("--data", required=True, help="a world folder (`serialgen synth`); its training split is read")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=256, help="the MLP's width (default 256, as trained)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the new standardizer folder")
    args = parser.parse_args()
    if args.steps < 1 or args.hidden < 1:
        raise SystemExit("--steps and --hidden must be at least 1")
    if Path(args.out).resolve() == Path(args.weights).resolve():
        raise SystemExit("--out must differ from --weights: the source is kept")

    model = Standardizer.from_pretrained(args.weights)
    if model.standard_pose is None:
        raise SystemExit(f"{args.weights} has no StandardPoseEstimator (its config's standard_pose is false)")
    if args.hidden != model.standard_pose.net[0].out_features:
        raise SystemExit(f"--hidden {args.hidden} differs from the saved estimator's width "
                         f"{model.standard_pose.net[0].out_features}: the saved layout has no place for it")
    dtype = model.dtype
    train = WorldArrays.load(args.data, "train", keys=(), progress=False)  # the keypoints, no images
    keypoints = np.array([m["keypoints"] for m in train.meta], np.float32)
    standard = np.array([m["standard_keypoints"] for m in train.meta], np.float32)
    estimator = StandardPoseEstimator(model.standard_pose.template.float().numpy(), args.hidden)
    losses = fit_standard_pose(estimator, keypoints, standard, model.config.width, model.config.height,
                               steps=args.steps, seed=args.seed)
    with torch.no_grad():
        model.standard_pose.load_state_dict({k: v.to(dtype) for k, v in estimator.state_dict().items()})
    out = model.save_pretrained(args.out)
    write_json(out / "standard_pose.json", {"source": str(args.weights), "data": str(args.data), "steps": args.steps,
                                            "seed": args.seed, "samples": len(keypoints), "loss_every_100": losses})
    print(f"wrote {out}: estimator refitted on {len(keypoints)} training pairs, {args.steps} steps, "
          f"final loss {losses[-1]:.2e}")
    if (Path(args.weights) / "training.json").exists():  # the run's record travels with the weights
        record = json.loads((Path(args.weights) / "training.json").read_text())
        write_json(out / "training.json", record | {"standard_pose_refit": {"steps": args.steps, "seed": args.seed}})


if __name__ == "__main__":
    main()
